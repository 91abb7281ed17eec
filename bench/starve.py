#!/usr/bin/env python3
"""A fleet starved on purpose: N real `gauntlet worker` processes (1,000 by default) and one
coordinator on this machine's cores, a run of N VUs, and what the coordinator did about it:
workers declared lost, shares handed over, suspicions, whether the run client got its report
and whether the counts are exact (BENCHMARKS.md, "A starved fleet").

  bench/starve.py [--workers 1000] [--duration 30] [--json FILE]

It builds the release binary first. Everything listens on 127.0.0.1; every process it starts
is killed (by PID) when it ends, also on error or Ctrl-C.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "gauntlet")

PLAN = """
name = "starve"
[auth]
secret_env = "JWT_SECRET_KEY"
claims = {{ iss = "netra-auth-service", token_type = "access" }}
[load]
vus = {vus}
duration = "{duration}s"
graceful_stop = "5s"
[[scenarios]]
name = "ping"
steps = [
  {{ ws_connect = {{ confirmation = [{{ pointer = "/data/event", equals = "connection_established" }}] }} }},
  {{ ws_send = {{ json = {{ type = "ping" }} }} }},
  {{ ws_expect = {{ type = "pong", timeout = "30s" }} }},
  {{ sleep = {{ duration = "1s" }} }},
  {{ ws_close = {{}} }},
]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def connected_workers(http):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/runs", timeout=5) as r:
            return json.load(r)["workers"]
    except OSError:
        return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=1000)
    p.add_argument("--duration", type=int, default=30, help="seconds of load")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "gauntlet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="gauntlet-starve-")
    env = dict(os.environ, JWT_SECRET_KEY="starve-secret", GAUNTLET_LOG="warn")
    procs = []

    def start(argv, log, extra_env=None):
        f = open(os.path.join(work, log), "w") if log else subprocess.DEVNULL
        proc = subprocess.Popen([BIN] + argv, env=dict(env, **(extra_env or {})), stdout=f,
                                stderr=f, cwd=work)
        procs.append(proc)
        return proc

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    figures = {"workers": args.workers}
    try:
        tb, grpc, http = free_port(), free_port(), free_port()
        start(["testbed", "--listen", f"127.0.0.1:{tb}"], "testbed.log")
        coordinator = start(["coordinator", "--listen", f"127.0.0.1:{grpc}", "--http",
                             f"127.0.0.1:{http}"], "coordinator.log",
                            {"GAUNTLET_LOG": "info"})
        deadline = time.time() + 30
        while not (listening(tb) and listening(grpc) and listening(http)):
            if time.time() > deadline:
                raise SystemExit("starve: testbed or coordinator not listening within 30 s")
            time.sleep(0.2)
        t0 = time.time()
        for i in range(args.workers):
            start(["worker", "--coordinator", f"http://127.0.0.1:{grpc}", "--name", f"s{i}",
                   "--plan-env", "JWT_SECRET_KEY"], None)
        deadline = time.time() + 300
        while connected_workers(http) < args.workers:
            if time.time() > deadline:
                raise SystemExit(f"starve: only {connected_workers(http)} workers connected in 300 s")
            time.sleep(1)
        figures["connect_s"] = round(time.time() - t0, 1)
        plan = os.path.join(work, "starve.toml")
        with open(plan, "w") as f:
            f.write(PLAN.format(vus=args.workers, duration=args.duration))
        out = os.path.join(work, "run")
        t1 = time.time()
        run = start(["run", plan, "--coordinator", f"http://127.0.0.1:{grpc}", "--target",
                     f"http://127.0.0.1:{tb}", "--min-workers", str(args.workers),
                     "--no-history", "--out", out], "run.log")
        try:
            run.wait(timeout=args.duration + 600)
        except subprocess.TimeoutExpired:
            raise SystemExit("starve: the run client did not end within its duration + 600 s")
        figures["run_s"] = round(time.time() - t1, 1)
        figures["exit"] = run.returncode
        with urllib.request.urlopen(f"http://127.0.0.1:{tb}/__testbed/stats") as r:
            truth = json.load(r)
        figures["testbed_accepted"] = truth["connections"]["accepted"]
        try:
            with open(os.path.join(out, "report.json")) as f:
                report = json.load(f)
            figures["report"] = True
            figures["sessions"] = report["totals"]["sessions"]
            figures["unknown"] = report["totals"]["unknown"]
            figures["verdict"] = report["verdict"]
            figures["verdict_reason"] = report["verdict_reason"]
            figures["lost"] = sum(1 for w in report["workers"] if w.get("lost_at_ms") is not None)
        except FileNotFoundError:
            figures["report"] = False
        with open(os.path.join(work, "run.log")) as f:
            figures["client_resumed"] = f.read().count("watching it again")
        coordinator.send_signal(signal.SIGTERM)
        time.sleep(1)
        with open(os.path.join(work, "coordinator.log")) as f:
            log = f.read()
        figures["log_worker_lost"] = log.count("worker lost")
        figures["log_share_reassigned"] = log.count("share reassigned")
        figures["log_suspicions"] = log.count("many workers fell silent at once")
        figures["log_coordinator_stalls"] = log.count("the coordinator did not run")
        figures["log_limit_reached"] = log.count("hand-over limit is reached")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            proc.wait()
    print(json.dumps(figures, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
