"""Just enough of the SFTS native protocol (docs/PROTOCOL.md, section 1) to measure the
server itself: a session handshake (idle connections) and the time to the first data byte.

Written from the specification, independently of the Rust crates.
"""

import socket
import struct
import time

MAGIC = b"SFTS"
HELLO, WELCOME, GET, FILE_HEADER, DATA, TRAILER, ERROR = 0x01, 0x02, 0x10, 0x11, 0x12, 0x13, 0x7F
CAP_GET = 1 << 0
DIGEST_SHA256 = 1 << 1
TO_END = 0xFFFF_FFFF_FFFF_FFFF


def _str(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def frame(tag, payload):
    return struct.pack(">IB", len(payload) + 1, tag) + payload


def hello(agent="sfts-bench"):
    return MAGIC + frame(HELLO, struct.pack(">HQ", 1, CAP_GET) + _str(agent))


def get(path, chunk_size=1 << 20, digests=DIGEST_SHA256):
    body = _str(path) + struct.pack(">QQIB", 0, TO_END, chunk_size, digests) + b"\x00"
    return frame(GET, body)


def _exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("the server closed the connection")
        buf += part
    return bytes(buf)


def read_frame_header(sock):
    length, tag = struct.unpack(">IB", _exact(sock, 5))
    return tag, length - 1


def _expect(sock, want):
    tag, n = read_frame_header(sock)
    payload = _exact(sock, n)
    if tag == ERROR:
        code = struct.unpack(">H", payload[:2])[0]
        raise ConnectionError(f"server error {code}: {payload[4:].decode(errors='replace')}")
    if tag != want:
        raise ConnectionError(f"expected frame 0x{want:02x}, got 0x{tag:02x}")
    return payload


def session(addr, timeout=30.0):
    """A connected socket past the handshake (Hello sent, Welcome received)."""
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(hello())
    _expect(sock, WELCOME)
    return sock


def time_to_first_byte(addr, path, timeout=30.0):
    """Seconds from the start of the TCP connect to the first data byte of `path`.

    The request asks for the file's SHA-256 in the trailer, as `sfts-client get` does: a
    server that hashed the whole file before its first byte would show it here.
    Returns (total seconds, seconds from the Get to the first byte).
    """
    t0 = time.perf_counter()
    sock = session(addr, timeout)
    try:
        t1 = time.perf_counter()
        sock.sendall(get(path))
        _expect(sock, FILE_HEADER)
        while True:
            tag, n = read_frame_header(sock)
            if tag == DATA and n == 0:
                continue  # keep-alive
            if tag != DATA:
                raise ConnectionError(f"expected Data, got frame 0x{tag:02x}")
            _exact(sock, 1)
            t2 = time.perf_counter()
            return t2 - t0, t2 - t1
    finally:
        sock.close()


def http_time_to_first_byte(addr, url_path, timeout=30.0):
    """The same for a plain HTTP/1.1 server: connect to the first byte of the body."""
    host, port = addr.rsplit(":", 1)
    t0 = time.perf_counter()
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t1 = time.perf_counter()
        request = f"GET {url_path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            part = sock.recv(65536)
            if not part:
                raise ConnectionError("HTTP server closed before the body")
            buf += part
        head, body = buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status:
            raise ConnectionError(f"HTTP status {status!r}")
        if not body:
            _exact(sock, 1)
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1
    finally:
        sock.close()
