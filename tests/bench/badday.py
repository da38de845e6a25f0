#!/usr/bin/env python3
"""A bad day, measured: what a breaker exists for (make bench).

A real redis-server is killed (SIGKILL) for a while and started again,
under 16 client loops of connect - PING - close (1 s timeout each), sent
through each target in turn:

  cp-trials  circuitproxyd, clients as the half_open trials
  cp-probes  circuitproxyd, recovery_probe = connect (250 ms, no backoff)
  haproxy    mode tcp, check inter 500ms fall 2 rise 2
  nginx      stream, max_fails=1 fail_timeout=2s (one server: nginx
             ignores both, so it never marks it down)
  direct     the clients on redis' own port

Per target it reports the attempts made during the outage and how they
ended, how long a client took to learn of it (p50/p99 of the failed
attempts), how many connects reached the dead port (circuitproxyd: the
attempts it counted, probes included; HAProxy: sessions it sent to the
server and their retries, plus one connect per health check; nginx: its "connect() failed" lines; direct: every
attempt), and the time from the restart to the first PONG and to the
first quarter second in which 95% of the attempts got one.

usage: badday.py [--quick] [--port-base N] [--circuitproxyd PATH]
                 [--targets a,b,...] [--md FILE]
Every wait is bounded; exit 0 with the table, 2 when a target failed.
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import json
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
LO = "127.0.0.1"
CLIENTS = 16
TIMEOUT = 1.0
TARGETS = ["cp-trials", "cp-probes", "haproxy", "nginx", "direct"]


def wait_port(port, timeout=10.0):
    """Until something accepts on the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LO, port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def redis_ping(port):
    """Does redis answer PING (not LOADING)?"""
    try:
        with socket.create_connection((LO, port), 0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def attempt(port):
    """One client: connect, PING, read one line, close. (outcome, start, end)"""
    t0 = time.monotonic()
    s = socket.socket()
    s.settimeout(TIMEOUT)
    try:
        s.connect((LO, port))
        s.sendall(b"PING\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(256)
            if not chunk:
                return ("eof" if not data else "short", t0, time.monotonic())
            data += chunk
        if data.startswith(b"+PONG"):
            return ("pong", t0, time.monotonic())
        if data.startswith(b"-"):
            return ("error_reply", t0, time.monotonic())
        return ("other", t0, time.monotonic())
    except ConnectionRefusedError:
        return ("refused", t0, time.monotonic())
    except ConnectionResetError:
        return ("reset", t0, time.monotonic())
    except socket.timeout:
        return ("timeout", t0, time.monotonic())
    except OSError as e:
        return ("error:%s" % e.__class__.__name__, t0, time.monotonic())
    finally:
        s.close()


class Redis:
    """The real redis-server, killed and started again."""

    def __init__(self, port, tmp):
        self.port, self.tmp, self.proc = port, tmp, None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", LO,
             "--save", "", "--appendonly", "no", "--dir", self.tmp,
             "--daemonize", "no", "--maxclients", "4000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not redis_ping(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.01)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)


class Target:
    """A proxy in front of redis (or none), and how it counts dead connects."""

    def __init__(self, name, port, redis_port, admin, tmp, binary):
        self.name, self.port, self.rport = name, port, redis_port
        self.admin, self.tmp, self.binary = admin, tmp, binary
        self.proc = None

    def start(self):
        if self.name == "direct":
            self.port = self.rport
            return
        getattr(self, "_start_" + self.name.replace("-", "_"))()
        if not wait_port(self.port):
            raise RuntimeError("%s does not listen" % self.name)

    def _spawn(self, argv):
        log = open(os.path.join(self.tmp, self.name + ".log"), "w")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log)

    def _cp(self, extra):
        conf = os.path.join(self.tmp, self.name + ".ini")
        with open(conf, "w") as f:
            f.write("[global]\nlog_level = warning\nworkers = 1\n"
                    "admin = %s:%d\nlog_rejects_per_second = 0\n\n"
                    "[upstream:redis]\nlisten = %s:%d\nserver = %s:%d\n"
                    "connect_timeout = 1s\nfailure_threshold = 3\n"
                    "recovery_timeout = 250ms\nrecovery_backoff = 1\n"
                    "half_open_max_calls = 3\nsuccess_threshold = 2\n"
                    "reject = redis\n%s"
                    % (LO, self.admin, LO, self.port, LO, self.rport, extra))
        self._spawn([self.binary, "-c", conf])

    def _start_cp_trials(self):
        self._cp("")

    def _start_cp_probes(self):
        self._cp("recovery_probe = connect\n")

    def _start_haproxy(self):
        conf = os.path.join(self.tmp, "haproxy.cfg")
        self.sock = os.path.join(self.tmp, "haproxy.sock")
        with open(conf, "w") as f:
            f.write("global\n  maxconn 4000\n  stats socket %s level admin\n"
                    "defaults\n  mode tcp\n  timeout connect 1s\n"
                    "  timeout client 5s\n  timeout server 5s\n"
                    "listen redis\n  bind %s:%d\n"
                    "  server r1 %s:%d check inter 500ms fall 2 rise 2\n"
                    % (self.sock, LO, self.port, LO, self.rport))
        self._spawn(["haproxy", "-db", "-f", conf])

    def _start_nginx(self):
        conf = os.path.join(self.tmp, "nginx.conf")
        self.errlog = os.path.join(self.tmp, "nginx-error.log")
        mod = "/usr/lib/nginx/modules/ngx_stream_module.so"
        with open(conf, "w") as f:
            f.write("%sworker_processes 1;\ndaemon off;\npid %s/nginx.pid;\n"
                    "error_log %s error;\nevents { worker_connections 4000; }\n"
                    "stream {\n  upstream r { server %s:%d max_fails=1 "
                    "fail_timeout=2s; }\n  server { listen %s:%d; "
                    "proxy_pass r; proxy_connect_timeout 1s; }\n}\n"
                    % ("load_module %s;\n" % mod if os.path.exists(mod) else "",
                       self.tmp, self.errlog, LO, self.rport, LO, self.port))
        self._spawn(["nginx", "-p", self.tmp, "-e", self.errlog, "-c", conf])

    def dead_connects(self):
        """A running count of the connects this target made to redis."""
        if self.name.startswith("cp-"):
            with urllib.request.urlopen("http://%s:%d/stats/redis"
                                        % (LO, self.admin), timeout=2) as r:
                return json.load(r)["attempts_total"]
        if self.name == "haproxy":
            s = socket.socket(socket.AF_UNIX)
            s.connect(self.sock)
            s.sendall(b"show stat\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            lines = data.decode().splitlines()
            head = lines[0].lstrip("# ").split(",")
            for line in lines[1:]:
                row = dict(zip(head, line.split(",")))
                if row.get("svname") == "r1":
                    # Sessions sent to the server, and their retries.
                    return (int(row["stot"] or 0) + int(row["wretr"] or 0),
                            row)
            return 0, None
        if self.name == "nginx":
            with open(self.errlog, errors="replace") as f:
                return sum(1 for l in f if "connect() failed" in l)
        return None

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_target(t, redis, pre, outage, post):
    """Drive the loops through one target across one outage."""
    results, stop = [], threading.Event()
    lock = threading.Lock()

    def loop():
        while not stop.is_set():
            r = attempt(t.port)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=loop) for _ in range(CLIENTS)]
    for th in threads:
        th.start()
    time.sleep(pre)
    before = t.dead_connects()
    k0 = time.monotonic()
    redis.kill()
    time.sleep(outage)
    after = t.dead_connects()
    k1 = time.monotonic()
    redis.start()
    up = time.monotonic()
    time.sleep(post)
    stop.set()
    for th in threads:
        th.join(5)
    return results, k0, k1, up, before, after


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else None


def analyse(name, results, k0, k1, up, before, after, outage):
    during = [r for r in results if k0 <= r[1] < k1]
    ends = {}
    for r in during:
        ends[r[0]] = ends.get(r[0], 0) + 1
    learn = [(r[2] - r[1]) * 1000 for r in during if r[0] != "pong"]
    if name == "haproxy":
        dead = after[0] - before[0]
        dead_how = "%d + ~%d checks" % (dead, int(outage / 0.5))
        dead_n = dead + int(outage / 0.5)
    elif name == "direct":
        dead_n = sum(1 for r in during if r[0] != "pong")
        dead_how = str(dead_n)
    else:
        dead_n = after - before
        dead_how = str(dead_n)
    after_up = sorted((r for r in results if r[1] >= up), key=lambda r: r[1])
    first = next((r[2] - up for r in after_up if r[0] == "pong"), None)
    t95 = None
    step = 0.25
    for i in range(200):
        lo, hi = up + i * step, up + (i + 1) * step
        b = [r for r in after_up if lo <= r[1] < hi]
        if b and sum(1 for r in b if r[0] == "pong") >= 0.95 * len(b):
            t95 = hi - up
            break
    return {
        "target": name, "attempts": len(during), "ends": ends,
        "learn_p50_ms": pct(learn, 0.5), "learn_p99_ms": pct(learn, 0.99),
        "dead_connects": dead_n, "dead_how": dead_how,
        "dead_share": dead_n / len(during) if during else None,
        "first_pong_s": first, "pong95_s": t95,
    }


def fmt(v, how):
    if v is None:
        return "–"
    return how % v


def table(rows, outage, quick):
    out = ["| target | attempts during the %g s outage | how they ended | "
           "time to learn p50 / p99 | connects to the dead port | "
           "restart → first PONG | restart → 95%% PONGs |" % outage,
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        ends = ", ".join("%s %d" % (k, v) for k, v in
                         sorted(r["ends"].items(), key=lambda kv: -kv[1]))
        out.append("| %s | %d | %s | %s / %s | %s (%s) | %s | %s |" % (
            r["target"], r["attempts"], ends,
            fmt(r["learn_p50_ms"], "%.2f ms"), fmt(r["learn_p99_ms"], "%.2f ms"),
            r["dead_how"], fmt(r["dead_share"] and r["dead_share"] * 100,
                               "%.1f%%"),
            fmt(r["first_pong_s"], "%.2f s"), fmt(r["pong95_s"], "%.2f s")))
    return "\n".join(out) + "\n"


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 s outage, 1 s before and 3 s after (else 5/2/5)")
    ap.add_argument("--port-base", type=int, default=62700)
    ap.add_argument("--circuitproxyd", default=os.path.join(
        HERE, "..", "..", "src", "circuitproxyd"))
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--md", default=None, help="write the table there too")
    a = ap.parse_args(argv)
    pre, outage, post = (1.0, 2.0, 3.0) if a.quick else (2.0, 5.0, 5.0)
    missing = [t for t in ("redis-server", "haproxy", "nginx")
               if shutil.which(t) is None]
    names = [t for t in a.targets.split(",") if t]
    names = [t for t in names
             if not (t in ("haproxy", "nginx") and t in missing)]
    if "redis-server" in missing:
        print("badday: SKIP: no redis-server (Debian package redis-server)")
        return 0
    tmp = tempfile.mkdtemp(prefix="badday-")
    rows, failed = [], False
    try:
        for i, name in enumerate(names):
            rport = a.port_base + 10 * i
            redis = Redis(rport, tmp)
            t = Target(name, a.port_base + 10 * i + 1, rport,
                       a.port_base + 10 * i + 2, tmp, a.circuitproxyd)
            try:
                redis.start()
                t.start()
                res = run_target(t, redis, pre, outage, post)
                rows.append(analyse(name, *res, outage))
                print("badday: %s done" % name, file=sys.stderr)
            except Exception as e:
                print("badday: %s: %s" % (name, e), file=sys.stderr)
                failed = True
            finally:
                t.stop()
                if redis.proc and redis.proc.poll() is None:
                    redis.proc.terminate()
                    redis.proc.wait(5)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = table(rows, outage, a.quick)
    print(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
