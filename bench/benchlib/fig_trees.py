"""Figures 3 (a tree of small files, down and up) and 4 (concurrent clients)."""

import os
import time

from .env import MIB
from .proc import NotImplementedInSfts, ToolFailure, free_port, run, spawn, wait_listening
from .tools import Tool, check_digest, expect_ok, rounds, same_tree, sfts


class TreeTool(Tool):
    """Copies the tree `data/tree` somewhere new; checked file by file; seconds."""

    def __init__(self, ctx, row, upload=False):
        super().__init__(ctx, row)
        self.upload = upload

    def dest(self):
        if self.upload:
            self.ctx.ws.counter += 1
            rel = f"uploads/tree-{self.ctx.ws.counter:05d}"
            return rel, self.ctx.ws.m("data", rel)
        path = self.ctx.ws.fresh(self.ctx.ws.m("out"), "tree")
        return path, path

    def prepare(self):
        # Untimed: one copy first, so every tool starts with warm caches (the SFTS server's
        # digest cache, the page cache, dentries).
        self.once(-1)

    def once(self, i):
        where, local = self.dest()
        seconds = self.copy(where, local)
        same_tree(self.ctx, local, self.ctx.tree_manifest, self.row.label)
        self.ctx.ws.discard(local)
        return seconds

    def copy(self, where, local):
        raise NotImplementedError


class SftsTree(TreeTool):
    def copy(self, where, local):
        if self.upload:
            if not self.ctx.uploads:
                raise NotImplementedInSfts("not implemented: sfts-server has no --allow-upload")
            cmd = sfts(self.ctx, "put", "-r", self.ctx.sfts.addr, self.ctx.ws.m("data", "tree"),
                       where)
        else:
            cmd = sfts(self.ctx, "get", "-r", self.ctx.sfts.addr, "tree", "-o", where)
        r = run(cmd, self.ctx.ws.run_log("sfts-tree"), self.ctx.timeout)
        expect_ok(r, self.row.label)
        return r.seconds


class RsyncTree(TreeTool):
    def copy(self, where, local):
        if self.upload:
            cmd = ["rsync", "-a", self.ctx.ws.m("data", "tree") + "/",
                   self.ctx.rsyncd.url(where) + "/"]
        else:
            cmd = ["rsync", "-a", self.ctx.rsyncd.url("tree") + "/", where + "/"]
        r = run(cmd, self.ctx.ws.run_log("rsync-tree"), self.ctx.timeout)
        if r.returncode != 0:
            raise ToolFailure(f"{self.row.label}: {r.describe()}")
        return r.seconds


class TarSocat(TreeTool):
    """`tar c | socat` into `socat | tar x`: from the sender's start until tar x is done."""

    def copy(self, where, local):
        os.makedirs(local)
        port = free_port()
        receiver = spawn(
            f"socat -u TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr STDOUT | tar -C '{local}' "
            "--strip-components=1 -xf -",
            self.ctx.ws.run_log("tar-recv"), shell=True,
        )
        wait_listening(port, receiver.proc)
        sender = spawn(
            f"tar -C '{self.ctx.ws.m('data')}' -cf - tree | socat -u STDIN TCP:127.0.0.1:{port}",
            self.ctx.ws.run_log("tar-send"), shell=True,
        )
        r = receiver.wait(self.ctx.timeout)
        s = sender.wait(self.ctx.timeout)
        if r.returncode != 0 or s.returncode != 0:
            raise ToolFailure(f"{self.row.label}: {r.describe()}; {s.describe()}")
        return max(receiver.started + r.seconds, sender.started + s.seconds) - sender.started


def figure3(ctx):
    n, size = ctx.sizes.files, ctx.sizes.file_size
    figs = []
    for upload in (False, True):
        verb = "uploaded" if upload else "downloaded"
        fig = ctx.report.figure(
            "3b" if upload else "3",
            f"a tree of {n:,} files of {size // 1024} KiB {verb} (tmpfs to tmpfs)",
            "Seconds for the whole tree, lower is better; every file compared afterwards; "
            "each tool copied the tree once, untimed, before the runs. "
            + ("SFTS `put -r`; rsync into the daemon's module." if upload else
               "SFTS `get -r` (one listing, then pipelined Gets); rsync from the daemon "
               "(`-a`); tar piped through socat, untarred on the other side."),
        )
        sfts_label = "SFTS put -r" if upload else "SFTS get -r"
        tools = [
            SftsTree(ctx, fig.row("sfts", sfts_label, "s", "lower", sfts=True,
                                  compare=["rsync", "tar"]), upload),
            RsyncTree(ctx, fig.row("rsync", "rsync daemon", "s", "lower"), upload),
            TarSocat(ctx, fig.row("tar", "tar | socat → socat | tar", "s", "lower"), upload),
        ]
        rounds(ctx, tools)
        ctx.ws.purge()
        figs.append(fig)
    return figs


# -- figure 4: concurrent clients ------------------------------------------------------------


class Concurrent(Tool):
    """N clients at once, each fetching its own file to /dev/null; aggregate GB/s."""

    def __init__(self, ctx, row, kind, mode=None):
        super().__init__(ctx, row)
        self.kind, self.mode = kind, mode

    def argv(self, name):
        if self.kind == "sfts":
            return sfts(self.ctx, "get", self.ctx.sfts.addr, f"conc/{name}", "-o", "-",
                        "--checksum", self.mode)
        return ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                f"http://{self.ctx.nginx.addr}/conc/{name}"]

    def prepare(self):
        if self.kind == "sfts" and self.mode not in self.ctx.modes:
            raise NotImplementedInSfts("not implemented: `--checksum` offers "
                                       + "|".join(self.ctx.modes))
        # Untimed: every file fetched once, so the server's digest cache holds them all
        # (as for a server whose popular files have been fetched before).
        self.once(-1)

    def once(self, i):
        names = self.ctx.conc_names
        t0 = time.perf_counter()
        started = [spawn(self.argv(n), self.ctx.ws.run_log(f"conc-{self.kind}"),
                         stdout="devnull" if self.kind == "sfts" else None) for n in names]
        runs = [s.wait(self.ctx.timeout) for s in started]
        seconds = max(s.started + r.seconds for s, r in zip(started, runs)) - t0
        for name, r in zip(names, runs):
            if self.kind == "sfts":
                expect_ok(r, self.row.label)
                check_digest(r, self.ctx.digests.get((f"conc/{name}", self.mode)),
                             self.row.label)
            elif r.returncode != 0 or r.stdout.split() != ["200", str(self.ctx.sizes.conc_size)]:
                raise ToolFailure(f"{self.row.label}: {r.describe()} {r.stdout!r}")
        if i >= 0:
            self.row.extra.setdefault("client_cpu_s", []).append(sum(r.cpu for r in runs))
        return len(names) * self.ctx.sizes.conc_size / seconds / 1e9


def figure4(ctx):
    n, size = ctx.sizes.clients, ctx.sizes.conc_size
    fig = ctx.report.figure(
        "4",
        f"{n} concurrent clients, each fetching its own {size // MIB} MiB file (to /dev/null)",
        "Aggregate GB/s from the first client's start to the last one's end; each client "
        "is a separate process (sfts-client or curl). Each file was fetched once before "
        "(untimed), so the SFTS server's digest cache holds it.",
    )
    tools = []
    for mode in ["sha256", *[m for m in ctx.modes if m not in ("sha256", "md5")]]:
        tools.append(Concurrent(ctx, fig.row(f"sfts-{mode}", f"SFTS, {n} × get --checksum {mode}",
                                             "GB/s", sfts=True, compare=["nginx"]), "sfts", mode))
    if len(tools) == 1:
        fig.row("sfts-fast", "SFTS, fastest integrity mode", "GB/s", sfts=True).na(
            "not implemented: `--checksum` offers " + "|".join(ctx.modes))
    tools.append(Concurrent(ctx, fig.row("nginx", f"nginx + {n} curls", "GB/s"), "curl"))
    rounds(ctx, tools)
    return fig
