#!/usr/bin/env python3
"""Side-by-side benchmark of SFTS against the tools users would pick instead (issue 6).

Run it through bench/compare.sh, which installs the peers and builds SFTS first. This is not a
test: it prints figures and never fails on a time. It exits 0 when everything ran, 1 when a
tool is broken (a transfer failed or its output differs), 2 on a usage error and 3 when the
machine lacks something it needs.
"""

import argparse
import datetime
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import env  # noqa: E402
from benchlib.env import GIB, MIB, Workspace  # noqa: E402
from benchlib.fig_files import figure1, figure1d, figure2, figure7  # noqa: E402
from benchlib.fig_server import figure5, figure6  # noqa: E402
from benchlib.fig_trees import figure3, figure4  # noqa: E402
from benchlib.proc import (  # noqa: E402
    Services,
    ToolFailure,
    kill_spawned,
    machine_busy_seconds,
    own_cpu_seconds,
)
from benchlib.results import Report, Target  # noqa: E402
from benchlib.servers import (  # noqa: E402
    Nginx,
    PyHttp,
    Rsyncd,
    SftsServer,
    checksum_modes,
    server_help,
)

FULL = dict(big=GIB, files=10_000, file_size=4096, clients=64, conc_size=16 * MIB, idle=1000,
            huge=4 * GIB)
QUICK = dict(big=64 * MIB, files=500, file_size=4096, clients=8, conc_size=16 * MIB, idle=100,
             huge=256 * MIB)
FIGURES = ["1", "1d", "2", "3", "4", "5", "6", "7"]
NEEDED = ["socat", "nginx", "rsync", "curl", "openssl", "tar", "cmp", "fincore"]


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/compare.sh",
        description="Benchmark SFTS side by side with socat, nginx+curl, python http.server, "
        "rsync daemon, tar|socat and openssl on 127.0.0.1 (issue 6).",
    )
    p.add_argument("--quick", action="store_true",
                   help="small sizes and one run (CI): 64 MiB file, 500-file tree, 8 clients, "
                   "100 idle connections, 256 MiB uncached file")
    p.add_argument("--runs", type=int, help="runs of each figure (default 5, quick 1)")
    p.add_argument("--figures", default=",".join(FIGURES),
                   help="comma-separated figures to run (default all: 1,1d,2,3,4,5,6,7; 7 uses 1's "
                   "runs; 1d is figure 1 written to a file on disk)")
    p.add_argument("--size-mib", type=int, help="size of the figure 1/2 file")
    p.add_argument("--huge-mib", type=int, help="size of the figure 6 file")
    p.add_argument("--files", type=int, help="files in the figure 3 tree")
    p.add_argument("--clients", type=int, help="concurrent clients in figure 4")
    p.add_argument("--idle", type=int, help="idle connections in figure 5")
    p.add_argument("--warm-mib", type=int,
                   help="memory touched and freed before each timed run (default 1536, "
                   "quick 256)")
    p.add_argument("--tmp-dir", default="/dev/shm",
                   help="memory-backed directory for the network-path figures")
    p.add_argument("--disk-dir", default="/var/tmp",
                   help="on-disk directory for figure 6's uncached file")
    p.add_argument("--bin-dir", default=os.path.join(repo_root(), "target", "release"),
                   help="where sfts-server and sfts-client are")
    p.add_argument("--out-dir", default=os.path.join(repo_root(), "target", "bench"),
                   help="where results.json and results.md are written")
    p.add_argument("--timeout", type=int, help="seconds before a command counts as hung")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    p.add_argument("--no-build", action="store_true",
                   help="(compare.sh) use the binaries in --bin-dir without building")
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be at least 1")
    figs = [f.strip() for f in args.figures.split(",") if f.strip()]
    bad = [f for f in figs if f not in FIGURES]
    if bad:
        p.error(f"unknown figure(s) {','.join(bad)}; choose among {','.join(FIGURES)}")
    args.figures = figs
    return args


def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sizes_from(args):
    s = dict(QUICK if args.quick else FULL)
    for arg, key, unit in (("size_mib", "big", MIB), ("huge_mib", "huge", MIB),
                           ("files", "files", 1), ("clients", "clients", 1),
                           ("idle", "idle", 1)):
        v = getattr(args, arg)
        if v is not None:
            s[key] = v * unit
    return SimpleNamespace(**s)


def first_line(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        text = (r.stdout or r.stderr).strip()
        return text.splitlines()[0] if text else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def socat_version():
    out = subprocess.run(["socat", "-V"], capture_output=True, text=True).stdout
    return next((ln.strip() for ln in out.splitlines() if "socat version" in ln), "?")


def binaries_meta(bin_dir):
    client = os.path.join(bin_dir, "sfts-client")
    built = datetime.datetime.fromtimestamp(os.path.getmtime(client))
    return f"{bin_dir} ({first_line([client, '--version'])}, built {built:%Y-%m-%d %H:%M})"


def machine_meta(args, sizes, ws):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = first_line(["git", "-C", repo_root(), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", repo_root(), "status", "--porcelain", "crates"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M %Z").strip(),
        "command": "bench/compare.sh " + " ".join(sys.argv[1:]),
        "mode": "quick" if args.quick else "full",
        "runs": args.runs,
        "sizes": vars(sizes),
        "sfts_commit": commit + (" (crates/ modified)" if dirty else ""),
        "sfts_binaries": binaries_meta(args.bin_dir),
        "machine": f"{os.cpu_count()} cores, {cpu}, "
        f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / GIB:.0f} GiB RAM, "
        f"Linux {platform.release()}",
        "memory_dir": f"{ws.mem} ({env.fs_type(ws.mem)})",
        "disk_dir": f"{ws.disk} ({env.fs_type(ws.disk)})",
        "warm_mib": args.warm_mib,
        "versions": {
            "nginx": first_line(["nginx", "-v"]),
            "socat": socat_version(),
            "rsync": first_line(["rsync", "--version"]),
            "curl": first_line(["curl", "--version"]),
            "openssl": first_line(["openssl", "version"]),
            "python": platform.python_version(),
        },
    }


def targets(ctx):
    fast = [f"sfts-{m}" for m in ctx.modes if m not in ("sha256", "md5")] or ["sfts-fast"]
    return [
        Target("sha256-verified get ≥ 0.9 × openssl SHA-256 (one core)", "1", ["sfts-sha256"],
               "ge", 0.9, ("1", "openssl-sha256")),
        Target("sha256-verified get ≥ 1.0 × python http.server", "1", ["sfts-sha256"], "ge",
               1.0, ("1", "pyhttp")),
        Target("md5-verified get ≥ 0.9 × openssl MD5", "1", ["sfts-md5"], "ge", 0.9,
               ("1", "openssl-md5")),
        Target("fastest integrity mode ≥ 1.0 × nginx + curl", "1", fast, "ge", 1.0,
               ("1", "nginx")),
        Target("fastest integrity mode ≥ 0.9 × socat", "1", fast, "ge", 0.9, ("1", "socat")),
        Target("put within 10 % of get in the same mode (≥ 0.9 × get → tmpfs file)", "2",
               ["sfts-put"], "ge", 0.9, ("2", "get-file")),
        Target("small files: ≥ 1.5 × faster than rsync daemon (time ≤ 0.67 ×)", "3", ["sfts"],
               "le", 1 / 1.5, ("3", "rsync")),
        Target("small files: no slower than tar over socat (time ≤ 1.0 ×)", "3", ["sfts"], "le",
               1.0, ("3", "tar")),
        Target(f"{ctx.sizes.clients} concurrent clients ≥ 1.0 × nginx aggregate", "4",
               [f"sfts-{m}" for m in ctx.modes if m != "md5"], "ge", 1.0, ("4", "nginx")),
        Target(f"{ctx.sizes.idle:,} idle connections under 100 MiB resident", "5",
               ["sfts-rss"], "le", 100),
        Target("first byte of an uncached file under 50 ms", "6", ["sfts-ttfb"], "le", 50),
        Target("resume after 90 % (stopped by Ctrl-C) ≤ 0.15 × a full transfer", "6",
               ["sfts-resume-int"], "le", 0.15, ("6", "sfts-full")),
        Target("resume after 90 % (killed: the partial read back) ≤ 0.15 × a full transfer", "6",
               ["sfts-resume"], "le", 0.15, ("6", "sfts-full")),
        Target("server CPU per GiB within 1.5 × nginx", "7",
               [f"server-sfts-{m}" for m in ctx.modes], "le", 1.5, ("7", "server-nginx")),
    ]


def make_data(ctx):
    ws, s = ctx.ws, ctx.sizes
    ctx.log(f"creating test data in {ws.mem} and {ws.disk}")
    big = ws.m("data", "big.bin")
    env.random_file(big, s.big, "big")
    for alg in ("sha256", "md5"):
        ctx.digests[("big.bin", alg)] = env.file_digest(big, alg)
    os.makedirs(ws.m("data", "conc"))
    ctx.conc_names = [f"f{i:03d}.bin" for i in range(s.clients)]
    for name in ctx.conc_names:
        p = ws.m("data", "conc", name)
        env.random_file(p, s.conc_size, name)
        ctx.digests[(f"conc/{name}", "sha256")] = env.file_digest(p, "sha256")
    env.tree(ws.m("data", "tree"), s.files, s.file_size, 6)
    ctx.tree_manifest = env.tree_manifest(ws.m("data", "tree"))
    os.makedirs(ws.m("data", "uploads"))
    ctx.huge_path = ws.d("data", "huge.bin")
    if "6" in ctx.figures:
        env.random_file(ctx.huge_path, s.huge, "huge")
        ctx.digests[("huge", "sha256")] = env.file_digest(ctx.huge_path, "sha256")
        env.evict(ctx.huge_path)


def start_servers(ctx):
    ws = ctx.ws
    ctx.uploads = "--allow-upload" in server_help(ctx.server_bin)
    # The servers' databases live on disk, as they would in use (the files they serve are in
    # memory: the figures are about the network path).
    ctx.sfts = SftsServer.start(ctx.services, ctx.server_bin, ws.m("data"),
                                ws.d("state", "main"), ws.m("logs", "server"),
                                ws.m("logs", "sfts-server.out"), uploads=ctx.uploads)
    ctx.disk_sfts = SftsServer.start(ctx.services, ctx.server_bin, ws.d("data"),
                                     ws.d("state", "disk"), ws.m("logs", "server-disk"),
                                     ws.m("logs", "sfts-server-disk.out"))
    ctx.nginx = Nginx.start(ctx.services, ws.m("cfg"), ws.m("data"), ws.m("logs", "nginx.out"),
                            extra_locations=f"location /disk/ {{ alias {ws.d('data')}/; }}")
    ctx.pyhttp = PyHttp.start(ctx.services, ws.m("data"), ws.m("logs", "pyhttp.out"))
    ctx.rsyncd = Rsyncd.start(ctx.services, ws.m("cfg"), ws.m("data"), ws.m("logs", "rsyncd.out"))


def check_space(args, sizes, ctx):
    mem_need = sizes.big + sizes.clients * sizes.conc_size + 3 * sizes.files * sizes.file_size
    mem_need += 2 * sizes.huge + ctx.trash_budget + GIB
    if env.fs_type(args.tmp_dir) not in ("tmpfs", "ramfs"):
        print(f"warning: {args.tmp_dir} is not memory-backed ({env.fs_type(args.tmp_dir)})",
              file=sys.stderr)
    for what, path, need in (("memory-backed", args.tmp_dir, mem_need),
                             ("disk", args.disk_dir,
                              sizes.huge + sizes.big + ctx.trash_budget + GIB)):
        have = env.free_bytes(path)
        if have < need:
            print(f"bench: {what} directory {path} has {have / GIB:.1f} GiB free, needs "
                  f"{need / GIB:.1f} GiB (choose another with --tmp-dir / --disk-dir, or "
                  "smaller sizes)", file=sys.stderr)
            raise SystemExit(3)
    if env.mem_available() < mem_need + args.warm_mib * MIB:
        print(f"warning: {env.mem_available() / GIB:.1f} GiB of memory available, the run "
              f"needs about {(mem_need + args.warm_mib * MIB) / GIB:.1f} GiB", file=sys.stderr)


def main(argv):
    args = parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 5)
    args.warm_mib = args.warm_mib if args.warm_mib is not None else (256 if args.quick else 1536)
    sizes = sizes_from(args)
    missing = [t for t in NEEDED if subprocess.run(["bash", "-c", f"command -v {t}"],
                                                   capture_output=True).returncode]
    client = os.path.join(args.bin_dir, "sfts-client")
    server_bin = os.path.join(args.bin_dir, "sfts-server")
    missing += [b for b in (client, server_bin) if not os.access(b, os.X_OK)]
    if missing:
        print(f"bench: missing {', '.join(missing)} (bench/compare.sh installs them)",
              file=sys.stderr)
        return 3
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    if want < sizes.idle + 200:
        print(f"warning: the open-file limit ({want}) is low for {sizes.idle} connections",
              file=sys.stderr)

    t_start = time.monotonic()
    busy_start, own_start = machine_busy_seconds(), own_cpu_seconds()
    time.sleep(0.5)
    idle_busy = (machine_busy_seconds() - busy_start) / (0.5 * os.cpu_count())
    if idle_busy > 0.1:
        print(f"warning: other processes keep {idle_busy:.0%} of the machine busy; they will "
              "take CPU from the measured tools", file=sys.stderr)

    def log(msg):
        print(f"[{time.monotonic() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    ctx = SimpleNamespace(
        client=client, server_bin=server_bin, sizes=sizes, runs=args.runs, log=log,
        figures=args.figures, digests={}, services=Services(),
        timeout=args.timeout or (120 if args.quick else 900),
        # Big destinations are deleted once they add up to this, before the next warm-up.
        trash_budget=2 * GIB,
    )
    check_space(args, sizes, ctx)
    ctx.modes = checksum_modes(client)
    ws = ctx.ws = Workspace(args.tmp_dir, args.disk_dir, args.warm_mib, ctx.trash_budget,
                            keep=args.keep)
    ctx.disk_fs = env.fs_type(ws.disk)
    report = ctx.report = Report(machine_meta(args, sizes, ws))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        try:
            run_figures(ctx, args)
        except ToolFailure as e:
            log(f"aborted: {e}")
            report.meta["aborted"] = str(e)
        finally:
            kill_spawned()
            ctx.services.stop_all()
        # Everything the harness started is stopped and reaped now: the rest is foreign.
        other = (machine_busy_seconds() - busy_start) - (own_cpu_seconds() - own_start)
        elapsed = time.monotonic() - t_start
        report.meta["other_cpu_s"] = round(max(other, 0.0), 1)
        report.meta["other_cpu_share"] = round(max(other, 0.0) / (elapsed * os.cpu_count()), 3)
        report.meta["other_busy_share_at_start"] = round(idle_busy, 3)
        return write_report(ctx, args, t_start)
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        return 130
    finally:
        kill_spawned()
        ctx.services.stop_all()
        ws.cleanup()


def run_figures(ctx, args):
    make_data(ctx)
    start_servers(ctx)
    ctx.log(f"servers up: sfts {ctx.sfts.addr} (uploads: {'yes' if ctx.uploads else 'no'}), "
            f"nginx {ctx.nginx.addr}, http.server {ctx.pyhttp.addr}, rsyncd {ctx.rsyncd.addr}; "
            f"--checksum modes: {', '.join(ctx.modes)}")
    fig1 = None
    for number in args.figures:
        ctx.log(f"figure {number}")
        if number == "1":
            fig1 = figure1(ctx)
        elif number == "1d":
            figure1d(ctx)
        elif number == "2":
            figure2(ctx)
        elif number == "3":
            figure3(ctx)
        elif number == "4":
            figure4(ctx)
        elif number == "5":
            figure5(ctx)
        elif number == "6":
            figure6(ctx)
        elif number == "7":
            if fig1 is None:
                ctx.log("figure 7 needs figure 1 (it uses its runs); skipped")
            else:
                figure7(ctx, fig1)
        for server in (ctx.sfts, ctx.disk_sfts, ctx.nginx, ctx.pyhttp, ctx.rsyncd):
            if not server.alive():
                raise ToolFailure(f"{server.name} on {server.addr} exited during figure {number}")


def write_report(ctx, args, t_start):
    report = ctx.report
    elapsed = time.monotonic() - t_start
    report.meta["seconds"] = round(elapsed, 1)
    tgts = targets(ctx)
    text = (f"## SFTS benchmark ({report.meta['mode']}, {args.runs} run(s)), "
            f"{report.meta['date']}\n\n"
            f"Machine: {report.meta['machine']}. Repository at {report.meta['sfts_commit']}; "
            f"binaries {report.meta['sfts_binaries']}. "
            f"Memory dir {report.meta['memory_dir']}, disk dir {report.meta['disk_dir']}. "
            f"Harness time {elapsed:.0f} s. Other processes on the machine used about "
            f"{report.meta['other_cpu_s']:.0f} CPU-seconds meanwhile "
            f"({report.meta['other_cpu_share']:.0%} of its capacity; "
            f"{report.meta['other_busy_share_at_start']:.0%} just before the start).\n\n"
            "Medians of the runs, min–max beside them; ↑ higher is better, ↓ lower is "
            "better. "
            "Ratios are SFTS ÷ peer, from the same run.\n\n"
            + report.table() + "\n" + report.targets_table(tgts))
    print(text)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        f.write(report.to_json(tgts))
    failures = report.failures()
    if failures or "aborted" in report.meta:
        print(f"\nbench: {len(failures)} measurement(s) failed:", file=sys.stderr)
        for fig, r in failures:
            print(f"  figure {fig}, {r.label}: {r.note}", file=sys.stderr)
        if "aborted" in report.meta:
            print(f"  aborted: {report.meta['aborted']}", file=sys.stderr)
        return 1
    ctx.log(f"done; results in {args.out_dir}/results.md and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
