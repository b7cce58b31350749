"""Figures 1 (one big file to /dev/null), 1d (to a disk file), 2 (the same file uploaded)
and 7 (CPU per GiB, from figure 1's runs)."""

import os

from .env import GIB, file_digest
from .proc import NotImplementedInSfts, ToolFailure, free_port, run, spawn, wait_listening
from .tools import (
    Tool,
    check_digest,
    cmp_files,
    expect_ok,
    rounds,
    server_cpu_delta,
    sfts,
)

SOCAT_BUF = str(1 << 20)


def gbps(size, seconds):
    return size / seconds / 1e9


class ServedTool(Tool):
    """A transfer from one of the servers; records the server's CPU time of each run."""

    server = None

    def measured(self, fn):
        if self.server is None:
            return fn()
        r, cpu = server_cpu_delta(self.server, fn)
        self.row.extra.setdefault("server_cpu_s", []).append(cpu)
        self.row.extra.setdefault("client_cpu_s", []).append(r.cpu)
        return r


class SftsGet(ServedTool):
    """`sfts-client get -o -` to /dev/null with one --checksum mode."""

    def __init__(self, ctx, row, mode, path, size):
        super().__init__(ctx, row)
        self.mode, self.path, self.size = mode, path, size
        self.server = ctx.sfts

    def argv(self, output):
        return sfts(self.ctx, "get", self.ctx.sfts.addr, self.path, "-o", output,
                    "--checksum", self.mode)

    def prepare(self):
        if self.mode not in self.ctx.modes:
            raise NotImplementedInSfts("not implemented: `--checksum` offers "
                                       + "|".join(self.ctx.modes))
        # Untimed: the whole output to a file, compared byte for byte; fills the caches.
        out = self.ctx.ws.fresh(self.ctx.ws.m("out"), "get-check")
        r = run(self.argv(out), self.ctx.ws.run_log("sfts-get"), self.ctx.timeout)
        expect_ok(r, self.row.label)
        cmp_files(out, self.ctx.ws.m("data", self.path), self.row.label)
        self.ctx.ws.discard(out)

    def once(self, i):
        cmd = self.argv("-")
        r = self.measured(
            lambda: run(cmd, self.ctx.ws.run_log("sfts-get"), self.ctx.timeout, stdout="devnull")
        )
        expect_ok(r, self.row.label)
        check_digest(r, self.ctx.digests.get((self.path, self.mode)), self.row.label)
        return gbps(self.size, r.seconds)


class CurlGet(ServedTool):
    def __init__(self, ctx, row, server, path, size):
        super().__init__(ctx, row)
        self.server, self.path, self.size = server, path, size

    def argv(self, output):
        return ["curl", "-sS", "-o", output, "-w", "%{http_code} %{size_download}",
                f"http://{self.server.addr}/{self.path}"]

    def check(self, r):
        if r.returncode != 0 or r.stdout.split() != ["200", str(self.size)]:
            raise ToolFailure(f"{self.row.label}: {r.describe()} {r.stdout!r}")

    def prepare(self):
        out = self.ctx.ws.fresh(self.ctx.ws.m("out"), "curl-check")
        r = run(self.argv(out), self.ctx.ws.run_log("curl"), self.ctx.timeout)
        self.check(r)
        cmp_files(out, self.ctx.ws.m("data", self.path), self.row.label)
        self.ctx.ws.discard(out)

    def once(self, i):
        r = self.measured(
            lambda: run(self.argv("/dev/null"), self.ctx.ws.run_log("curl"), self.ctx.timeout)
        )
        self.check(r)
        return gbps(self.size, r.seconds)


class RsyncGet(ServedTool):
    def __init__(self, ctx, row, path, size):
        super().__init__(ctx, row)
        self.path, self.size = path, size
        self.server = ctx.rsyncd

    def prepare(self):
        out = self.ctx.ws.fresh(self.ctx.ws.m("out"), "rsync-check")
        r = run(["rsync", self.server.url(self.path), out], self.ctx.ws.run_log("rsync"),
                self.ctx.timeout)
        if r.returncode != 0:
            raise ToolFailure(f"{self.row.label}: {r.describe()}")
        cmp_files(out, self.ctx.ws.m("data", self.path), self.row.label)
        self.ctx.ws.discard(out)

    def once(self, i):
        # --write-devices lets rsync write into /dev/null like the others (rsync >= 3.2).
        cmd = ["rsync", "--write-devices", "--inplace", self.server.url(self.path), "/dev/null"]
        r = self.measured(lambda: run(cmd, self.ctx.ws.run_log("rsync"), self.ctx.timeout))
        if r.returncode != 0:
            raise ToolFailure(f"{self.row.label}: {r.describe()}")
        return gbps(self.size, r.seconds)


class SocatGet(Tool):
    """socat with 1 MiB buffers: a one-shot sender per run, the receiver timed."""

    def __init__(self, ctx, row, path, size):
        super().__init__(ctx, row)
        self.src, self.size = ctx.ws.m("data", path), size

    def transfer(self, output):
        port = free_port()
        sender = spawn(
            ["socat", "-u", "-b", SOCAT_BUF, f"OPEN:{self.src},rdonly",
             f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"],
            self.ctx.ws.run_log("socat-send"),
        )
        wait_listening(port, sender.proc)
        r = run(["socat", "-u", "-b", SOCAT_BUF, f"TCP:127.0.0.1:{port}", "STDOUT"],
                self.ctx.ws.run_log("socat-recv"), self.ctx.timeout, stdout=output)
        s = sender.wait(self.ctx.timeout)
        if r.returncode != 0 or s.returncode != 0:
            raise ToolFailure(f"{self.row.label}: {r.describe()}; {s.describe()}")
        return r

    def prepare(self):
        out = self.ctx.ws.fresh(self.ctx.ws.m("out"), "socat-check")
        self.transfer(out)
        cmp_files(out, self.src, self.row.label)
        self.ctx.ws.discard(out)

    def once(self, i):
        r = self.transfer("devnull")
        self.row.extra.setdefault("client_cpu_s", []).append(r.cpu)
        return gbps(self.size, r.seconds)


class OpensslDgst(Tool):
    def __init__(self, ctx, row, alg, path, size):
        super().__init__(ctx, row)
        self.alg, self.src, self.size, self.path = alg, ctx.ws.m("data", path), size, path

    def once(self, i):
        r = run(["openssl", "dgst", f"-{self.alg}", "-r", self.src],
                self.ctx.ws.run_log("openssl"), self.ctx.timeout)
        if r.returncode != 0:
            raise ToolFailure(f"{self.row.label}: {r.describe()}")
        got = r.stdout.split()[0] if r.stdout.split() else ""
        if got != self.ctx.digests[(self.path, self.alg)]:
            raise ToolFailure(f"{self.row.label}: wrong digest {got}")
        return gbps(self.size, r.seconds)


def fast_modes(ctx):
    return [m for m in ctx.modes if m not in ("sha256", "md5")]


def figure1(ctx):
    size, path = ctx.sizes.big, "big.bin"
    fig = ctx.report.figure(
        "1",
        f"one {size / GIB:.2f} GiB file, loopback, file in page cache (tmpfs), output to "
        "/dev/null",
        "Rates in GB/s (10^9 bytes/s). SFTS: `sfts-client get -o - > /dev/null` with the "
        "digests already cached on the server. rsync writes into /dev/null with "
        "--write-devices. openssl: single-core hashing of the same file, no network.",
    )
    peers = ["socat", "nginx", "pyhttp", "rsync"]
    tools = []
    r = fig.row("sfts-sha256", "SFTS get --checksum sha256", "GB/s", sfts=True,
                compare=["openssl-sha256", *peers])
    tools.append(SftsGet(ctx, r, "sha256", path, size))
    r = fig.row("sfts-md5", "SFTS get --checksum md5", "GB/s", sfts=True,
                compare=["openssl-md5", *peers])
    tools.append(SftsGet(ctx, r, "md5", path, size))
    fast = fast_modes(ctx)
    for mode in fast:
        r = fig.row(f"sfts-{mode}", f"SFTS get --checksum {mode}", "GB/s", sfts=True,
                    compare=peers)
        tools.append(SftsGet(ctx, r, mode, path, size))
    if not fast:
        fig.row("sfts-fast", "SFTS get, fastest integrity mode (e.g. blake3)", "GB/s",
                sfts=True).na("not implemented: `--checksum` offers " + "|".join(ctx.modes))
    tools.append(SocatGet(ctx, fig.row("socat", "socat -b 1M", "GB/s"), path, size))
    tools.append(CurlGet(ctx, fig.row("nginx", "nginx + curl", "GB/s"), ctx.nginx, path, size))
    tools.append(CurlGet(ctx, fig.row("pyhttp", "python http.server + curl", "GB/s"),
                         ctx.pyhttp, path, size))
    tools.append(RsyncGet(ctx, fig.row("rsync", "rsync daemon", "GB/s"), path, size))
    tools.append(OpensslDgst(ctx, fig.row("openssl-sha256", "openssl dgst -sha256", "GB/s"),
                             "sha256", path, size))
    tools.append(OpensslDgst(ctx, fig.row("openssl-md5", "openssl dgst -md5", "GB/s"),
                             "md5", path, size))
    rounds(ctx, tools)
    ctx.ws.purge()
    return fig


# -- figure 2: uploads -------------------------------------------------------------------


class Upload(Tool):
    """An upload of the big file into data/uploads/, checked against the source's digest."""

    name = "upload"

    def __init__(self, ctx, row, path, size):
        super().__init__(ctx, row)
        self.src, self.size, self.path = ctx.ws.m("data", path), size, path

    def target(self):
        """A remote name never used before (an upload must not find its target there)."""
        self.ctx.ws.counter += 1
        return f"uploads/{self.name}-{self.ctx.ws.counter:05d}.bin"

    def transfer(self, remote):
        raise NotImplementedError

    def verify_and_discard(self, remote):
        dest = self.ctx.ws.m("data", remote)
        if not os.path.isfile(dest) or os.path.getsize(dest) != self.size:
            raise ToolFailure(f"{self.row.label}: {remote} missing or of the wrong size")
        if file_digest(dest, "sha256") != self.ctx.digests[(self.path, "sha256")]:
            raise ToolFailure(f"{self.row.label}: uploaded {remote} differs from the source")
        self.ctx.ws.discard(dest)

    def prepare(self):
        remote = self.target()
        self.transfer(remote)
        self.verify_and_discard(remote)

    def once(self, i):
        remote = self.target()
        r = self.transfer(remote)
        self.verify_and_discard(remote)
        return gbps(self.size, r.seconds)


class SftsPut(Upload):
    name = "sfts-put"

    def prepare(self):
        if not self.ctx.uploads:
            raise NotImplementedInSfts("not implemented: sfts-server has no --allow-upload")
        super().prepare()

    def transfer(self, remote):
        cmd = sfts(self.ctx, "put", self.ctx.sfts.addr, self.src, remote)
        r = run(cmd, self.ctx.ws.run_log("sfts-put"), self.ctx.timeout)
        expect_ok(r, self.row.label)
        check_digest(r, self.ctx.digests[(self.path, "sha256")], self.row.label)
        return r


class RsyncPut(Upload):
    name = "rsync"

    def transfer(self, remote):
        r = run(["rsync", self.src, self.ctx.rsyncd.url(remote)], self.ctx.ws.run_log("rsync"),
                self.ctx.timeout)
        if r.returncode != 0:
            raise ToolFailure(f"{self.row.label}: {r.describe()}")
        return r


class CurlPut(Upload):
    name = "curl"

    def transfer(self, remote):
        r = run(["curl", "-sS", "-T", self.src, "-o", "/dev/null", "-w", "%{http_code}",
                 f"http://{self.ctx.nginx.addr}/{remote}"],
                self.ctx.ws.run_log("curl-put"), self.ctx.timeout)
        if r.returncode != 0 or r.stdout.strip() not in ("201", "204"):
            raise ToolFailure(f"{self.row.label}: {r.describe()} HTTP {r.stdout!r}")
        return r


class SocatPut(Upload):
    name = "socat"

    def transfer(self, remote):
        port = free_port()
        dest = self.ctx.ws.m("data", remote)
        receiver = spawn(
            ["socat", "-u", "-b", SOCAT_BUF, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr",
             f"CREATE:{dest}"],
            self.ctx.ws.run_log("socat-recv"),
        )
        wait_listening(port, receiver.proc)
        s = spawn(["socat", "-u", "-b", SOCAT_BUF, f"OPEN:{self.src},rdonly",
                   f"TCP:127.0.0.1:{port}"], self.ctx.ws.run_log("socat-send"))
        r = receiver.wait(self.ctx.timeout)
        s_run = s.wait(self.ctx.timeout)
        # From the sender's start until both ends are done (the file fully written).
        r.seconds = max(receiver.started + r.seconds, s.started + s_run.seconds) - s.started
        if r.returncode != 0 or s_run.returncode != 0:
            raise ToolFailure(f"{self.row.label}: {r.describe()}; {s_run.describe()}")
        return r


class GetFile(Tool):
    """A download into a new file under `out_dir` (tmpfs or disk), moved aside afterwards.

    kind: "sfts" (`get -o FILE`, sha256), "curl" (from nginx) or "rsync" (from the daemon).
    """

    def __init__(self, ctx, row, kind, path, size, out_dir):
        super().__init__(ctx, row)
        self.kind, self.path, self.size, self.out_dir = kind, path, size, out_dir

    def argv(self, out):
        if self.kind == "sfts":
            return sfts(self.ctx, "get", self.ctx.sfts.addr, self.path, "-o", out)
        if self.kind == "curl":
            return ["curl", "-sS", "-o", out, f"http://{self.ctx.nginx.addr}/{self.path}"]
        if self.kind == "rsync-fsync":
            return ["rsync", "--fsync", self.ctx.rsyncd.url(self.path), out]
        return ["rsync", self.ctx.rsyncd.url(self.path), out]

    def once(self, i):
        out = self.ctx.ws.fresh(self.out_dir, f"{self.kind}-file")
        r = run(self.argv(out), self.ctx.ws.run_log(f"{self.kind}-file"), self.ctx.timeout)
        if self.kind == "sfts":
            expect_ok(r, self.row.label)
            check_digest(r, self.ctx.digests[(self.path, "sha256")], self.row.label)
        elif r.returncode != 0:
            raise ToolFailure(f"{self.row.label}: {r.describe()}")
        if os.path.getsize(out) != self.size:
            raise ToolFailure(f"{self.row.label}: {out} has the wrong size")
        if i == 0:
            cmp_files(out, self.ctx.ws.m("data", self.path), self.row.label)
        self.ctx.ws.discard(out)
        return gbps(self.size, r.seconds)


def figure1d(ctx):
    size, path = ctx.sizes.big, "big.bin"
    fig = ctx.report.figure(
        "1d",
        f"the {size / GIB:.2f} GiB file downloaded into a file on disk ({ctx.disk_fs})",
        "GB/s; the write-to-disk counterpart of figure 1. Old destinations are moved aside "
        "and deleted at the end of the figure. SFTS `get -o FILE` (sha256, resume journal "
        "kept while it runs) fsyncs the file before renaming it into place; curl and rsync "
        "leave the writes in the page cache, `rsync --fsync` syncs like SFTS.",
    )
    out = ctx.ws.d("out")
    tools = [
        GetFile(ctx, fig.row("sfts", "SFTS get → disk file (sha256)", "GB/s", sfts=True,
                             compare=["curl", "rsync", "rsync-fsync"]), "sfts", path, size, out),
        GetFile(ctx, fig.row("curl", "nginx + curl -o → disk file", "GB/s"), "curl", path,
                size, out),
        GetFile(ctx, fig.row("rsync", "rsync daemon → disk file", "GB/s"), "rsync", path,
                size, out),
        GetFile(ctx, fig.row("rsync-fsync", "rsync --fsync → disk file", "GB/s"),
                "rsync-fsync", path, size, out),
    ]
    rounds(ctx, tools)
    ctx.ws.purge()
    return fig


def figure2(ctx):
    size, path = ctx.sizes.big, "big.bin"
    os.makedirs(ctx.ws.m("data", "uploads"), exist_ok=True)
    fig = ctx.report.figure(
        "2",
        f"the same {size / GIB:.2f} GiB file uploaded (server root on tmpfs)",
        "GB/s. SFTS `put` (SHA-256, the server checks every chunk and the whole file). "
        "`get → tmpfs file` is the download in the same mode writing the same kind of file "
        "(the put target compares with it). nginx takes the upload with WebDAV PUT.",
    )
    peers = ["get-file", "rsync-up", "curl-up", "socat-up"]
    tools = [
        SftsPut(ctx, fig.row("sfts-put", "SFTS put", "GB/s", sfts=True, compare=peers),
                path, size),
        GetFile(ctx, fig.row("get-file", "SFTS get → tmpfs file (sha256)", "GB/s"), "sfts",
                path, size, ctx.ws.m("out")),
        RsyncPut(ctx, fig.row("rsync-up", "rsync to daemon", "GB/s"), path, size),
        CurlPut(ctx, fig.row("curl-up", "curl -T to nginx (WebDAV PUT)", "GB/s"), path, size),
        SocatPut(ctx, fig.row("socat-up", "socat -b 1M to a file", "GB/s"), path, size),
    ]
    rounds(ctx, tools)
    ctx.ws.purge()
    return fig


# -- figure 7: CPU per GiB, from figure 1's runs -------------------------------------------


def figure7(ctx, fig1):
    size = ctx.sizes.big
    fig = ctx.report.figure(
        "7",
        "CPU seconds per GiB sent, from figure 1's runs (digests cached on the SFTS server)",
        "utime+stime from /proc/PID/stat before and after each run (server: every process "
        "of it; nginx: master and workers; rsync: the daemon and the children it reaped). "
        "Client rows: the receiving process, from wait4. Resolution: 10 ms per run.",
    )
    wanted = [(k, f"SFTS server ({k[5:]})", True) for k in
              [r.key for r in fig1.rows if r.key.startswith("sfts-") and r.key != "sfts-fast"]]
    wanted += [("nginx", "nginx (sendfile)", False), ("pyhttp", "python http.server", False),
               ("rsync", "rsync daemon", False)]
    for key, label, is_sfts in wanted:
        src = fig1.get(key)
        row = fig.row(f"server-{key}", label, "CPU s/GiB", "lower", sfts=is_sfts,
                      compare=["server-nginx"] if is_sfts else [])
        copy_cpu(src, row, "server_cpu_s", size)
    for key, label, is_sfts in [
        ("sfts-sha256", "SFTS client (sha256)", True), ("sfts-md5", "SFTS client (md5)", True),
        ("nginx", "curl (from nginx)", False), ("socat", "socat receiver", False),
    ]:
        src = fig1.get(key)
        row = fig.row(f"client-{key}", label, "CPU s/GiB", "lower", sfts=is_sfts,
                      compare=["client-nginx"] if is_sfts else [])
        copy_cpu(src, row, "client_cpu_s", size)
    return fig


def copy_cpu(src, row, field, size):
    if src is None or src.status != "ok":
        row.status = src.status if src is not None else "n/a"
        row.note = src.note if src is not None else "not measured"
        return
    row.samples = [c / (size / GIB) for c in src.extra.get(field, [])]
