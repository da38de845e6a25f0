#!/usr/bin/env python3
"""make bench's pool rows, side by side in one run (tests/bench/README.md).

1. New connections/s (wrk -t1 -c50, "Connection: close", the 100-byte file
   of a backend nginx) through circuitproxyd to one upstream, through a
   circuitproxyd pool of three members (all three on that backend, so only
   the pool's own cost differs), and through HAProxy with a three-server
   backend; with box-wide CPU per request (every task and interrupt of the
   machine during the run, divided by the requests).
2. Kill one replica: three replicas (threads of this script that answer
   "+PONG" to every connection) behind circuitproxyd (retries = 1), HAProxy
   (retries 1, option redispatch, check inter 500ms) and nginx (max_fails=1);
   10,000 new connections one after the other, one replica killed (its
   listening socket closed, so connects are refused) after 2,000: the
   client-visible errors per 10,000 connections.

    poolbench.py [--quick] [--rounds N] [--duration S] [--port-base P]
                 [--circuitproxyd PATH] [--md FILE] [--json FILE]
"""
import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxybench as pb  # noqa: E402

LOOPBACK = pb.LOOPBACK


class Replica:
    """A server thread answering "+PONG\\r\\n" to each connection."""

    def __init__(self, port):
        self.port = port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, port))
        self.sock.listen(1024)
        self.alive = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.alive:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                c.settimeout(2)
                c.recv(64)
                c.sendall(b"+PONG\r\n")
            except OSError:
                pass
            c.close()

    def kill(self):
        """Stop listening: connects are refused from now on."""
        self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def start_circuitproxyd(binary, tmp, name, text, port):
    conf = os.path.join(tmp, name + ".ini")
    pb.write(conf, "[global]\nlog_level = warning\nworkers = 1\n\n" + text)
    proc = pb.Proc(name, [binary, "-c", conf], os.path.join(tmp, name + ".log"))
    pb.wait_port(port, proc)
    return proc


def start_haproxy(tmp, name, backend, listen):
    conf = os.path.join(tmp, name + ".cfg")
    pb.write(conf,
             "global\n    nbthread 1\n    maxconn 4000\n\n"
             "defaults\n    mode tcp\n    maxconn 4000\n"
             "    timeout connect 2s\n    timeout client 1m\n"
             "    timeout server 1m\n\n"
             "frontend fe\n    bind %s:%d\n    default_backend be\n"
             "backend be\n%s" % (LOOPBACK, listen, backend))
    proc = pb.Proc(name, ["haproxy", "-db", "-f", conf],
                   os.path.join(tmp, name + ".log"))
    pb.wait_port(listen, proc)
    return proc


def start_nginx(tmp, name, upstream, listen):
    prefix = os.path.join(tmp, name)
    os.makedirs(prefix, exist_ok=True)
    conf = os.path.join(prefix, "nginx.conf")
    pb.write(conf, "load_module %s;\n" % pb.STREAM_MODULE +
             pb.nginx_common(prefix, 1, 4096) +
             "stream {\n    proxy_connect_timeout 2s;\n"
             "    upstream u {\n%s    }\n"
             "    server { listen %s:%d; proxy_pass u; }\n}\n"
             % (upstream, LOOPBACK, listen))
    proc = pb.Proc(name, ["nginx", "-p", prefix, "-e",
                          os.path.join(prefix, "error.log"), "-c", conf],
                   os.path.join(tmp, name + ".log"))
    pb.wait_port(listen, proc)
    return proc


def new_connections(args, tmp, binary, base):
    """Row 1: one upstream vs a pool of 3 vs HAProxy's 3-server backend."""
    lay = pb.Layout(tmp, base, 4096, 0)
    web, iperf = pb.start_backend(lay, 1)
    be = "%s:%d" % (LOOPBACK, lay.backend_http)
    one, pool, ha = base + 10, base + 11, base + 12
    cp = start_circuitproxyd(binary, tmp, "cp-pool",
                             "[upstream:one]\nlisten = %s:%d\nserver = %s\n"
                             "[upstream:m1]\nserver = %s\n"
                             "[upstream:m2]\nserver = %s\n"
                             "[upstream:m3]\nserver = %s\n"
                             "[pool:p]\nlisten = %s:%d\nmembers = m1 m2 m3\n"
                             % (LOOPBACK, one, be, be, be, be, LOOPBACK, pool),
                             one)
    hp = start_haproxy(tmp, "haproxy-3", "    balance roundrobin\n" +
                       "".join("    server s%d %s\n" % (i, be)
                               for i in range(3)), ha)
    targets = [("circuitproxyd, one upstream", one, cp),
               ("circuitproxyd, pool of 3", pool, cp),
               ("HAProxy, 3-server backend", ha, hp)]
    res = {t[0]: [] for t in targets}
    try:
        for rnd in range(args.rounds):
            # Each round starts with the next target: no one always runs
            # first (fresh) or last (behind the others' TIME_WAIT sockets).
            k = rnd % len(targets)
            for label, port, proc in targets[k:] + targets[:k]:
                cpu0 = proc.cpu_seconds()
                with pb.HostMeter([web, iperf, cp, hp]) as hm:
                    w = pb.run_wrk(port, args.duration, True)
                n = max(1, w["requests"])
                box = hm.result["task_s"] + hm.result["irq_s"]
                res[label].append({
                    "rps": w["rps"],
                    "proxy_cpu_us": (proc.cpu_seconds() - cpu0) * 1e6 / n,
                    "box_cpu_us": box * 1e6 / n,
                    "others_share": hm.result["others_share"],
                    "errors": sum(w["socket_errors"].values()) + w["non_2xx"],
                })
                pb.log("round %d %s: %.0f req/s, box %.1f us/req" %
                       (rnd + 1, label, w["rps"], box * 1e6 / n))
                time.sleep(0.3)
    finally:
        for p in (cp, hp, web, iperf):
            p.stop()
    return res


def one_run(client_port, replicas, total, kill_at):
    """total connections one after the other; the errors the client saw."""
    errors = 0
    for i in range(total):
        if i == kill_at:
            replicas[1].kill()
        try:
            s = socket.create_connection((LOOPBACK, client_port), 2)
            s.settimeout(2)
            s.sendall(b"PING\r\n")
            if not s.recv(64).startswith(b"+PONG"):
                errors += 1
            s.close()
        except OSError:
            errors += 1
    return errors


def kill_one(args, tmp, binary, base):
    """Row 2: client-visible errors when one of three replicas dies."""
    total = 2000 if args.quick else 10000
    kill_at = total // 5
    ports = [base + 30, base + 31, base + 32]
    listen = base + 33
    out = {}
    makers = [
        ("circuitproxyd, retries = 1", lambda: start_circuitproxyd(
            binary, tmp, "cp-kill",
            "".join("[upstream:r%d]\nserver = %s:%d\n" % (i, LOOPBACK, p)
                    for i, p in enumerate(ports)) +
            "[pool:p]\nlisten = %s:%d\nmembers = r0 r1 r2\nretries = 1\n"
            % (LOOPBACK, listen), listen)),
        ("HAProxy, retries 1 + redispatch + check inter 500ms",
         lambda: start_haproxy(
             tmp, "haproxy-kill",
             "    balance roundrobin\n    retries 1\n    option redispatch\n" +
             "".join("    server s%d %s:%d check inter 500ms\n" %
                     (i, LOOPBACK, p) for i, p in enumerate(ports)), listen)),
        ("nginx, max_fails=1", lambda: start_nginx(
            tmp, "nginx-kill",
            "".join("        server %s:%d max_fails=1;\n" % (LOOPBACK, p)
                    for p in ports), listen)),
    ]
    for label, make in makers:
        replicas = [Replica(p) for p in ports]
        proc = make()
        try:
            t0 = time.monotonic()
            errors = one_run(listen, replicas, total, kill_at)
            el = time.monotonic() - t0
        finally:
            proc.stop()
            for r in replicas:
                r.kill()
        out[label] = {"errors": errors, "connections": total,
                      "per_10000": errors * 10000.0 / total,
                      "seconds": round(el, 2)}
        pb.log("%s: %d errors in %d connections" % (label, errors, total))
        time.sleep(0.5)
    return out


def render(new, kill, args):
    shares = [r["others_share"] for runs in new.values() for r in runs]
    lines = ["## Pools (tests/bench/poolbench.py%s)" %
             (" --quick" if args.quick else ""), "",
             "Medians of %d interleaved round(s) of %d s each, each round "
             "starting with the next target; processes outside the "
             "benchmark used a median %.0f%% (at most %.0f%%) of the "
             "machine's CPU during the runs." %
             (args.rounds, args.duration,
              100 * statistics.median(shares or [0]),
              100 * max(shares or [0])), "",
             "| new connection per request | requests/s | proxy CPU µs/req "
             "| box CPU µs/req | errors |", "|---|---:|---:|---:|---:|"]
    med = {}
    for label, runs in new.items():
        m = {k: statistics.median(r[k] for r in runs)
             for k in ("rps", "proxy_cpu_us", "box_cpu_us", "errors")}
        med[label] = m
        lines.append("| %s | %.0f | %.1f | %.1f | %d |" %
                     (label, m["rps"], m["proxy_cpu_us"], m["box_cpu_us"],
                      m["errors"]))
    one = med.get("circuitproxyd, one upstream")
    pool = med.get("circuitproxyd, pool of 3")
    ha = med.get("HAProxy, 3-server backend")
    if one and pool and ha:
        lines += ["", "Pool of 3 ÷ one upstream: box CPU per request %.3f×, "
                  "requests/s %.2f×; pool ÷ HAProxy 3-server backend: "
                  "requests/s %.2f×." %
                  (pool["box_cpu_us"] / one["box_cpu_us"],
                   pool["rps"] / one["rps"], pool["rps"] / ha["rps"])]
    lines += ["", "| one of 3 replicas killed (refused) after 20%% of %d "
              "connections | client-visible errors | per 10,000 |" %
              next(iter(kill.values()))["connections"], "|---|---:|---:|"]
    for label, r in kill.items():
        lines.append("| %s | %d | %.1f |" % (label, r["errors"],
                                             r["per_10000"]))
    return "\n".join(lines) + "\n"


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=int)
    ap.add_argument("--port-base", type=int, default=62100)
    ap.add_argument("--circuitproxyd",
                    default=os.environ.get("CIRCUITPROXYD", "circuitproxyd"))
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--md", default=os.path.join(here, "results", "pools.md"))
    ap.add_argument("--json",
                    default=os.path.join(here, "results", "pools.json"))
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (3 if args.quick else 10)
    missing = [n for n, ok in pb.REQUIREMENTS if not ok()]
    if missing:
        print("poolbench: missing: apt-get install -y " + " ".join(missing),
              file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="poolbench.")
    os.chmod(tmp, 0o755)
    try:
        new = new_connections(args, tmp, args.circuitproxyd, args.port_base)
        kill = kill_one(args, tmp, args.circuitproxyd, args.port_base)
    finally:
        pb.Proc.stop_all()
    text = render(new, kill, args)
    sys.stdout.write(text)
    pb.write(args.md, text)
    with open(args.json, "w") as f:
        json.dump({"new_connections": new, "kill_one": kill,
                   "quick": args.quick, "at": time.strftime(
                       "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
