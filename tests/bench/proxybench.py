#!/usr/bin/env python3
"""Side-by-side benchmark of circuitproxyd, HAProxy and nginx on loopback.

Started by `make bench`. It installs nothing: it checks that the tools it
drives are there (Debian packages haproxy, nginx, libnginx-mod-stream, wrk,
iperf3) and names the missing ones. Everything runs on 127.0.0.1, on ports
above the ephemeral range, bounded in time; every process it starts is
stopped at the end, also on error or Ctrl-C.

Targets: direct (no proxy), circuitproxyd with 1 and 2 workers, HAProxy
`mode tcp` with 1 and 2 threads, nginx stream with 1 and 2 workers. Rows:
wrk keep-alive and one-connection-per-request (requests/s, p50, p99, proxy
CPU per request), keep-alive again while the admin endpoint's /metrics and
/stats are each scraped 10 times a second (circuitproxyd only), iperf3 with 1 and 4 streams (Gbit/s, proxy CPU per GB),
fast-fail with the server down / circuit open (closes/s, p50, p99), idle
RSS and RSS per idle relayed connection. Each round restarts the proxies
and runs every row for every target in turn (the order rotates per round);
the table shows medians over the rounds, with ratios to direct and to
HAProxy at the same worker count. Results go to results/latest.json and
results/latest.md next to this script unless told otherwise.
"""

import argparse
import glob
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
LOOPBACK = "127.0.0.1"
BODY_BYTES = 100
URL_PATH = "/f100"

# The Debian package that provides each thing we need, and how to find it.
REQUIREMENTS = [
    ("haproxy", lambda: shutil.which("haproxy")),
    ("nginx", lambda: shutil.which("nginx")),
    ("libnginx-mod-stream", lambda: os.path.exists(STREAM_MODULE)),
    ("wrk", lambda: shutil.which("wrk")),
    ("iperf3", lambda: shutil.which("iperf3")),
]

# Every target: id, label, kind, worker count, variant. "splice" is HAProxy
# with `option splice-auto`; "nosplice" is circuitproxyd with splice = off.
ALL_TARGETS = [
    ("direct", "direct", "direct", 0, None),
    ("circuitproxyd-1", "circuitproxyd 1w", "circuitproxyd", 1, None),
    ("circuitproxyd-2", "circuitproxyd 2w", "circuitproxyd", 2, None),
    ("haproxy-1", "HAProxy 1t", "haproxy", 1, None),
    ("haproxy-2", "HAProxy 2t", "haproxy", 2, None),
    ("haproxy-splice-1", "HAProxy 1t splice-auto", "haproxy", 1, "splice"),
    ("nginx-1", "nginx 1w", "nginx", 1, None),
    ("nginx-2", "nginx 2w", "nginx", 2, None),
    ("circuitproxyd-nosplice-1", "circuitproxyd 1w splice=off",
     "circuitproxyd", 1, "nosplice"),
    # What a connection log and the PROXY header cost, beside circuitproxyd-1
    # and haproxy-1: keep-alive and new-connection rows only.
    ("circuitproxyd-connlog-1", "circuitproxyd 1w log_connections",
     "circuitproxyd", 1, "connlog"),
    ("haproxy-tcplog-1", "HAProxy 1t tcplog", "haproxy", 1, "tcplog"),
    ("circuitproxyd-proxyv2-1", "circuitproxyd 1w send_proxy=v2",
     "circuitproxyd", 1, "proxyv2"),
    # A pool of three members, all on the backend (poolbench.py times
    # them; here for the counts).
    ("circuitproxyd-pool-1", "circuitproxyd 1w pool of 3", "circuitproxyd",
     1, "pool"),
    ("haproxy-pool-1", "HAProxy 1t 3-server backend", "haproxy", 1, "pool"),
]
# Variants measured only on the request rows (LOG_TESTS).
LOG_VARIANTS = {"connlog", "tcplog", "proxyv2"}
LOG_TESTS = {"keepalive", "close"}
# Left out unless --targets names them.
OPTIONAL_TARGETS = {"circuitproxyd-nosplice-1", "circuitproxyd-pool-1",
                    "haproxy-pool-1"}

# The rows of the table: key, label, better ("hi"/"lo"), format, ratio to direct?
METRICS = [
    ("ka_rps", "keep-alive: requests/s", "hi", "k", True),
    ("ka_p50_ms", "keep-alive: p50 latency (ms)", "lo", "3", True),
    ("ka_p99_ms", "keep-alive: p99 latency (ms)", "lo", "3", True),
    ("ka_cpu_us", "keep-alive: proxy CPU per request (µs)", "lo", "1", False),
    ("ks_rps", "keep-alive, /metrics and /stats scraped 10/s each: "
     "requests/s", "hi", "k", True),
    ("ks_p99_ms", "keep-alive, scraped: p99 latency (ms)", "lo", "3", True),
    ("ks_cpu_us", "keep-alive, scraped: proxy CPU per request (µs)", "lo",
     "1", False),
    ("cc_rps", "new connection per request: requests/s", "hi", "k", True),
    ("cc_p50_ms", "new connection per request: p50 (ms)", "lo", "3", True),
    ("cc_p99_ms", "new connection per request: p99 (ms)", "lo", "3", True),
    ("cc_cpu_us", "new connection per request: proxy CPU per request (µs)",
     "lo", "1", False),
    ("ip1_gbps", "iperf3 1 stream: Gbit/s", "hi", "2", True),
    ("ip1_cpu_s_gb", "iperf3 1 stream: proxy CPU per GB (s)", "lo", "3", False),
    ("ip4_gbps", "iperf3 4 streams: Gbit/s", "hi", "2", True),
    ("ip4_cpu_s_gb", "iperf3 4 streams: proxy CPU per GB (s)", "lo", "3", False),
    ("ff_cps", "server down, 64 clients: closes/s", "hi", "k", True),
    ("ff_p50_us", "server down: p50 connect-to-close (µs)", "lo", "0", True),
    ("ff_p99_us", "server down: p99 connect-to-close (µs)", "lo", "0", True),
    ("ff_cpu_us", "server down: proxy CPU per close (µs)", "lo", "1", False),
    ("idle_rss_mib", "idle RSS, fresh process (MiB)", "lo", "1", False),
    ("mem_kib_conn", "RSS per idle relayed connection (KiB)", "lo", "2", False),
]


class BenchError(Exception):
    """A failure that ends the benchmark with a message."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: stop like Ctrl-C."""


def on_signal(signum, _frame):
    """Turn a termination signal into an exception so cleanup runs."""
    raise Interrupted("signal %d" % signum)


def log(msg):
    """Progress on stderr, so stdout keeps only the table."""
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# ---------------------------------------------------------------- processes

class Proc:
    """One long-running process we started, in its own process group."""

    registry = []

    def __init__(self, name, argv, logpath, env=None):
        self.name = name
        self.argv = argv
        self.logpath = logpath
        self.logf = open(logpath, "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                  stdout=self.logf, stderr=subprocess.STDOUT,
                                  env=env, start_new_session=True)
        self.pid = self.p.pid
        Proc.registry.append(self)

    def alive(self):
        """True while the process has not exited."""
        return self.p.poll() is None

    def pids(self):
        """The process and its children (nginx workers)."""
        out = [self.pid]
        try:
            with open("/proc/%d/task/%d/children" % (self.pid, self.pid)) as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
        return out

    def cpu_seconds(self):
        """utime+stime of the process (all its threads) and its children."""
        total = 0
        for pid in self.pids():
            try:
                with open("/proc/%d/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        return total / CLK_TCK

    def rss_kib(self):
        """Resident set size in KiB, summed over the process and children."""
        total = 0
        for pid in self.pids():
            try:
                with open("/proc/%d/statm" % pid) as f:
                    total += int(f.read().split()[1]) * PAGE_KIB
            except (OSError, IndexError, ValueError):
                pass
        return total

    def log_tail(self, n=15):
        """The last lines of its output, for error reports."""
        try:
            with open(self.logpath, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""

    def stop(self, grace=5.0):
        """SIGTERM the process group, then SIGKILL after the grace time."""
        if self in Proc.registry:
            Proc.registry.remove(self)
        try:
            if self.p.poll() is None:
                os.killpg(self.pid, signal.SIGTERM)
                try:
                    self.p.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
            # Also take out children left behind (nginx workers).
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.p.wait(2)
        except subprocess.TimeoutExpired:
            pass
        self.logf.close()

    @classmethod
    def stop_all(cls):
        """Stop everything still running, newest first."""
        for proc in list(reversed(cls.registry)):
            proc.stop(grace=3.0)


def port_free(port):
    """True if nothing listens on 127.0.0.1:port (TIME_WAIT is fine)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((LOOPBACK, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_port(port, proc, timeout=10.0):
    """Wait until 127.0.0.1:port accepts, failing if proc exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise BenchError("%s exited with status %s while starting:\n%s"
                             % (proc.name, proc.p.returncode, proc.log_tail()))
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError("%s: port %d did not accept within %.0fs:\n%s"
                     % (proc.name if proc else "?", port, timeout,
                        proc.log_tail() if proc else ""))


def http_get(port, timeout=3.0):
    """One GET of the 100-byte file; returns (status, body length)."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close"
                   "\r\n\r\n" % URL_PATH).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return (int(m.group(1)) if m else None), len(body)


def wait_closed(port, timeout=3.0):
    """Connect and wait for the other side to close or reset; True if so."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
            s.recv(1)
        return True
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- configs

class Layout:
    """The temp dir and ports of one run."""

    def __init__(self, tmp, base, nofile, idle_conns):
        self.tmp = tmp
        self.base = base
        self.nofile = nofile
        self.idle_conns = idle_conns
        self.backend_http = base
        self.backend_iperf = base + 1
        self.dead = base + 2
        self.backend_pp = base + 3  # the backend nginx with proxy_protocol
        self.backend_procs = []

    def ports(self, index):
        """Listen ports (http, iperf, down) of the proxy target number index."""
        p = self.base + 10 + 10 * index
        return p, p + 1, p + 2

    def admin_port(self, index):
        """The admin port of circuitproxyd as target number index."""
        return self.base + 10 + 10 * index + 3

    def all_ports(self, ntargets):
        out = [self.backend_http, self.backend_iperf, self.dead,
               self.backend_pp]
        for i in range(ntargets):
            out += list(self.ports(i)) + [self.admin_port(i)]
        return out


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def nginx_common(prefix, workers, nofile):
    """The top of every nginx config we write."""
    return ("worker_processes %d;\n"
            "daemon off;\n"
            "master_process on;\n"
            "pid %s/nginx.pid;\n"
            "error_log %s/error.log warn;\n"
            "worker_rlimit_nofile %d;\n"
            "events { worker_connections %d; }\n"
            % (workers, prefix, prefix, nofile, nofile - 64))


def start_backend(lay, workers):
    """The backend nginx (the 100-byte file) and iperf3 -s."""
    prefix = os.path.join(lay.tmp, "backend")
    www = os.path.join(prefix, "www")
    os.makedirs(www)
    write(os.path.join(www, URL_PATH.lstrip("/")), "x" * (BODY_BYTES - 1) + "\n")
    for d in (lay.tmp, prefix, www):
        os.chmod(d, 0o755)
    os.chmod(os.path.join(www, URL_PATH.lstrip("/")), 0o644)
    conf = os.path.join(prefix, "nginx.conf")
    tmpdirs = "".join("    %s_temp_path %s/%s_temp;\n" % (t, prefix, t)
                      for t in ("client_body", "proxy", "fastcgi", "uwsgi",
                                "scgi"))
    write(conf, nginx_common(prefix, workers, lay.nofile) +
          "http {\n"
          "    access_log off;\n"
          "    default_type application/octet-stream;\n"
          "    keepalive_timeout 600s;\n"
          "    keepalive_requests 100000000;\n"
          "    client_header_timeout 600s;\n"
          + tmpdirs +
          "    server {\n"
          "        listen %s:%d backlog=4096;\n"
          "        root %s;\n"
          "    }\n"
          "    server {\n"
          "        listen %s:%d backlog=4096 proxy_protocol;\n"
          "        root %s;\n"
          "    }\n"
          "}\n" % (LOOPBACK, lay.backend_http, www,
                   LOOPBACK, lay.backend_pp, www))
    web = Proc("backend-nginx", ["nginx", "-p", prefix, "-e",
                                 os.path.join(prefix, "error.log"), "-c", conf],
               os.path.join(lay.tmp, "backend-nginx.log"))
    wait_port(lay.backend_http, web)
    status, blen = http_get(lay.backend_http)
    if status != 200 or blen != BODY_BYTES:
        raise BenchError("backend nginx answers %s with %d bytes" % (status, blen))
    iperf = start_iperf(lay)
    return web, iperf


def start_iperf(lay):
    """iperf3 -s on its port; readiness by the port accepting."""
    proc = Proc("backend-iperf3", ["iperf3", "-s", "-B", LOOPBACK,
                                   "-p", str(lay.backend_iperf)],
                os.path.join(lay.tmp, "backend-iperf3.log"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError("iperf3 -s exited:\n" + proc.log_tail())
        if not port_free(lay.backend_iperf):
            return proc
        time.sleep(0.05)
    raise BenchError("iperf3 -s did not bind port %d" % lay.backend_iperf)


def restart_iperf(lay):
    """Replace the iperf3 server (kept last in lay.backend_procs)."""
    lay.backend_procs[-1].stop()
    lay.backend_procs[-1] = start_iperf(lay)


class Target:
    """One thing under test: its listen ports and, for proxies, a process."""

    def __init__(self, tid, label, kind, workers, variant=None):
        self.id = tid
        self.label = label
        self.kind = kind
        self.workers = workers
        self.variant = variant
        self.wrapper = []  # argv prefix, e.g. valgrind for the counts
        self.proc = None
        self.ports = None
        self.broken = None  # why it was skipped in the current round

    def start(self, lay, index, circuitproxyd):
        self.broken = None
        if self.kind == "direct":
            self.ports = (lay.backend_http, lay.backend_iperf, lay.dead)
            return
        self.ports = lay.ports(index)
        self.admin = lay.admin_port(index) if self.kind == "circuitproxyd" \
            else None
        getattr(self, "_start_" + self.kind)(lay, circuitproxyd)

    def _start_circuitproxyd(self, lay, binary):
        http, iperf, down = self.ports
        conf = os.path.join(lay.tmp, "%s.ini" % self.id)
        write(conf,
              "[global]\n"
              "log_level = warning\n"
              "workers = %d\n"
              "admin = %s:%d\n"
              "\n"
              "[upstream:bench]\n"
              "listen = %s:%d\n"
              "server = %s:%d\n"
              "connect_timeout = 2s\n"
              "\n"
              "[upstream:bench_iperf]\n"
              "listen = %s:%d\n"
              "server = %s:%d\n"
              "connect_timeout = 2s\n"
              "\n"
              "[upstream:bench_down]\n"
              "listen = %s:%d\n"
              "server = %s:%d\n"
              "connect_timeout = 2s\n"
              "failure_threshold = 3\n"
              "recovery_timeout = 1h\n"
              "recovery_timeout_max = 1h\n"
              "reject = %s\n"
              % (self.workers, LOOPBACK, self.admin, LOOPBACK, http,
                 LOOPBACK, lay.backend_http,
                 LOOPBACK, iperf, LOOPBACK, lay.backend_iperf,
                 LOOPBACK, down, LOOPBACK, lay.dead, lay.reject))
        if self.variant == "nosplice":
            with open(conf) as f:
                text = f.read()
            write(conf, text.replace("[upstream:bench]",
                                     "[defaults]\nsplice = off\n\n"
                                     "[upstream:bench]", 1))
        elif self.variant == "connlog":
            # event=conn is info: every line goes to the log file (stderr).
            with open(conf) as f:
                text = f.read()
            write(conf, text.replace("log_level = warning",
                                     "log_level = info", 1).replace(
                "connect_timeout = 2s\n",
                "connect_timeout = 2s\nlog_connections = yes\n", 1))
        elif self.variant == "pool":
            with open(conf) as f:
                text = f.read()
            one = ("[upstream:bench]\nlisten = %s:%d\nserver = %s:%d\n"
                   "connect_timeout = 2s\n" % (LOOPBACK, http, LOOPBACK,
                                                lay.backend_http))
            members = "".join(
                "[upstream:bench_m%d]\nserver = %s:%d\nconnect_timeout = 2s"
                "\n\n" % (i, LOOPBACK, lay.backend_http) for i in range(3))
            write(conf, text.replace(one, members + (
                "[pool:bench]\nlisten = %s:%d\n"
                "members = bench_m0 bench_m1 bench_m2\n" % (LOOPBACK, http)),
                1))
        elif self.variant == "proxyv2":
            with open(conf) as f:
                text = f.read()
            write(conf, text.replace(
                "server = %s:%d\nconnect_timeout = 2s\n"
                % (LOOPBACK, lay.backend_http),
                "server = %s:%d\nconnect_timeout = 2s\nsend_proxy = v2\n"
                % (LOOPBACK, lay.backend_pp), 1))
        nsock_path = os.path.join(lay.tmp, "%s.notify" % self.id)
        if os.path.exists(nsock_path):
            os.unlink(nsock_path)
        nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            nsock.bind(nsock_path)
            env = dict(os.environ, NOTIFY_SOCKET=nsock_path)
            self.proc = Proc(self.id, self.wrapper + [binary, "-c", conf],
                             os.path.join(lay.tmp, "%s.log" % self.id), env=env)
            self.ready_how = wait_notify(nsock, self.proc,
                                         60.0 if self.wrapper else 10.0)
        finally:
            nsock.close()
        wait_port(http, self.proc)

    def _start_haproxy(self, lay, _binary):
        http, iperf, down = self.ports
        conf = os.path.join(lay.tmp, "%s.cfg" % self.id)
        self.stats_sock = os.path.join(lay.tmp, "%s.sock" % self.id)
        # Two descriptors a connection, and with splice a pipe per four.
        maxconn = (lay.nofile - 200) // (3 if self.variant == "splice" else 2)
        write(conf,
              "global\n"
              "    nbthread %d\n"
              "    maxconn %d\n"
              "    stats socket %s mode 600 level admin\n"
              "\n"
              "defaults\n"
              "    mode tcp\n"
              "    maxconn %d\n"
              "    timeout connect 2s\n"
              "    timeout client 10m\n"
              "    timeout server 10m\n"
              "%s"
              "%s"
              "\n"
              "frontend http_in\n"
              "    bind %s:%d\n"
              "    default_backend http_be\n"
              "backend http_be\n"
              "    server web %s:%d\n"
              "\n"
              "frontend iperf_in\n"
              "    bind %s:%d\n"
              "    default_backend iperf_be\n"
              "backend iperf_be\n"
              "    server iperf %s:%d\n"
              "\n"
              "frontend down_in\n"
              "    bind %s:%d\n"
              "    default_backend down_be\n"
              "backend down_be\n"
              "    server dead %s:%d check inter 1s\n"
              % (self.workers, maxconn, self.stats_sock, maxconn,
                 "    option splice-auto\n" if self.variant == "splice"
                 else "",
                 # tcplog: one line per connection, to stdout = the log file
                 "    log stdout format raw local0\n"
                 "    option tcplog\n" if self.variant == "tcplog" else "",
                 LOOPBACK, http, LOOPBACK, lay.backend_http,
                 LOOPBACK, iperf, LOOPBACK, lay.backend_iperf,
                 LOOPBACK, down, LOOPBACK, lay.dead))
        if self.variant == "pool":
            web = "    server web %s:%d\n" % (LOOPBACK, lay.backend_http)
            with open(conf) as f:
                text = f.read()
            write(conf, text.replace(web, "    balance roundrobin\n" + "".join(
                web.replace("web", "web%d" % i) for i in range(3)), 1))
        self.proc = Proc(self.id, self.wrapper + ["haproxy", "-db", "-f",
                                                  conf],
                         os.path.join(lay.tmp, "%s.log" % self.id))
        wait_port(http, self.proc, 60.0 if self.wrapper else 10.0)

    def _start_nginx(self, lay, _binary):
        http, iperf, down = self.ports
        prefix = os.path.join(lay.tmp, self.id)
        os.makedirs(prefix, exist_ok=True)
        conf = os.path.join(prefix, "nginx.conf")
        write(conf,
              "load_module %s;\n" % STREAM_MODULE +
              nginx_common(prefix, self.workers, lay.nofile) +
              "stream {\n"
              "    proxy_connect_timeout 2s;\n"
              "    server { listen %s:%d; proxy_pass %s:%d; }\n"
              "    server { listen %s:%d; proxy_pass %s:%d; }\n"
              "    server { listen %s:%d; proxy_pass %s:%d; }\n"
              "}\n"
              % (LOOPBACK, http, LOOPBACK, lay.backend_http,
                 LOOPBACK, iperf, LOOPBACK, lay.backend_iperf,
                 LOOPBACK, down, LOOPBACK, lay.dead))
        self.proc = Proc(self.id, ["nginx", "-p", prefix, "-e",
                                   os.path.join(prefix, "error.log"), "-c", conf],
                         os.path.join(lay.tmp, "%s.log" % self.id))
        wait_port(http, self.proc)

    def check(self):
        """One request through the target must give the 100-byte file."""
        try:
            status, blen = http_get(self.ports[0])
        except OSError as e:
            return "GET %s through port %d failed: %s" % (URL_PATH,
                                                         self.ports[0], e)
        if status != 200 or blen != BODY_BYTES:
            return ("GET %s through port %d gave status %s with %d body bytes"
                    % (URL_PATH, self.ports[0], status, blen))
        return None

    def prepare_down(self):
        """Get the dead-server path into its steady state; None or a problem."""
        down = self.ports[2]
        if self.kind == "circuitproxyd":
            for _ in range(6):
                wait_closed(down)
            time.sleep(0.2)
            with open(self.proc.logpath, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            if not re.search(r"event=state upstream=bench_down from=closed "
                             r"to=open", text):
                return "no 'event=state upstream=bench_down ... to=open' " \
                       "line after 6 refused attempts"
        elif self.kind == "haproxy":
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if haproxy_server_status(self.stats_sock, "down_be",
                                         "dead").startswith("DOWN"):
                    return None
                time.sleep(0.25)
            return "health check did not mark the dead server DOWN in 15s"
        return None

    def stop(self):
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def cpu(self):
        return self.proc.cpu_seconds() if self.proc else None


def wait_notify(sock, proc, timeout):
    """Wait for READY=1 on the notify socket; falls back to the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError("%s exited with status %s while starting:\n%s"
                             % (proc.name, proc.p.returncode, proc.log_tail()))
        sock.settimeout(0.1)
        try:
            msg = sock.recv(4096).decode("utf-8", "replace")
        except socket.timeout:
            continue
        if "READY=1" in msg.split("\n"):
            return "sd_notify"
    return "port"


def haproxy_server_status(path, backend, server):
    """The status column of one server in HAProxy's `show stat`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(path)
            s.sendall(b"show stat\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    if not lines or not lines[0].startswith("# "):
        return ""
    cols = lines[0][2:].split(",")
    try:
        i_px, i_sv, i_st = (cols.index("pxname"), cols.index("svname"),
                            cols.index("status"))
    except ValueError:
        return ""
    for line in lines[1:]:
        f = line.split(",")
        if len(f) > i_st and f[i_px] == backend and f[i_sv] == server:
            return f[i_st]
    return ""


# ---------------------------------------------------------------- host CPU

def host_cpu():
    """Task-context, interrupt and steal CPU seconds of the machine (/proc/stat).

    Interrupt and softirq time (where loopback packets are processed) is kept
    apart: /proc/stat counts it there, the processes' own times include it.
    """
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]] + [0] * 8
    # user nice system idle iowait irq softirq steal ...
    return ((v[0] + v[1] + v[2]) / CLK_TCK, (v[5] + v[6]) / CLK_TCK,
            v[7] / CLK_TCK)


class HostMeter:
    """How much CPU others (not the bench's own processes) took during a run."""

    def __init__(self, ours):
        self.ours = ours  # the Procs we started that are up (proxy, backend)

    def _ours(self):
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return (ch.ru_utime + ch.ru_stime + me.ru_utime + me.ru_stime +
                sum(p.cpu_seconds() for p in self.ours if p is not None))

    def __enter__(self):
        self.t0 = time.monotonic()
        self.host0 = host_cpu()
        self.ours0 = self._ours()
        return self

    def __exit__(self, *exc):
        wall = time.monotonic() - self.t0
        task, irq, steal = (b - a for a, b in zip(self.host0, host_cpu()))
        ours = self._ours() - self.ours0
        cap = wall * os.cpu_count()
        self.result = {
            "wall_s": round(wall, 3), "task_s": round(task, 2),
            "ours_s": round(ours, 2), "irq_s": round(irq, 2),
            "steal_s": round(steal, 2),
            # Our processes are charged the softirq time spent in their
            # context, so theirs is what remains of task plus irq time.
            "others_share": round(max(0.0, task + irq - ours) / cap, 3)
            if cap else None,
        }
        return False


# ---------------------------------------------------------------- load

def parse_wrk_time(text):
    """wrk's '615.00us' / '1.23ms' / '2.00s' into milliseconds."""
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not m:
        return None
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]
    return float(m.group(1)) * scale


def run_wrk(port, seconds, close):
    """wrk -t1 -c50 --latency; returns a dict or raises BenchError."""
    argv = ["wrk", "-t1", "-c50", "-d%ds" % seconds, "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append("http://%s:%d%s" % (LOOPBACK, port, URL_PATH))
    try:
        r = subprocess.run(argv, capture_output=True, text=True,
                           timeout=seconds + 20)
    except subprocess.TimeoutExpired:
        raise BenchError("wrk did not finish: " + " ".join(argv))
    out = r.stdout
    res = {"cmd": " ".join(argv)}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if r.returncode != 0 or not m or not n:
        raise BenchError("wrk failed (%d): %s\n%s%s" % (r.returncode,
                         " ".join(argv), out[-800:], r.stderr[-400:]))
    res["rps"] = float(m.group(1))
    res["requests"] = int(n.group(1))
    for q in ("50", "99"):
        mq = re.search(r"^\s+%s%%\s+(\S+)" % q, out, re.M)
        res["p%s_ms" % q] = parse_wrk_time(mq.group(1)) if mq else None
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                   r"timeout (\d+)", out)
    res["socket_errors"] = ({k: int(v) for k, v in zip(
        ("connect", "read", "write", "timeout"), se.groups())} if se else {})
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(bad.group(1)) if bad else 0
    return res


class Scraper:
    """GET /metrics and GET /stats, each every 0.1 s on its own kept-alive
    connection, as Prometheus and the status page would, while a row runs."""

    def __init__(self, port):
        import http.client
        import threading
        self.port = port
        self.stop_ev = threading.Event()
        self.counts = {"/metrics": 0, "/stats": 0}
        self.errors = []
        self.threads = [threading.Thread(target=self._loop, args=(path,),
                                         daemon=True)
                        for path in self.counts]
        self.http_client = http.client

    def _loop(self, path):
        conn = None
        next_t = time.monotonic()
        while not self.stop_ev.is_set():
            try:
                if conn is None:
                    conn = self.http_client.HTTPConnection(LOOPBACK, self.port,
                                                           timeout=3)
                conn.request("GET", path)
                r = conn.getresponse()
                body = r.read()
                if r.status != 200 or not body:
                    self.errors.append("%s: %d" % (path, r.status))
                else:
                    self.counts[path] += 1
            except (OSError, self.http_client.HTTPException) as e:
                self.errors.append("%s: %s" % (path, e))
                if conn is not None:
                    conn.close()
                conn = None
            next_t += 0.1
            self.stop_ev.wait(max(0.0, next_t - time.monotonic()))
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.threads:
            t.join(5)


def run_iperf(port, seconds, streams):
    """iperf3 client through the port; retried while the server is busy."""
    argv = ["iperf3", "-c", LOOPBACK, "-p", str(port), "-t", str(seconds),
            "-P", str(streams), "-J"]
    last = ""
    for attempt in range(3):
        try:
            r = subprocess.run(argv, capture_output=True, text=True,
                               timeout=seconds + 20)
        except subprocess.TimeoutExpired:
            raise BenchError("iperf3 did not finish: " + " ".join(argv))
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            doc = {}
        err = doc.get("error")
        end = doc.get("end", {}).get("sum_received")
        if r.returncode == 0 and not err and end:
            return {"cmd": " ".join(argv), "gbps": end["bits_per_second"] / 1e9,
                    "bytes": end["bytes"], "seconds": end["seconds"]}
        last = err or (r.stdout[-400:] + r.stderr[-400:])
        if err and "busy" in err:
            time.sleep(1.0 + attempt)
            continue
        break
    raise BenchError("iperf3 failed: %s: %s" % (" ".join(argv), last))


# What a flood client sends first, by the server-down upstream's reject
# (--reject): what a client of that protocol sends before it reads.
FLOOD_REQUESTS = {
    "redis": "*1\\r\\n$4\\r\\nPING\\r\\n",
    "postgres": "\\x00\\x00\\x00\\x08\\x04\\xd2\\x16\\x2f"   # SSLRequest
                "\\x00\\x00\\x00\\x14\\x00\\x03\\x00\\x00user\\x00bench\\x00\\x00",
}


def run_flood(connflood, port, seconds, concurrency, request=None):
    """connflood in flood mode against the port; its JSON result."""
    argv = [connflood, "-m", "flood", "-a", "%s:%d" % (LOOPBACK, port),
            "-c", str(concurrency), "-d", str(seconds), "-t", "3000",
            "-n", "50000000"] + (["-r", request] if request else [])
    try:
        r = subprocess.run(argv, capture_output=True, text=True,
                           timeout=seconds + 20)
    except subprocess.TimeoutExpired:
        raise BenchError("connflood did not finish: " + " ".join(argv))
    if r.returncode != 0:
        raise BenchError("connflood failed: %s\n%s" % (" ".join(argv), r.stderr))
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["cmd"] = " ".join(argv)
    return res


def run_hold(connflood, target, count, problems):
    """Idle relayed connections through the target: RSS growth per conn."""
    port = target.ports[0]
    req = "GET %s HTTP/1.1\\r\\nHost: bench\\r\\n\\r\\n" % URL_PATH
    argv = [connflood, "-m", "hold", "-a", "%s:%d" % (LOOPBACK, port),
            "-n", str(count), "-c", "256", "-d", "180", "-t", "10000",
            "-r", req]
    time.sleep(0.5)
    rss0 = target.proc.rss_kib()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        ready = wait_line(p, 90)
        if ready is None:
            raise BenchError("connflood hold gave no ready line in 90s: "
                             + " ".join(argv))
        res = json.loads(ready)
        time.sleep(1.0)
        rss1 = target.proc.rss_kib()
        if not target.proc.alive():
            raise BenchError("%s exited while holding %d connections:\n%s" % (
                target.label, res.get("held", 0), target.proc.log_tail()))
        p.stdin.close()
        done = wait_line(p, 20)
        if done:
            res.update({"dropped": json.loads(done).get("dropped")})
    finally:
        if p.poll() is None:
            try:
                p.kill()
            except ProcessLookupError:
                pass
        p.wait(5)
    held = res.get("held", 0)
    if held < count:
        problems.append("%s: only %d of %d idle connections were relayed "
                        "(failed %s, timeouts %s)" % (
                            target.label, held, count, res.get("failed"),
                            res.get("timeouts")))
    if res.get("dropped"):
        problems.append("%s: %s idle connections were closed by the proxy "
                        "while held" % (target.label, res["dropped"]))
    res.update({"cmd": " ".join(argv), "rss_idle_kib": rss0,
                "rss_loaded_kib": rss1,
                "kib_per_conn": (rss1 - rss0) / held if held else None})
    # Let the proxy and backend finish the closes before the next target.
    time.sleep(1.0)
    return res


def wait_line(p, timeout):
    """One line from a child's stdout within timeout seconds, or None."""
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    try:
        if sel.select(timeout):
            line = p.stdout.readline()
            return line.strip() or None
        return None
    finally:
        sel.close()


# ---------------------------------------------------------------- rows

def measure(target, test, args, lay, problems):
    """Run one row for one target; returns {metric: value, ...} and raw."""
    http, iperf, down = target.ports
    cpu0 = target.cpu()
    out = {}
    if test == "keepalive" or test == "close":
        r = run_wrk(http, args.duration, close=(test == "close"))
        pre = "ka" if test == "keepalive" else "cc"
        out = {pre + "_rps": r["rps"], pre + "_p50_ms": r["p50_ms"],
               pre + "_p99_ms": r["p99_ms"]}
        errs = sum(r["socket_errors"].values()) if r["socket_errors"] else 0
        if r["non_2xx"] or errs:
            problems.append("%s, %s: wrk saw %d non-2xx responses and socket "
                            "errors %s" % (target.label, test, r["non_2xx"],
                                           r["socket_errors"]))
        if cpu0 is not None and r["requests"]:
            out[pre + "_cpu_us"] = (target.cpu() - cpu0) / r["requests"] * 1e6
    elif test == "scraped":
        with Scraper(target.admin) as sc:
            r = run_wrk(http, args.duration, close=False)
        out = {"ks_rps": r["rps"], "ks_p99_ms": r["p99_ms"]}
        r["scrapes"] = dict(sc.counts)
        if cpu0 is not None and r["requests"]:
            out["ks_cpu_us"] = (target.cpu() - cpu0) / r["requests"] * 1e6
        want = 10 * args.duration
        for path, n in sc.counts.items():
            if n < want * 0.8:
                problems.append("%s, scraped: %d scrapes of %s in %d s, "
                                "%d wanted" % (target.label, n, path,
                                               args.duration, want))
        if sc.errors:
            problems.append("%s, scraped: %d failed scrapes, first: %s"
                            % (target.label, len(sc.errors), sc.errors[0]))
    elif test in ("iperf1", "iperf4"):
        streams = 1 if test == "iperf1" else 4
        r = run_iperf(iperf, args.duration, streams)
        pre = "ip%d" % streams
        out = {pre + "_gbps": r["gbps"]}
        if cpu0 is not None and r["bytes"]:
            out[pre + "_cpu_s_gb"] = (target.cpu() - cpu0) / (r["bytes"] / 1e9)
    elif test == "fastfail":
        r = run_flood(args.connflood, down, args.flood_seconds, 64,
                      FLOOD_REQUESTS.get(args.reject))
        out = {"ff_cps": r["closes_per_s"], "ff_p50_us": r["p50_us"],
               "ff_p99_us": r["p99_us"]}
        kinds = [k for k in ("refused", "reset", "fin") if r[k]]
        r["how"] = "+".join(kinds) if kinds else "none"
        if r["timeouts"] or r["errors"]:
            problems.append("%s, server down: %d connects timed out (3s), %d "
                            "errors" % (target.label, r["timeouts"],
                                        r["errors"]))
        if cpu0 is not None and r["closes"]:
            out["ff_cpu_us"] = (target.cpu() - cpu0) / r["closes"] * 1e6
    elif test == "memory":
        r = run_hold(args.connflood, target, lay.idle_conns, problems)
        out = {"idle_rss_mib": r["rss_idle_kib"] / 1024.0,
               "mem_kib_conn": r["kib_per_conn"]}
    else:
        raise AssertionError(test)
    return out, r


def measure_quiet(target, test, args, lay, problems):
    """measure(), run once more if other processes took much of the CPU.

    On a shared machine a build next door can halve a row. A run during
    which others used more than --max-others of the CPU is repeated once,
    while the time budget for repeats (--retry-budget) lasts; the quieter
    of the two is kept. The memory row does not depend on CPU: never repeated.
    """
    best = None
    for attempt in range(2):
        with HostMeter([target.proc] + lay.backend_procs) as hm:
            metrics, raw = measure(target, test, args, lay, problems)
        raw["host_cpu"] = hm.result
        share = hm.result["others_share"] or 0.0
        if best is None or share < best[1]["host_cpu"]["others_share"]:
            best = (metrics, raw)
        if (test == "memory" or share <= args.max_others or attempt == 1 or
                args.retry_budget < hm.result["wall_s"]):
            break
        args.retry_budget -= hm.result["wall_s"]
        log("  others used %.0f%% of the CPU during that run: once more"
            % (100 * share))
        time.sleep(args.pause)
    best[1]["repeated"] = attempt == 1
    return best


TESTS = ["memory", "keepalive", "scraped", "close", "iperf1", "iperf4",
         "fastfail"]


def run_round(rnd, targets, args, lay, problems):
    """Start the proxies, run every row for every target in turn, stop them."""
    order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
    results = {t.id: {"metrics": {}, "raw": {}} for t in targets}
    try:
        for i, t in enumerate(targets):
            try:
                t.start(lay, i, args.circuitproxyd)
            except BenchError as e:
                t.broken = "did not start: %s" % e
                problems.append("round %d: %s %s" % (rnd + 1, t.label, t.broken))
                t.stop()
        for t in targets:
            if t.broken:
                continue
            why = t.check()
            if why:
                t.broken = why
                problems.append("round %d: %s: %s" % (rnd + 1, t.label, why))
        for test in [x for x in TESTS if x in args.tests.split(",")]:
            for t in order:
                if t.broken or (test == "memory" and t.kind == "direct"):
                    continue
                if test == "scraped" and t.kind != "circuitproxyd":
                    continue
                if t.variant in LOG_VARIANTS and test not in LOG_TESTS:
                    continue
                if test == "fastfail":
                    why = t.prepare_down()
                    if why:
                        problems.append("round %d: %s, server down: %s"
                                        % (rnd + 1, t.label, why))
                log("round %d/%d  %-9s  %s" % (rnd + 1, args.rounds, test,
                                                t.label))
                try:
                    metrics, raw = measure_quiet(t, test, args, lay, problems)
                    results[t.id]["metrics"].update(metrics)
                    results[t.id]["raw"][test] = raw
                except BenchError as e:
                    problems.append("round %d: %s, %s: %s" % (rnd + 1, t.label,
                                                             test, e))
                    results[t.id]["raw"][test] = {"error": str(e)}
                    if test.startswith("iperf"):
                        # A test cut short can leave iperf3 -s busy.
                        restart_iperf(lay)
                if t.proc is not None and not t.proc.alive():
                    t.broken = "exited with status %s during %s" % (
                        t.proc.p.returncode, test)
                    problems.append("round %d: %s %s; last log lines:\n%s" % (
                        rnd + 1, t.label, t.broken, t.proc.log_tail()))
                time.sleep(args.pause)
    finally:
        for t in targets:
            t.stop()
    return results


# ---------------------------------------------------------------- counts

# The fixed workloads of the counts: requests, connections, rejects, MiB.
COUNT_WORK = {"ka": 20000, "cc": 5000, "ff": 5000, "bulk_mib": 1024}
# The same, shorter, under callgrind (about 50 times slower).
CALLGRIND_WORK = {"ka": 2000, "cc": 1000, "ff": 1000}
COUNT_TARGETS = ("circuitproxyd-1,haproxy-1,haproxy-splice-1,"
                 "circuitproxyd-pool-1,haproxy-pool-1,"
                 "circuitproxyd-connlog-1,haproxy-tcplog-1,"
                 "circuitproxyd-proxyv2-1")
# The rows of the counts table: key, label.
COUNT_ROWS = [
    ("sys_ka", "system calls per keep-alive request"),
    ("sys_cc", "system calls per new connection (one request)"),
    ("sys_ff", "system calls per reject (server down)"),
    ("sys_mib", "system calls per MiB (iperf3 -n 1G)"),
    ("ins_ka", "user-space instructions per keep-alive request"),
    ("ins_cc", "user-space instructions per new connection"),
    ("ins_ff", "user-space instructions per reject"),
]


def http_load(port, total, conns, close, timeout=120.0):
    """total GETs through port, conns at once: keep-alive or one connection
    each (Connection: close). Returns how many completed."""
    req = ("GET %s HTTP/1.1\r\nHost: bench\r\n%s\r\n"
           % (URL_PATH, "Connection: close\r\n" if close else "")).encode()
    sel = selectors.DefaultSelector()
    issued = done = 0
    deadline = time.monotonic() + timeout

    def open_one():
        nonlocal issued
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        c.connect_ex((LOOPBACK, port))
        sel.register(c, selectors.EVENT_WRITE, {"buf": b"", "sent": False})
        issued += 1

    for _ in range(min(conns, total)):
        open_one()
    while done < total and time.monotonic() < deadline:
        for key, ev in sel.select(1.0):
            c, st = key.fileobj, key.data
            if ev & selectors.EVENT_WRITE:
                try:
                    c.send(req)
                except OSError:
                    sel.unregister(c)
                    c.close()
                    continue
                sel.modify(c, selectors.EVENT_READ, st)
                continue
            try:
                data = c.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            st["buf"] += data
            buf = st["buf"]
            end = buf.find(b"\r\n\r\n")
            m = re.search(rb"Content-Length: (\d+)", buf[:end]) \
                if end >= 0 else None
            complete = m is not None and len(buf) >= end + 4 + int(m.group(1))
            if data == b"":
                # Connection: close ends with the server's FIN.
                if close and complete:
                    done += 1
                sel.unregister(c)
                c.close()
                if close and issued < total:
                    open_one()
                continue
            if complete and not close:
                done += 1
                st["buf"] = buf[end + 4 + int(m.group(1)):]
                if issued < total:
                    issued += 1
                    c.send(req)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    sel.close()
    return done


def parse_strace(path):
    """strace -c's table: {syscall: calls}."""
    calls = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 5 or not re.match(r"^[\d.]+$", parts[0]):
                continue
            name = parts[-1]
            nums = parts[:-1]
            if name == "total":
                continue
            try:
                calls[name] = int(nums[3])
            except (IndexError, ValueError):
                pass
    return calls


def strace_run(target, lay, work):
    """Run work() with strace -c attached to every thread of the target:
    returns ({syscall: calls}, work's result)."""
    out = os.path.join(lay.tmp, "%s.strace" % target.id)
    # -p with -f takes every thread of the process ("attached with N
    # threads"); one line per process.
    tids = target.proc.pids()
    argv = ["strace", "-c", "-f", "-o", out]
    for t in tids:
        argv += ["-p", str(t)]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        # strace says "Process N attached" once per thread, on stderr.
        said = b""
        deadline = time.monotonic() + 10
        sel = selectors.DefaultSelector()
        sel.register(p.stderr, selectors.EVENT_READ)
        while (said.count(b"attached") < len(tids) and
               time.monotonic() < deadline):
            if sel.select(1.0):
                chunk = os.read(p.stderr.fileno(), 4096)
                if not chunk:
                    break
                said += chunk
        sel.close()
        attached = said.count(b"attached")
        if attached < len(tids):
            raise BenchError("strace attached to %d of %d processes of %s"
                             % (attached, len(tids), target.label))
        result = work()
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    return parse_strace(out), result


def count_work(target, test, lay, args, n):
    """The work of one count: returns the units done (requests, MiB...)."""
    http, iperf, down = target.ports
    if test == "ka":
        return http_load(http, n, 50, close=False)
    if test == "cc":
        return http_load(http, n, 50, close=True)
    if test == "ff":
        argv = [args.connflood, "-m", "flood", "-a", "%s:%d" % (LOOPBACK, down),
                "-c", "64", "-d", "120", "-t", "3000", "-n", str(n)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=150)
        if r.returncode != 0:
            raise BenchError("connflood failed: %s" % r.stderr)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        return res.get("closes", 0)
    if test == "bulk":
        argv = ["iperf3", "-c", LOOPBACK, "-p", str(iperf), "-n",
                "%dM" % n, "-J"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        doc = json.loads(r.stdout or "{}")
        end = doc.get("end", {}).get("sum_received")
        if r.returncode != 0 or not end:
            raise BenchError("iperf3 -n failed: %s" % r.stdout[-400:])
        return end["bytes"] / (1 << 20)
    raise AssertionError(test)


def count_syscalls(target, lay, args, problems):
    """System calls per unit of each fixed workload."""
    out, top = {}, {}
    work = [("ka", COUNT_WORK["ka"]), ("cc", COUNT_WORK["cc"]),
            ("ff", COUNT_WORK["ff"]), ("bulk", COUNT_WORK["bulk_mib"])]
    for test, n in work:
        if test == "ff":
            why = target.prepare_down()
            if why:
                problems.append("counts, %s: %s" % (target.label, why))
        log("counts  strace     %-5s %s" % (test, target.label))
        calls, done = strace_run(target, lay,
                                 lambda: count_work(target, test, lay, args, n))
        if not done:
            problems.append("counts, %s, %s: nothing done" % (target.label,
                                                              test))
            continue
        key = "sys_mib" if test == "bulk" else "sys_" + test
        out[key] = sum(calls.values()) / done
        top[key] = {k: round(v / done, 3) for k, v in sorted(
            calls.items(), key=lambda kv: -kv[1])}
    return out, top


def callgrind_total(path):
    """The instructions (Ir) of a callgrind dump."""
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    return None


def count_instructions(target, lay, args, problems):
    """User-space instructions per unit, the target run under callgrind."""
    out = {}
    prefix = os.path.join(lay.tmp, "cg.%s" % target.id)
    for test in ("ka", "cc", "ff"):
        n = CALLGRIND_WORK[test]
        if test == "ff":
            why = target.prepare_down()
            if why:
                problems.append("counts, %s: %s" % (target.label, why))
        log("counts  callgrind  %-5s %s" % (test, target.label))
        pid = str(target.proc.pid)
        subprocess.run(["callgrind_control", "-z", pid], capture_output=True,
                       timeout=60)
        done = count_work(target, test, lay, args, n)
        before = set(glob.glob(prefix + "*"))
        subprocess.run(["callgrind_control", "-d", pid], capture_output=True,
                       timeout=60)
        deadline = time.monotonic() + 30
        new = set()
        while not new and time.monotonic() < deadline:
            time.sleep(0.2)
            new = set(glob.glob(prefix + "*")) - before
        if not new or not done:
            problems.append("counts, %s, %s: no callgrind dump" %
                            (target.label, test))
            continue
        time.sleep(0.5)
        ir = callgrind_total(max(new, key=os.path.getmtime))
        if ir:
            out["ins_" + test] = ir / done
    return out


def run_counts(args, lay, problems):
    """The counts of every target named by --counts-targets."""
    want = args.counts_targets.split(",")
    results = {}
    if not shutil.which("strace") or not shutil.which("valgrind"):
        problems.append("counts skipped: strace and valgrind are needed "
                        "(apt-get install strace valgrind)")
        return results
    for i, t in enumerate(Target(*x) for x in ALL_TARGETS if x[0] in want):
        if t.kind not in ("circuitproxyd", "haproxy"):
            continue
        results[t.id] = {"label": t.label, "counts": {}, "top": {}}
        try:
            t.start(lay, i, args.circuitproxyd)
            why = t.check()
            if why:
                raise BenchError(why)
            c, top = count_syscalls(t, lay, args, problems)
            results[t.id]["counts"].update(c)
            results[t.id]["top"] = top
        except BenchError as e:
            problems.append("counts, %s: %s" % (t.label, e))
        finally:
            t.stop()
        if args.no_callgrind:
            continue
        t.wrapper = ["valgrind", "--tool=callgrind",
                     "--callgrind-out-file=%s/cg.%s.%%p" % (lay.tmp, t.id)]
        try:
            t.start(lay, i, args.circuitproxyd)
            why = t.check()
            if why:
                raise BenchError(why)
            results[t.id]["counts"].update(
                count_instructions(t, lay, args, problems))
        except BenchError as e:
            problems.append("counts, %s under callgrind: %s" % (t.label, e))
        finally:
            t.stop()
    return results


def counts_rows(results):
    """The counts table: a header, then one row per count."""
    ids = list(results)
    rows = [["count (fixed workload)"] + [results[i]["label"] for i in ids]]
    for key, label in COUNT_ROWS:
        row = [label]
        for i in ids:
            v = results[i]["counts"].get(key)
            row.append("—" if v is None else
                       ("%.0f" % v if v >= 100 else "%.2f" % v))
        rows.append(row)
    return rows


def counts_legend():
    return ("Counts on a fixed workload, one worker or thread each, not "
            "timed: system calls of the proxy (strace -c -f on every thread) "
            "over %d keep-alive requests (50 connections), %d new "
            "connections of one request each (50 at once), %d rejects with "
            "the server down (64 at once), and iperf3 -n %dM; user-space "
            "instructions (valgrind --tool=callgrind, counters zeroed after "
            "start) over %d keep-alive requests, %d new connections and %d "
            "rejects. These do not depend on the machine's load: they are "
            "the evidence for an optimisation."
            % (COUNT_WORK["ka"], COUNT_WORK["cc"], COUNT_WORK["ff"],
               COUNT_WORK["bulk_mib"], CALLGRIND_WORK["ka"],
               CALLGRIND_WORK["cc"], CALLGRIND_WORK["ff"]))


# ---------------------------------------------------------------- report

def fmt_value(v, how):
    if v is None:
        return "—"
    if how == "k":
        return "%.1fk" % (v / 1000.0) if v >= 1000 else "%.0f" % v
    return ("%." + how + "f") % v


def summarize(rounds, targets):
    """Medians (and min/max) per target and metric over the rounds."""
    med, spread = {}, {}
    for t in targets:
        med[t.id], spread[t.id] = {}, {}
        for key, *_ in METRICS:
            vals = [r[t.id]["metrics"][key] for r in rounds
                    if r[t.id]["metrics"].get(key) is not None]
            if vals:
                med[t.id][key] = statistics.median(vals)
                spread[t.id][key] = {"min": min(vals), "max": max(vals),
                                     "n": len(vals)}
    return med, spread


def ratios(med, targets):
    """value / direct and value / HAProxy with the same worker count."""
    out = {}
    for t in targets:
        out[t.id] = {}
        hap = "haproxy-%d" % t.workers
        for key, _label, _better, _fmt, vs_direct in METRICS:
            v = med.get(t.id, {}).get(key)
            if v is None:
                continue
            r = {}
            d = med.get("direct", {}).get(key)
            if vs_direct and d and t.id != "direct":
                r["vs_direct"] = v / d
            h = med.get(hap, {}).get(key)
            if t.kind != "haproxy" and t.kind != "direct" and h:
                r["vs_haproxy"] = v / h
            out[t.id][key] = r
    return out


def fastfail_how(rounds, tid):
    """How the fast-fail clients were turned away, e.g. 'reset' or 'fin'."""
    hows = {r[tid]["raw"].get("fastfail", {}).get("how") for r in rounds}
    hows.discard(None)
    return "/".join(sorted(hows)) if hows else "—"


def table_rows(med, rat, targets, rounds):
    """Rows of cells: the header then one row per metric."""
    header = ["row"] + [t.label for t in targets]
    rows = [header]
    for key, label, better, how, _ in METRICS:
        row = [label + (" ↑" if better == "hi" else " ↓")]
        for t in targets:
            v = med.get(t.id, {}).get(key)
            cell = fmt_value(v, how)
            r = rat.get(t.id, {}).get(key, {})
            parts = []
            if "vs_direct" in r:
                parts.append("%.2f d" % r["vs_direct"])
            if "vs_haproxy" in r:
                parts.append("%.2f h" % r["vs_haproxy"])
            if parts and v is not None:
                cell += " (" + ", ".join(parts) + ")"
            row.append(cell)
        rows.append(row)
    rows.append(["server down: how clients were closed"] +
                [fastfail_how(rounds, t.id) for t in targets])
    return rows


def cost_lines(med):
    """What log_connections, tcplog and send_proxy = v2 cost, as sentences."""
    def ratio(a, b, key):
        va, vb = med.get(a, {}).get(key), med.get(b, {}).get(key)
        return va / vb if va and vb else None

    def pct(r):
        return "—" if r is None else "%+.1f%%" % (100 * (r - 1))

    out = []
    for key, what in (("ka_rps", "keep-alive"), ("cc_rps", "new connection "
                                                 "per request")):
        ours = ratio("circuitproxyd-connlog-1", "circuitproxyd-1", key)
        hap = ratio("haproxy-tcplog-1", "haproxy-1", key)
        if ours is None and hap is None:
            continue
        out.append("%s requests/s with a connection log to a file vs "
                   "without: circuitproxyd log_connections %s, HAProxy "
                   "option tcplog %s%s." % (
                       what, pct(ours), pct(hap),
                       "" if ours is None or hap is None else
                       " (ours costs %s HAProxy's, as a ratio)"
                       % ("no more than" if ours >= hap else "more than")))
    v2 = ratio("circuitproxyd-proxyv2-1", "circuitproxyd-1", "cc_rps")
    cpu = ratio("circuitproxyd-proxyv2-1", "circuitproxyd-1", "cc_cpu_us")
    if v2 is not None:
        out.append("send_proxy = v2 (backend nginx with proxy_protocol) vs "
                   "off, new connection per request: requests/s %s, proxy "
                   "CPU per request %s." % (pct(v2), pct(cpu)))
    return out


def render_text(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else
                               c.rjust(widths[i]) for i, c in enumerate(r)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_md(rows):
    out = ["| " + " | ".join(rows[0]) + " |",
           "|" + "---|" + "---:|" * (len(rows[0]) - 1)]
    for r in rows[1:]:
        out.append("| " + " | ".join(r) + " |")
    return "\n".join(out)


def legend(args, lay, meta):
    return (
        "Medians of %d interleaved rounds on %s (%d CPUs, %s), loopback only; "
        "every load generator shares the cores with the proxy. "
        "wrk -t1 -c50 -d%ds --latency on a %d-byte file from an nginx backend "
        "(keep-alive, then `Connection: close`); scraped: the keep-alive "
        "run again while GET /metrics and GET /stats of circuitproxyd's "
        "admin endpoint each go every 0.1 s on a kept-alive connection; "
        "iperf3 -t %d with -P 1 and "
        "-P 4; server down: tests/bench/connflood, 64 concurrent connects "
        "for %ss to a dead server (circuitproxyd: circuit tripped open first; "
        "HAProxy: server marked DOWN by `check inter 1s`; nginx: its own "
        "handling of the refusing server; direct: the kernel's refusal); "
        "memory: RSS growth with %d idle relayed connections (one request "
        "each, then idle) over the fresh process's RSS, summed over nginx's "
        "master and workers. Proxy CPU is utime+stime of all its threads and "
        "processes. `(x d, y h)`: value ÷ direct and ÷ HAProxy with the same "
        "worker count; ↑ higher is better, ↓ lower is better. Run-to-run "
        "noise on this kind of machine is 15–30%%: compare within one run."
        % (args.rounds, meta["host"]["kernel"], meta["host"]["cpus"],
           meta["host"]["started"], args.duration, BODY_BYTES, args.duration,
           args.flood_seconds, lay.idle_conns)
        + (" Processes outside the benchmark used a median %.0f%% (at most "
           "%.0f%%) of the machine's CPU during the runs kept; %d runs "
           "disturbed by them (over %.0f%%) were repeated once."
           % (100 * meta["others_cpu_share"]["median"],
              100 * meta["others_cpu_share"]["max"],
              meta["repeated_runs"], 100 * args.max_others)
           if meta.get("others_cpu_share") else ""))


# ---------------------------------------------------------------- main

def check_requirements():
    missing = [pkg for pkg, found in REQUIREMENTS if not found()]
    if missing:
        raise BenchError("missing Debian packages: %s\n"
                         "install them with: apt-get install %s"
                         % (", ".join(missing), " ".join(missing)))


def tool_versions(circuitproxyd):
    def first_line(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=5)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None
    return {"haproxy": first_line(["haproxy", "-v"]),
            "nginx": first_line(["nginx", "-v"]),
            "wrk": first_line(["wrk", "--version"]),
            "iperf3": first_line(["iperf3", "--version"]),
            "circuitproxyd": first_line([circuitproxyd, "-V"])
            if circuitproxyd else None}


def raise_nofile(want):
    """Raise RLIMIT_NOFILE as far as allowed; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for new in ((want, want), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, new)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Benchmark circuitproxyd against HAProxy and nginx on "
                    "127.0.0.1 (see tests/bench/README.md).")
    ap.add_argument("--quick", action="store_true",
                    help="one short round, fewer idle connections (< 2 min)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (3)")
    ap.add_argument("--duration", type=int,
                    help="seconds per wrk and iperf3 run (4)")
    ap.add_argument("--flood-seconds", type=float,
                    help="seconds per server-down run (3)")
    ap.add_argument("--idle-conns", type=int,
                    help="idle relayed connections for the memory row (10000)")
    ap.add_argument("--targets", default=",".join(
                    t[0] for t in ALL_TARGETS if t[0] not in OPTIONAL_TARGETS),
                    help="comma-separated subset of: %s" %
                    ", ".join(t[0] for t in ALL_TARGETS))
    ap.add_argument("--port-base", type=int, default=62000,
                    help="first of the ports used (62000; 62000-62129)")
    ap.add_argument("--backend-workers", type=int, default=1,
                    help="worker_processes of the backend nginx (1)")
    ap.add_argument("--pause", type=float, default=0.3,
                    help="seconds between two runs")
    ap.add_argument("--max-others", type=float, default=0.15,
                    help="repeat a run once when other processes used more "
                    "than this share of the CPU during it (0.15)")
    ap.add_argument("--retry-budget", type=float,
                    help="seconds all such repeats may take together "
                    "(60; --quick 10)")
    ap.add_argument("--circuitproxyd",
                    default=os.environ.get("CIRCUITPROXYD"),
                    help="the daemon binary ($CIRCUITPROXYD)")
    ap.add_argument("--connflood", default=os.environ.get("CONNFLOOD"),
                    help="the connflood binary ($CONNFLOOD)")
    ap.add_argument("--json", default=os.path.join(HERE, "results",
                                                   "latest.json"))
    ap.add_argument("--md", default=os.path.join(HERE, "results", "latest.md"))
    ap.add_argument("--tests", default=",".join(TESTS),
                    help="comma-separated subset of the rows: %s" %
                    ", ".join(TESTS))
    ap.add_argument("--reject", default="reset",
                    choices=["reset", "http503", "redis", "postgres", "mysql"],
                    help="reject of circuitproxyd's server-down upstream; its "
                    "flood clients send what such a client sends (reset)")
    ap.add_argument("--no-counts", action="store_true",
                    help="skip the counts (system calls and instructions on "
                    "a fixed workload; on by default, off with --quick)")
    ap.add_argument("--counts-only", action="store_true",
                    help="only the counts, not the timed table")
    ap.add_argument("--counts-targets", default=COUNT_TARGETS,
                    help="targets of the counts (%s)" % COUNT_TARGETS)
    ap.add_argument("--no-callgrind", action="store_true",
                    help="counts without the instructions (callgrind)")
    ap.add_argument("--keep-tmp", action="store_true",
                    help="keep the temp dir (configs, logs) for inspection")
    a = ap.parse_args(argv)
    quick = {"rounds": 1, "duration": 2, "flood_seconds": 1.5,
             "idle_conns": 2000, "retry_budget": 10}
    full = {"rounds": 3, "duration": 4, "flood_seconds": 3,
            "idle_conns": 10000, "retry_budget": 60}
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.quick and not a.counts_only:
        a.no_counts = True
    if not (1 <= a.rounds <= 20 and 1 <= a.duration <= 60 and
            0.5 <= a.flood_seconds <= 60 and 1 <= a.idle_conns <= 100000):
        ap.error("rounds 1-20, duration 1-60, flood-seconds 0.5-60, "
                 "idle-conns 1-100000")
    if not (1024 < a.port_base <= 65535 - 130):
        ap.error("--port-base must leave 130 ports below 65536")
    return a


def main(argv):
    args = parse_args(argv)
    # Also SIGINT: a shell that starts us in the background ignores it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    want = set(args.targets.split(","))
    unknown = want - {t[0] for t in ALL_TARGETS}
    if unknown:
        raise BenchError("unknown targets: %s" % ", ".join(sorted(unknown)))
    targets = [Target(*t) for t in ALL_TARGETS if t[0] in want]
    check_requirements()
    if not args.connflood or not os.access(args.connflood, os.X_OK):
        raise BenchError("connflood not found: build it with `make "
                         "tests/bench/connflood` and pass --connflood or "
                         "$CONNFLOOD")
    if any(t.kind == "circuitproxyd" for t in targets) and not (
            args.circuitproxyd and os.access(args.circuitproxyd, os.X_OK)):
        raise BenchError("circuitproxyd not found: pass --circuitproxyd or "
                         "$CIRCUITPROXYD (or leave it out with --targets)")

    nofile = raise_nofile(65536)
    # A relay holds two descriptors in the proxy; keep a margin for the rest.
    idle = min(args.idle_conns, (nofile - 512) // 2)
    if idle < args.idle_conns:
        log("RLIMIT_NOFILE is %d here (hard limit): holding %d idle "
            "connections instead of %d" % (nofile, idle, args.idle_conns))

    tmp = tempfile.mkdtemp(prefix="cpbench.")
    lay = Layout(tmp, args.port_base, nofile, idle)
    lay.reject = args.reject
    busy = [p for p in lay.all_ports(len(targets)) if not port_free(p)]
    if busy:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BenchError("ports in use on 127.0.0.1: %s; choose another "
                         "--port-base" % ", ".join(map(str, busy)))
    lo, hi = (int(x) for x in open(
        "/proc/sys/net/ipv4/ip_local_port_range").read().split())
    if lo <= args.port_base + 100 and args.port_base <= hi:
        log("warning: ports %d-%d overlap the ephemeral range %d-%d"
            % (args.port_base, args.port_base + 99, lo, hi))

    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                 "loadavg_at_start": os.getloadavg(),
                 "started": time.strftime("%Y-%m-%d")},
        "versions": tool_versions(args.circuitproxyd if any(
            t.kind == "circuitproxyd" for t in targets) else None),
        "settings": {"rounds": args.rounds, "duration_s": args.duration,
                     "flood_seconds": args.flood_seconds,
                     "idle_conns": idle, "idle_conns_requested":
                     args.idle_conns, "rlimit_nofile": nofile,
                     "backend_workers": args.backend_workers,
                     "quick": args.quick, "port_base": args.port_base,
                     "max_others": args.max_others,
                     "retry_budget_s": args.retry_budget},
    }
    problems = []
    rounds = []
    t0 = time.monotonic()
    try:
        log("temp dir %s; backend nginx on %d, iperf3 -s on %d, dead port %d"
            % (tmp, lay.backend_http, lay.backend_iperf, lay.dead))
        lay.backend_procs = list(start_backend(lay, args.backend_workers))
        backend = lay.backend_procs[0]
        for rnd in range(0 if args.counts_only else args.rounds):
            if not lay.backend_procs[-1].alive():
                problems.append("iperf3 -s had exited; restarted")
                restart_iperf(lay)
            rounds.append(run_round(rnd, targets, args, lay, problems))
            if not backend.alive():
                raise BenchError("the backend nginx exited:\n"
                                 + backend.log_tail())
        counts = None if args.no_counts else run_counts(args, lay, problems)
    finally:
        # Cleanup is bounded in time; let no second signal cut it short.
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        Proc.stop_all()
        if args.keep_tmp:
            log("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    meta["elapsed_s"] = round(time.monotonic() - t0, 1)
    shares = [raw["host_cpu"]["others_share"] for r in rounds
              for tr in r.values() for raw in tr["raw"].values()
              if raw.get("host_cpu", {}).get("others_share") is not None]
    meta["others_cpu_share"] = ({"median": statistics.median(shares),
                                 "max": max(shares), "runs": len(shares)}
                                if shares else None)
    meta["repeated_runs"] = sum(1 for r in rounds for tr in r.values()
                                for raw in tr["raw"].values()
                                if raw.get("repeated"))

    med, spread = summarize(rounds, targets)
    rat = ratios(med, targets)
    rows = table_rows(med, rat, targets, rounds)
    text = legend(args, lay, meta)
    costs = cost_lines(med)
    if rounds:
        print()
        print(render_text(rows))
        print()
        print(text)
        for line in costs:
            print("- " + line)
    if counts:
        print()
        print(render_text(counts_rows(counts)))
        print()
        print(counts_legend())
    if problems:
        print("\nProblems seen:")
        for p in problems:
            print("- " + p)

    doc = {"meta": meta, "targets": [{"id": t.id, "label": t.label,
                                      "kind": t.kind, "workers": t.workers}
                                     for t in targets],
           "metrics": [{"key": k, "label": l, "better": b}
                       for k, l, b, _, _ in METRICS],
           "median": med, "spread": spread, "ratios": rat,
           "fastfail_how": {t.id: fastfail_how(rounds, t.id) for t in targets},
           "problems": problems, "rounds": rounds, "counts": counts}
    for path in (args.json, args.md):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    md = ["# circuitproxyd vs HAProxy vs nginx (`make bench`)", ""]
    if rounds:
        md += [render_md(rows), "", text, ""]
        if costs:
            md += ["Logging and PROXY header costs (same run; the log lines "
                   "go to each proxy's log file):", ""]
            md += ["- " + line for line in costs] + [""]
    if counts:
        md += [render_md(counts_rows(counts)), "", counts_legend(), "",
               "Where the system calls go, per unit (the eight most "
               "frequent):", ""]
        for tid, c in counts.items():
            for key, top in c["top"].items():
                md.append("- %s, %s: %s" % (c["label"], key, ", ".join(
                    "%s %.2f" % kv for kv in list(top.items())[:8])))
        md.append("")
    md += [
          "Tools: " + "; ".join("%s" % v for v in meta["versions"].values()
                                if v) + ".",
          "Run took %.0f s. Raw per-round numbers: [latest.json](latest.json)."
          % meta["elapsed_s"]]
    if problems:
        md += ["", "Problems seen during the run:", ""] + [
            "- " + p.replace("\n", " / ") for p in problems]
    with open(args.md, "w") as f:
        f.write("\n".join(md) + "\n")
    log("wrote %s and %s (%.0f s)" % (args.json, args.md, meta["elapsed_s"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        sys.stderr.write("bench: %s\n" % e)
        sys.exit(1)
    except (KeyboardInterrupt, Interrupted):
        sys.stderr.write("bench: interrupted; every process started was "
                         "stopped\n")
        sys.exit(130)
