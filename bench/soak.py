#!/usr/bin/env python3
"""A soak of the whole fleet as separate processes: the testbed, one coordinator, N workers and
`gauntlet run` of the staging suite for a fixed time; every process's RSS, CPU, open files and
threads sampled every few seconds, then a table of the figures over time and each one's growth
after warm-up (BENCHMARKS.md, "Soak").

  bench/soak.py [--duration 600] [--vus 200] [--workers 2] [--every 10] [--warmup 120]
                [--json FILE] [--plan plans/staging-suite.toml]
  bench/soak.py --from-json FILE [--warmup 120]   (the tables of a soak saved with --json)

It builds the release binary first (cargo build --release -p gauntlet). Everything listens on
127.0.0.1; every process it starts is killed (by PID) when it ends, also on error or Ctrl-C.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "gauntlet")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample(pid):
    """RSS and its anonymous part (KiB), CPU seconds, open files and threads of `pid`, or None
    if it is gone. The rest of RSS is file pages, mostly the binary's, shared by every process
    of the fleet and paged in as code first runs."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if "VmRSS" not in status or "RssAnon" not in status:
        return None  # exited, not yet reaped
    return {
        "rss_kib": int(status["VmRSS"].split()[0]),
        "anon_kib": int(status["RssAnon"].split()[0]),
        "cpu_s": (int(fields[11]) + int(fields[12])) / TICKS,
        "fds": fds,
        "threads": int(status["Threads"]),
    }


def trend(points):
    """The least-squares slope of (t, value) points, value per second (0 with fewer than 2)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / var if var else 0.0


def wait_for(predicate, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"soak: {what} within {seconds} s")


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def print_tables(samples, watched, warmup):
    """The table of RSS over time and each process's growth after `warmup` seconds."""
    if not samples:
        print("no samples")
        return
    print()
    print("| t (s) | " + " | ".join(f"{n} RSS (MiB)" for n in watched) + " |")
    print("|---:|" + "---:|" * len(watched))
    step = max(1, len(samples) // 20)
    for row in samples[::step] + ([samples[-1]] if samples[-1] not in samples[::step] else []):
        cells = [f"{row[n]['rss_kib'] / 1024:.1f}" if row[n] else "-" for n in watched]
        print(f"| {row['t']} | " + " | ".join(cells) + " |")
    print()
    after = [r for r in samples if r["t"] >= warmup and all(r[n] for n in watched)]
    # Growth after warm-up, and the trend over the second half of the run (a least-squares
    # slope): a one-time step (a histogram resized for a longer latency) is not a leak, a slope
    # that stays is. One sample of a process's RSS moves by up to a MiB from the next (what the
    # allocator holds), so growth is also given between the means of the first and the last
    # minute after warm-up.
    half = [r for r in after if r["t"] >= after[-1]["t"] / 2] if after else []

    def mean_growth(n, key):
        first = [r[n][key] for r in after if r["t"] < after[0]["t"] + 60]
        last = [r[n][key] for r in after if r["t"] > after[-1]["t"] - 60]
        a, b = sum(first) / len(first), sum(last) / len(last)
        return 100.0 * (b - a) / a

    print("| process | RSS at warm-up end | RSS at end | growth | growth, minute means | anonymous, minute means | 2nd-half slope | CPU s | fds (min-max) | threads (min-max) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for n in watched:
        if len(after) < 2:
            break
        first, last = after[0][n], after[-1][n]
        fds = [r[n]["fds"] for r in after]
        threads = [r[n]["threads"] for r in after]
        growth = 100.0 * (last["rss_kib"] - first["rss_kib"]) / first["rss_kib"]
        anon = f"{mean_growth(n, 'anon_kib'):+.1f} %" if "anon_kib" in first else "-"
        slope = trend([(r["t"], r[n]["rss_kib"]) for r in half]) * 60.0
        print(f"| {n} | {first['rss_kib'] / 1024:.1f} MiB | {last['rss_kib'] / 1024:.1f} MiB | "
              f"{growth:+.1f} % | {mean_growth(n, 'rss_kib'):+.1f} % | "
              f"{anon} | "
              f"{slope:+.1f} KiB/min | {last['cpu_s']:.1f} | "
              f"{min(fds)}-{max(fds)} | {min(threads)}-{max(threads)} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=int, default=600, help="seconds of load")
    p.add_argument("--vus", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--every", type=int, default=10, help="seconds between samples")
    p.add_argument("--warmup", type=int, default=None,
                   help="seconds before growth is measured (120; with --from-json, the soak's)")
    p.add_argument("--plan", default=os.path.join(ROOT, "plans", "staging-suite.toml"))
    p.add_argument("--json", help="write the samples here")
    p.add_argument("--from-json", help="print the tables of a soak written with --json, and run nothing")
    args = p.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        watched = saved.get("watched") or [n for n in (saved["samples"] or [{}])[0] if n != "t"]
        warmup = args.warmup if args.warmup is not None else saved.get("args", {}).get("warmup", 120)
        print_tables(saved["samples"], watched, warmup)
        return
    if args.warmup is None:
        args.warmup = 120

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "gauntlet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="gauntlet-soak-")
    env = dict(os.environ, JWT_SECRET_KEY="soak-secret", GAUNTLET_LOG="warn")
    procs = {}

    def start(name, argv):
        log = open(os.path.join(work, f"{name}.log"), "w")
        procs[name] = subprocess.Popen([BIN] + argv, env=env, stdout=log, stderr=log, cwd=work)

    def stop_all():
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        tb, grpc, http = free_port(), free_port(), free_port()
        start("testbed", ["testbed", "--listen", f"127.0.0.1:{tb}"])
        start("coordinator", ["coordinator", "--listen", f"127.0.0.1:{grpc}",
                              "--http", f"127.0.0.1:{http}"])
        wait_for(lambda: listening(tb) and listening(grpc), 30, "testbed and coordinator listening")
        for i in range(args.workers):
            start(f"worker-{i + 1}", ["worker", "--coordinator", f"http://127.0.0.1:{grpc}",
                                      "--name", f"soak-{i + 1}", "--plan-env", "JWT_SECRET_KEY"])
        out = os.path.join(work, "run")
        start("run", ["run", args.plan, "--coordinator", f"http://127.0.0.1:{grpc}",
                      "--target", f"http://127.0.0.1:{tb}", "--min-workers", str(args.workers),
                      "--vus", str(args.vus), "--duration", f"{args.duration}s",
                      "--no-history", "--out", out])
        watched = ["coordinator", "testbed"] + [f"worker-{i + 1}" for i in range(args.workers)]
        samples = []
        t0 = time.time()
        while procs["run"].poll() is None:
            if time.time() - t0 > args.duration + 300:
                raise SystemExit("soak: the run did not end within its duration + 300 s")
            row = {"t": round(time.time() - t0)}
            for name in watched:
                row[name] = sample(procs[name].pid)
            samples.append(row)
            time.sleep(args.every)
        code = procs["run"].returncode
        with open(os.path.join(out, "report.json")) as f:
            report = json.load(f)
    finally:
        stop_all()

    print(f"run exit {code}: {report['totals']['sessions']} sessions, "
          f"{report['totals']['passed']} passed, verdict {report['verdict']}")
    print_tables(samples, watched, args.warmup)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "watched": watched, "samples": samples,
                       "sessions": report["totals"]["sessions"], "exit": code}, f, indent=1)


if __name__ == "__main__":
    main()
