"""A measured tool (one row of a figure), and the rounds that alternate tools run by run."""

import os
import re
import time

from .proc import NotImplementedInSfts, ToolFailure, run
from .results import OK

DIGEST_LINE = re.compile(r"^([0-9a-f]{16,})\s+\S", re.M)


class Tool:
    """One row of a figure. `prepare` runs once, untimed (warm-up and a full output check);
    `once` runs one timed measurement and returns its sample (in the row's unit)."""

    def __init__(self, ctx, row):
        self.ctx = ctx
        self.row = row

    def prepare(self):
        pass

    def once(self, i):
        raise NotImplementedError


def rounds(ctx, tools, runs=None):
    """Prepare every tool, then `runs` rounds; each round runs every tool once, the order
    rotated round by round (A B C, B C A, ...), each run just after the memory warm-up."""
    runs = ctx.runs if runs is None else runs
    for t in tools:
        guarded(ctx, t, t.prepare)
    for i in range(runs):
        active = [t for t in tools if t.row.status == OK]
        if not active:
            return
        k = i % len(active)
        for t in active[k:] + active[:k]:
            if t.row.status != OK:
                continue
            ctx.ws.before_run()
            guarded(ctx, t, lambda: t.row.samples.append(t.once(i)))


def guarded(ctx, tool, fn):
    try:
        fn()
    except NotImplementedInSfts as e:
        tool.row.na(str(e) or "not implemented")
        ctx.log(f"  {tool.row.label}: n/a ({tool.row.note})")
    except ToolFailure as e:
        tool.row.fail(str(e))
        ctx.log(f"  {tool.row.label}: FAILED: {e}")


def expect_ok(r, what):
    """Raise for a failed command; an SFTS refusal for a missing capability is n/a."""
    if r.returncode == 0:
        return
    text = r.stderr
    if r.returncode == 4 and ("its protocol has no" in text or "does not take uploads" in text):
        raise NotImplementedInSfts(_last_line(text))
    if r.returncode == 124:
        raise ToolFailure(f"{what}: timed out ({r.describe()})")
    raise ToolFailure(f"{what}: {r.describe()}")


def _last_line(text):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    msg = lines[-1] if lines else "not implemented"
    return re.sub(r"^sfts-client: error: ", "", msg)


def printed_digest(r):
    m = DIGEST_LINE.search(r.stderr) or DIGEST_LINE.search(r.stdout)
    return m.group(1) if m else None


def check_digest(r, want, what):
    got = printed_digest(r)
    if want is not None and got != want:
        raise ToolFailure(f"{what}: printed digest {got} but the file's is {want}")


def sfts(ctx, *args):
    """argv of an sfts-client command (quiet, logs in the work directory)."""
    return [ctx.client, "-q", "--log-dir", ctx.ws.m("logs", "client"), *args]


def cmp_files(a, b, what):
    r = run(["cmp", a, b], "/dev/null", 600)
    if r.returncode != 0:
        raise ToolFailure(f"{what}: output differs from the source ({a} vs {b})")


def same_tree(ctx, got_root, want_manifest, what):
    from .env import tree_manifest

    if not os.path.isdir(got_root):
        raise ToolFailure(f"{what}: {got_root} was not created")
    got = tree_manifest(got_root)
    if got != want_manifest:
        missing = len(set(want_manifest) - set(got))
        extra = len(set(got) - set(want_manifest))
        differ = sum(1 for k in want_manifest if k in got and got[k] != want_manifest[k])
        raise ToolFailure(
            f"{what}: the tree differs ({missing} missing, {extra} extra, {differ} different)"
        )


def server_cpu_delta(server, fn):
    """Run `fn` and return (its result, the server's CPU seconds meanwhile)."""
    before = server.cpu()
    result = fn()
    time.sleep(0.05)  # let the server finish the reply it was writing when the client left
    return result, server.cpu() - before
