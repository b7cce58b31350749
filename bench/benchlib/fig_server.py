"""Figures 5 (idle connections: memory and threads) and 6 (first byte, resume)."""

import json
import os
import signal
import socket
import subprocess
import time

from . import wire
from .env import GIB, MIB, cached_fraction, evict
from .proc import ToolFailure, kill_group, run, spawn
from .servers import Nginx, SftsServer
from .tools import Tool, cmp_files, expect_ok, rounds, sfts

# -- figure 5: idle connections ---------------------------------------------------------------


def idle_sfts(ctx, n, i):
    """Fresh server; n sessions past the handshake, idle; (RSS MiB, threads, base RSS MiB)."""
    tag = f"idle-{i}-{time.monotonic_ns()}"
    server = SftsServer.start(ctx.services, ctx.server_bin, ctx.ws.m("data"),
                              ctx.ws.d("state", tag), ctx.ws.m("logs", tag),
                              ctx.ws.m("logs", f"{tag}.out"))
    socks = []
    try:
        time.sleep(0.2)
        base, _ = server.memory()
        for _ in range(n):
            socks.append(wire.session(server.addr))
        time.sleep(0.5)
        rss, threads = server.memory()
        return rss / MIB, threads, base / MIB
    except OSError as e:
        raise ToolFailure(f"SFTS idle sessions: {len(socks)} opened, then {e}") from e
    finally:
        for s in socks:
            s.close()
        server.stop()


def idle_nginx(ctx, n, i):
    server = Nginx.start(ctx.services, ctx.ws.m("cfg"), ctx.ws.m("data"),
                         ctx.ws.m("logs", f"nginx-idle-{i}.out"))
    socks = []
    try:
        time.sleep(0.2)
        base, _ = server.memory()
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", server.port)))
        # nginx allocates a connection's buffers when its first bytes arrive: send half a
        # request, as an idle client in the middle of its headers would.
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\n")
        time.sleep(0.5)
        rss, threads = server.memory()
        return rss / MIB, threads, base / MIB
    finally:
        for s in socks:
            s.close()
        server.stop()


class Idle(Tool):
    def __init__(self, ctx, row, threads_row, fn, n):
        super().__init__(ctx, row)
        self.threads_row, self.fn, self.n = threads_row, fn, n

    def once(self, i):
        rss, threads, base = self.fn(self.ctx, self.n, i)
        self.threads_row.samples.append(threads)
        self.row.extra.setdefault("idle_server_rss_mib", []).append(base)
        return rss


def figure5(ctx):
    n = ctx.sizes.idle
    fig = ctx.report.figure(
        "5",
        f"{n:,} concurrent idle connections: server memory and threads",
        "Resident memory (VmRSS) and threads from /proc/PID/status of a freshly started "
        "server (nginx: master + workers) holding the connections; SFTS sessions are past "
        "the Hello/Welcome handshake, nginx connections have sent a partial request line.",
    )
    rss_s = fig.row("sfts-rss", f"SFTS RSS with {n:,} idle sessions", "MiB", "lower", sfts=True,
                    compare=["nginx-rss"])
    thr_s = fig.row("sfts-threads", "SFTS threads", "threads", "lower", sfts=True)
    rss_n = fig.row("nginx-rss", f"nginx RSS with {n:,} idle connections", "MiB", "lower")
    thr_n = fig.row("nginx-threads", "nginx threads", "threads", "lower")
    tools = [Idle(ctx, rss_s, thr_s, idle_sfts, n), Idle(ctx, rss_n, thr_n, idle_nginx, n)]
    rounds(ctx, tools)
    for rss_row, thr_row in ((rss_s, thr_s), (rss_n, thr_n)):
        if rss_row.status != "ok":
            thr_row.status, thr_row.note = rss_row.status, rss_row.note
        base = rss_row.extra.get("idle_server_rss_mib")
        if base:
            rss_row.note = f"{min(base):.1f} MiB before the connections"
    return fig


# -- figure 6: first byte of an uncached file; resume ----------------------------------------


def make_uncached(ctx):
    """A new modification time (a version no digest cache holds) and no page-cache pages."""
    path = ctx.huge_path
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    evict(path)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1")
    except OSError:
        pass  # fadvise is enough when it works; fincore tells below
    frac = cached_fraction(path)
    return frac


class FirstByte(Tool):
    """Time to the first data byte of the uncached file (ms)."""

    def __init__(self, ctx, row, how):
        super().__init__(ctx, row)
        self.how = how

    def once(self, i):
        frac = make_uncached(self.ctx)
        if frac is not None:
            self.row.extra.setdefault("cached_fraction_before", []).append(frac)
        name = os.path.basename(self.ctx.huge_path)
        if self.how == "wire":
            total, _ = wire.time_to_first_byte(self.ctx.disk_sfts.addr, name)
        elif self.how == "http":
            total, _ = wire.http_time_to_first_byte(self.ctx.nginx.addr, f"/disk/{name}")
        else:
            if self.how == "sfts-cli":
                argv = sfts(self.ctx, "get", self.ctx.disk_sfts.addr, name, "-o", "-")
            else:
                argv = ["curl", "-sS", f"http://{self.ctx.nginx.addr}/disk/{name}"]
            total = first_byte_of_command(argv, self.ctx.ws.run_log("ttfb"))
        return total * 1000


def first_byte_of_command(argv, err_path):
    """Seconds from starting `argv` until its standard output yields a byte; then kill it."""
    err = open(err_path, "wb")
    t0 = time.perf_counter()
    p = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=err,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    err.close()
    try:
        b = p.stdout.read(1)
        t = time.perf_counter() - t0
    finally:
        kill_group(p.pid)
        p.stdout.close()
        p.wait()
    if not b:
        with open(err_path, errors="replace") as f:
            raise ToolFailure(f"`{' '.join(map(str, argv))}` wrote nothing: {f.read()[-300:]}")
    return t


class ResumeTool(Tool):
    """A full download of the (page-cached) big file, or one stopped at 90 % and rerun.

    `stop` is the signal that stops it: SIGKILL (a crash: the SFTS client reads the partial
    back on resume, unless the kill fell between two writes and the seal its journal got
    with the last chunk still holds) or SIGINT (Ctrl-C: the SFTS client seals the partial and
    the resume trusts it while it is unchanged)."""

    def __init__(self, ctx, row, kind, resume, stop=signal.SIGKILL):
        super().__init__(ctx, row)
        self.kind, self.resume, self.stop = kind, resume, stop
        self.name = os.path.basename(ctx.huge_path)
        self.checked = False

    def argv(self, out, again=False):
        if self.kind == "sfts":
            return sfts(self.ctx, "get", self.ctx.disk_sfts.addr, self.name, "-o", out, "--json")
        cmd = ["curl", "-sS", "-o", out, f"http://{self.ctx.nginx.addr}/disk/{self.name}"]
        return cmd[:1] + ["-C", "-"] + cmd[1:] if again else cmd

    def kill_at(self, out, fraction):
        """Start a download and stop it with `self.stop` once `fraction` of the file is on
        disk."""
        watch = out + ".sfts-part" if self.kind == "sfts" else out
        s = spawn(self.argv(out), self.ctx.ws.run_log("resume-first"))
        target = fraction * self.ctx.sizes.huge
        deadline = time.monotonic() + self.ctx.timeout
        got = 0
        while time.monotonic() < deadline and s.proc.poll() is None:
            try:
                got = os.path.getsize(watch)
            except OSError:
                got = 0
            if got >= target:
                kill_group(s.proc.pid, self.stop)
                break
            time.sleep(0.0005)
        r = s.wait(5)
        # Ctrl-C: sfts-client exits 130 ("interrupted") after syncing the partial.
        expected = -signal.SIGKILL if self.stop == signal.SIGKILL else 130
        if r.returncode != expected:
            raise ToolFailure(f"{self.row.label}: the first attempt was not stopped at "
                              f"{fraction:.0%} ({got} bytes; {r.describe()})")
        return got / self.ctx.sizes.huge

    def prepare(self):
        # Untimed: one whole download compared byte for byte; it also puts this version's
        # digests in the SFTS server's cache, which a resume needs.
        if not self.resume:
            self.once(-1)

    def once(self, i):
        out = self.ctx.ws.fresh(self.ctx.ws.m("out"), f"{self.kind}-resume")
        if self.resume:
            frac = self.kill_at(out, 0.9)
            self.row.extra.setdefault("killed_at_fraction", []).append(frac)
            self.ctx.ws.warm()
        r = run(self.argv(out, again=self.resume), self.ctx.ws.run_log("resume"),
                self.ctx.timeout)
        if self.kind == "sfts":
            expect_ok(r, self.row.label)
            try:
                summary = json.loads(r.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise ToolFailure(f"{self.row.label}: no JSON summary: {r.stdout[-300:]!r}")
            got = summary.get("digests", {}).get("sha256")
            if got != self.ctx.digests[("huge", "sha256")]:
                raise ToolFailure(f"{self.row.label}: digest {got} is not the file's")
            self.row.extra.setdefault("bytes_reused", []).append(summary.get("bytes_reused"))
            self.row.extra.setdefault("sealed", []).append(
                bool(summary.get("bytes_reused_sealed")))
        elif r.returncode != 0:
            raise ToolFailure(f"{self.row.label}: {r.describe()}")
        if os.path.getsize(out) != self.ctx.sizes.huge:
            raise ToolFailure(f"{self.row.label}: {out} has the wrong size")
        if not self.checked:
            cmp_files(out, self.ctx.huge_path, self.row.label)
            self.checked = True
        for p in (out, out + ".sfts-part", out + ".sfts-journal"):
            self.ctx.ws.discard(p)
        return r.seconds


def figure6(ctx):
    size = ctx.sizes.huge
    gib = f"{size / GIB:.2f} GiB" if size >= GIB else f"{size // MIB} MiB"
    fig = ctx.report.figure(
        "6",
        f"time to first byte of an uncached {gib} file (on disk), and resume after 90 %",
        "First byte, ms: before each run the file gets a new mtime (no digest cache holds "
        "that version) and is dropped from the page cache (posix_fadvise DONTNEED). "
        "'protocol' rows connect with a small Python client (docs/PROTOCOL.md, asking for "
        "SHA-256 like sfts-client) and stop at the first data byte; 'command' rows start "
        "the client process and read its standard output's first byte. Resume, s: the "
        "download (into a tmpfs file, the source in page cache) stopped at 90 % and run "
        "again, against a full download in the same run: by SIGINT (Ctrl-C; SFTS seals the "
        "partial and its resume does not read it back while it is unchanged) or by SIGKILL "
        "(a crash; SFTS reads the 90 % back and checks it while the rest downloads, unless "
        "the kill fell between two writes and the seal the journal got with the last chunk "
        "still holds: the note says how many resumes found it so).",
    )
    tools = [
        FirstByte(ctx, fig.row("sfts-ttfb", "SFTS first byte (protocol)", "ms", "lower",
                               sfts=True, compare=["nginx-ttfb"]), "wire"),
        FirstByte(ctx, fig.row("nginx-ttfb", "nginx first body byte (protocol)", "ms",
                               "lower"), "http"),
        FirstByte(ctx, fig.row("sfts-cli-ttfb", "SFTS first byte (command, get -o -)", "ms",
                               "lower", sfts=True, compare=["curl-cli-ttfb"]), "sfts-cli"),
        FirstByte(ctx, fig.row("curl-cli-ttfb", "curl first byte (command)", "ms", "lower"),
                  "curl-cli"),
    ]
    rounds(ctx, tools)
    # The resume figure is about the protocol, not the disk: read the file into the cache.
    with open(ctx.huge_path, "rb") as f:
        while f.read(16 * MIB):
            pass
    tools = [
        ResumeTool(ctx, fig.row("sfts-full", "SFTS full get → tmpfs file", "s", "lower"),
                   "sfts", False),
        ResumeTool(ctx, fig.row("sfts-resume-int", "SFTS resume after Ctrl-C at 90 %", "s",
                                "lower", sfts=True, compare=["sfts-full", "curl-resume"]),
                   "sfts", True, signal.SIGINT),
        ResumeTool(ctx, fig.row("sfts-resume", "SFTS resume after kill -9 at 90 %", "s",
                                "lower", sfts=True, compare=["sfts-full", "curl-resume"]),
                   "sfts", True),
        ResumeTool(ctx, fig.row("curl-full", "curl full (nginx, no verification)", "s",
                                "lower"), "curl", False),
        ResumeTool(ctx, fig.row("curl-resume", "curl -C - after 90 %", "s", "lower",
                                compare=["curl-full"]), "curl", True),
    ]
    rounds(ctx, tools)
    for t in tools:
        fr = t.row.extra.get("killed_at_fraction")
        if fr and t.row.status == "ok":
            how = "interrupted" if t.stop == signal.SIGINT else "killed"
            t.row.note = f"{how} at {min(fr):.0%}–{max(fr):.0%}"
            sealed = t.row.extra.get("sealed", [])
            if t.stop == signal.SIGKILL and sealed:
                t.row.note += f"; {sum(sealed)} of {len(sealed)} resumed sealed"
    ctx.ws.purge()
    return fig
