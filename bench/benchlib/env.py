"""The harness's temporary directories, test data, and the two traps of issue 6.

* Memory freed for a few seconds is handed back to the host and is slow to touch again:
  `warm()` touches and frees `warm_mib` of memory just before every timed run.
* On ext4 without a journal, files created right after deleting many others are much slower:
  `discard()` only moves an old destination aside; `purge()` deletes them at the end of a
  figure (or, for big files in memory, when they exceed a budget, before the next warm-up).
"""

import hashlib
import mmap
import os
import shutil
import subprocess
import tempfile

MIB = 1 << 20
GIB = 1 << 30


def fs_type(path):
    """File-system type of the mount holding `path` (longest matching mount point)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            _, mnt, typ = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, typ
    return kind


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


class Workspace:
    """Temporary directories: `mem` (tmpfs) for network-path figures, `disk` for the rest
    (figure 6's uncached file, figure 1d's destinations, the servers' databases)."""

    def __init__(self, mem_parent, disk_parent, warm_mib, trash_budget, keep=False):
        self.mem = tempfile.mkdtemp(prefix="sfts-bench.", dir=mem_parent)
        self.disk = tempfile.mkdtemp(prefix="sfts-bench.", dir=disk_parent)
        # Servers that drop privileges (nginx workers, rsync) must be able to enter them.
        os.chmod(self.mem, 0o755)
        os.chmod(self.disk, 0o755)
        self.warm_mib = warm_mib
        self.trash_budget = trash_budget
        self.keep = keep
        self.trash_bytes = 0
        self.counter = 0
        for d in ("data", "out", "trash", "logs", "cfg", "runs"):
            os.makedirs(self.m(d), exist_ok=True)
        for d in ("data", "out", "trash", "state"):
            os.makedirs(self.d(d), exist_ok=True)

    def m(self, *parts):
        return os.path.join(self.mem, *parts)

    def d(self, *parts):
        return os.path.join(self.disk, *parts)

    def run_log(self, name):
        """A fresh path for one command's standard error."""
        self.counter += 1
        return self.m("runs", f"{self.counter:05d}-{name}.err")

    def fresh(self, base, name):
        """A new destination path under `base` (out/ of mem or disk) that does not exist."""
        self.counter += 1
        return os.path.join(base, f"{self.counter:05d}-{name}")

    # -- the two traps -------------------------------------------------------------------

    def warm(self):
        """Touch and free warm_mib of memory (MAP_POPULATE writes every page), just before
        a timed run, so the run does not pay for pages the host took back."""
        if self.warm_mib <= 0:
            return
        m = mmap.mmap(
            -1,
            self.warm_mib * MIB,
            flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0),
        )
        if not getattr(mmap, "MAP_POPULATE", 0):
            for off in range(0, len(m), 4096):
                m[off] = 1
        m.close()

    def discard(self, path):
        """Move an old destination aside, into the trash of its own file system."""
        if not os.path.lexists(path):
            return
        root = self.disk if path.startswith(self.disk + "/") else self.mem
        self.counter += 1
        target = os.path.join(root, "trash", f"{self.counter:05d}")
        self.trash_bytes += tree_bytes(path)
        os.rename(path, target)

    def before_run(self):
        """Called before every timed run: purge big trash if over budget, then warm."""
        if self.trash_bytes > self.trash_budget:
            self.purge()
        self.warm()

    def purge(self):
        for root in (self.mem, self.disk):
            trash = os.path.join(root, "trash")
            for name in os.listdir(trash):
                p = os.path.join(trash, name)
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    os.unlink(p)
        self.trash_bytes = 0

    def cleanup(self):
        if self.keep:
            return
        shutil.rmtree(self.mem, ignore_errors=True)
        shutil.rmtree(self.disk, ignore_errors=True)


def tree_bytes(path):
    if os.path.isfile(path) or os.path.islink(path):
        return os.lstat(path).st_size
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


# -- test data ---------------------------------------------------------------------------


def random_file(path, size, seed):
    """`size` pseudo-random (incompressible) bytes: AES-CTR keystream from openssl."""
    cmd = (
        f"openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass pass:sfts-bench-{seed} "
        f"-in /dev/zero 2>/dev/null | head -c {size} > '{path}'"
    )
    subprocess.run(["bash", "-c", cmd], check=False)
    if os.path.getsize(path) != size:
        raise RuntimeError(f"could not create {path} ({size} bytes) with openssl")


def tree(root, files, size, seed):
    """`files` files of `size` random bytes in directories of at most 100 files."""
    import random

    rnd = random.Random(seed)
    per_dir = 100 if files >= 1000 else 25
    for i in range(files):
        d = os.path.join(root, f"d{i // per_dir:03d}")
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:05d}.bin"), "wb") as f:
            f.write(rnd.randbytes(size))


def file_digest(path, algorithm):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def tree_manifest(root):
    """{relative path: sha256} of every file below `root` (directories included as None)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirs:
            out[os.path.normpath(os.path.join(rel, d))] = None
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.normpath(os.path.join(rel, f))] = hashlib.sha256(fh.read()).hexdigest()
    return out


def evict(path):
    """Drop `path` from the page cache (it must be fully written back first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_fraction(path):
    """Fraction of `path` in the page cache, from util-linux fincore (None if unavailable)."""
    try:
        out = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", path],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        res, size = int(out[0]), int(out[1])
        return res / size if size else 0.0
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None
