"""The servers under comparison, each on 127.0.0.1 and a free port, started and stopped here."""

import os
import re
import subprocess
import time

from .proc import (
    ToolFailure,
    children_of,
    cpu_seconds,
    free_port,
    status_of,
    wait_listening,
)


class Server:
    """A started server: its address, and CPU / memory readings of its processes."""

    name = "server"
    include_children_cpu = False

    def __init__(self, services, proc, port):
        self.services = services
        self.proc = proc
        self.port = port
        self.addr = f"127.0.0.1:{port}"

    def pids(self):
        return [self.proc.pid]

    def cpu(self):
        """CPU seconds used so far by every process of this server."""
        total = 0.0
        for pid in self.pids():
            try:
                total += cpu_seconds(pid, children=self.include_children_cpu)
            except OSError:
                pass
        return total

    def memory(self):
        """(resident bytes, threads) summed over the server's processes."""
        rss = threads = 0
        for pid in self.pids():
            try:
                r, t = status_of(pid)
            except OSError:
                continue
            rss += r
            threads += t
        return rss, threads

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.services.stop(self.proc)


class SftsServer(Server):
    name = "sfts-server"

    @classmethod
    def start(cls, services, binary, root, state, logs, log_path, uploads=False, extra=()):
        os.makedirs(state, exist_ok=True)
        os.makedirs(logs, exist_ok=True)
        argv = [
            binary, "--bind", "127.0.0.1", "--port", "0", "--root", root,
            "--state-dir", state, "--log-dir", logs,
            "--max-connections", "4096", "--timeout", "600", *extra,
        ]
        if uploads:
            argv.append("--allow-upload")
        # Every client of the benchmark comes from 127.0.0.1: lift the per-address connection
        # limit of servers that have it, or figures 4 and 5 would measure refusals. The
        # request rate limit stays at its default: a listing pays for the Gets of `get -r`
        # and each published upload for the next PutBegin of `put -r`.
        if "--max-connections-per-ip" in server_help(binary):
            argv += ["--max-connections-per-ip", "4096"]
        proc = services.start("sfts-server", argv, log_path)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with open(log_path, errors="replace") as f:
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", f.read())
            if m:
                port = int(m.group(1))
                wait_listening(port, proc)
                return cls(services, proc, port)
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        services.stop(proc)
        with open(log_path, errors="replace") as f:
            raise ToolFailure(f"sfts-server did not start: {f.read()[-500:]}")


def server_help(binary):
    return subprocess.run([binary, "--help"], capture_output=True, text=True).stdout


def checksum_modes(client):
    """The values `sfts-client get --checksum` accepts, read from its --help."""
    text = subprocess.run(
        [client, "get", "--help"], capture_output=True, text=True
    ).stdout
    m = re.search(r"--checksum.*?\[possible values: ([^\]]+)\]", text, re.S)
    return [v.strip() for v in m.group(1).split(",")] if m else ["sha256", "md5"]


class Nginx(Server):
    """nginx with sendfile, the static server most users would pick."""

    name = "nginx"

    def pids(self):
        # The master and its workers (the workers do the sending).
        return [self.proc.pid, *children_of(self.proc.pid)]

    @classmethod
    def start(cls, services, cfg_dir, root, log_path, extra_locations=""):
        port = free_port()
        prefix = os.path.join(cfg_dir, f"nginx-{port}")
        os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
        user = "user root root;" if os.geteuid() == 0 else ""
        conf = f"""
{user}
worker_processes auto;
worker_rlimit_nofile 16384;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_timeout 600s;
    client_header_timeout 600s;
    client_body_temp_path {root}/.nginx-body;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /uploads/ {{
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
        }}
        {extra_locations}
    }}
}}
"""
        path = os.path.join(prefix, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        proc = services.start("nginx", ["nginx", "-p", prefix, "-c", path], log_path)
        wait_listening(port, proc)
        return cls(services, proc, port)


class PyHttp(Server):
    name = "python http.server"

    @classmethod
    def start(cls, services, root, log_path):
        port = free_port()
        argv = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", root,
                str(port)]
        proc = services.start("http.server", argv, log_path)
        wait_listening(port, proc)
        return cls(services, proc, port)


class Rsyncd(Server):
    """rsync daemon; it forks a process per client, whose CPU it collects on reaping."""

    name = "rsync daemon"
    include_children_cpu = True

    @classmethod
    def start(cls, services, cfg_dir, root, log_path):
        port = free_port()
        conf = os.path.join(cfg_dir, f"rsyncd-{port}.conf")
        ids = "uid = root\ngid = root\n" if os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write(
                f"use chroot = no\npid file = {cfg_dir}/rsyncd-{port}.pid\n"
                f"log file = {cfg_dir}/rsyncd-{port}.log\n"
                f"[data]\npath = {root}\nread only = no\n{ids}"
            )
        argv = ["rsync", "--daemon", "--no-detach", "--config", conf, "--port", str(port),
                "--address", "127.0.0.1"]
        proc = services.start("rsyncd", argv, log_path)
        wait_listening(port, proc)
        return cls(services, proc, port)

    def url(self, path):
        return f"rsync://127.0.0.1:{self.port}/data/{path}"
