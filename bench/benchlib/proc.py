"""Processes: timed runs with their CPU time, background services, ports, /proc readings.

Every process the harness starts gets its own session (process group), so stopping it stops
its children too and never touches anything the harness did not start.
"""

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Commands started by spawn() and not yet waited for: killed if the harness is interrupted.
_LIVE = {}


class ToolFailure(Exception):
    """A tool exited with an error, hung, or produced wrong output: the harness is broken."""


class NotImplementedInSfts(Exception):
    """SFTS does not offer what this figure needs yet: reported as "n/a (not implemented)"."""


@dataclass
class Run:
    """One finished command: wall time, exit code, its (and its children's) CPU time."""

    argv: object
    seconds: float
    returncode: int
    cpu_user: float
    cpu_sys: float
    stderr: str = ""
    stdout: str = ""

    @property
    def cpu(self):
        return self.cpu_user + self.cpu_sys

    def describe(self):
        cmd = self.argv if isinstance(self.argv, str) else " ".join(map(str, self.argv))
        tail = (self.stderr.strip().splitlines() or [""])[-3:]
        return f"`{cmd}` exited {self.returncode}: {' / '.join(tail)}"


@dataclass
class Spawned:
    """A started process whose output goes to files, waited for with wait4 (rusage)."""

    argv: object
    proc: subprocess.Popen
    started: float
    err_path: str
    out_path: str = None
    timer: threading.Timer = field(default=None)

    def wait(self, timeout=None):
        """Wait for the process; kill its group after `timeout` seconds. Returns a Run."""
        timed_out = threading.Event()

        def expire():
            timed_out.set()
            kill_group(self.proc.pid)

        if timeout is not None:
            self.timer = threading.Timer(timeout, expire)
            self.timer.daemon = True
            self.timer.start()
        _, status, ru = os.wait4(self.proc.pid, 0)
        ended = time.perf_counter()
        _LIVE.pop(self.proc.pid, None)
        if self.timer is not None:
            self.timer.cancel()
        rc = os.waitstatus_to_exitcode(status)
        self.proc.returncode = rc
        if timed_out.is_set():
            rc = 124
        return Run(
            self.argv,
            ended - self.started,
            rc,
            ru.ru_utime,
            ru.ru_stime,
            read_text(self.err_path),
            read_text(self.out_path) if self.out_path else "",
        )


def read_text(path, limit=1 << 20):
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def kill_group(pid, sig=signal.SIGKILL):
    """Signal the process group led by `pid` (a process this harness started)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def spawn(argv, err_path, stdout=None, cwd=None, env=None, shell=False, stdin=None):
    """Start `argv` (a list, or a bash string when shell=True) with stderr to `err_path`.

    `stdout` is a path to write, "devnull", or None for a path beside err_path (captured).
    """
    out_path = None
    if stdout == "devnull":
        out = open(os.devnull, "wb")
    else:
        out_path = stdout or err_path + ".out"
        out = open(out_path, "wb")
    err = open(err_path, "wb")
    if shell:
        argv_run = ["bash", "-c", "set -o pipefail; " + argv]
    else:
        argv_run = [str(a) for a in argv]
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(
            argv_run,
            stdout=out,
            stderr=err,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    finally:
        out.close()
        err.close()
    _LIVE[proc.pid] = proc
    return Spawned(argv, proc, started, err_path, out_path if stdout is None else None)


def kill_spawned():
    """Kill every command still running (after an interruption)."""
    for pid in list(_LIVE):
        kill_group(pid)
        _LIVE.pop(pid, None)


def run(argv, err_path, timeout, **kw):
    """Run `argv` to completion and return its Run (never raises on a non-zero exit)."""
    return spawn(argv, err_path, **kw).wait(timeout)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """True when something listens on 127.0.0.1:port (or any address), read from /proc.

    Reading /proc instead of connecting matters for one-shot listeners such as socat,
    which a probe connection would use up.
    """
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1].endswith(want) and parts[3] == "0A":
                        return True
        except OSError:
            continue
    return False


def wait_listening(port, proc=None, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening(port):
            return
        if proc is not None and proc.poll() is not None:
            raise ToolFailure(f"a server meant to listen on port {port} exited {proc.returncode}")
        time.sleep(0.005)
    raise ToolFailure(f"nothing listens on port {port} after {timeout:.0f} s")


def cpu_seconds(pid, children=False):
    """utime+stime of process `pid` (all its threads, live and finished), in seconds.

    With children=True, the CPU time of children it has waited for is added (the rsync
    daemon forks a process per client).
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime/stime are fields 14/15, cutime/cstime 16/17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def status_of(pid):
    """VmRSS (bytes) and thread count of `pid`, from /proc/PID/status."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def children_of(pid):
    """Direct children of `pid`."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class Services:
    """Background processes started by the harness, all stopped by stop_all()."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, log_path, cwd=None, env=None):
        log = open(log_path, "wb")
        try:
            proc = subprocess.Popen(
                [str(a) for a in argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc, grace=3.0):
        if proc.poll() is None:
            kill_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                kill_group(proc.pid, signal.SIGKILL)
                proc.wait()
        else:
            # A server that exited still leaves its group; make sure nothing of it remains.
            kill_group(proc.pid, signal.SIGKILL)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self):
        for _, proc in list(reversed(self.procs)):
            try:
                self.stop(proc)
            except Exception:  # noqa: BLE001 - cleanup must go on
                pass


def machine_busy_seconds():
    """CPU seconds all processes spent in user and system mode since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system = (int(x) for x in fields[:3])
    return (user + nice + system) / CLK_TCK


def own_cpu_seconds():
    """CPU seconds of the harness and every child it has reaped (clients, stopped servers)."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total
