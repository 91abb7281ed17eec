#!/usr/bin/env bash
# gauntlet at scale on one machine (BENCHMARKS.md, goal 1): N concurrent established WebSocket
# sessions (default 100,000) held for a while (default 60 s) by several `gauntlet worker`
# processes against several `gauntlet testbed` processes on their own 127.0.0.x addresses,
# through one `gauntlet coordinator`. Each process holds at most --per-process sessions (the
# open-files limit is 20,000 per process), so N = 100,000 takes 6 testbeds and 6 workers; each
# worker binds its connections to two source addresses of its own (--local-addresses). The
# plan (open model): N arrivals at --rate per second, each session `ws_connect` (JWT, upgrade,
# confirmation) then a long `sleep`, then `ws_close`; every session is established before the
# first one ends. The testbeds ping every connection every 20 s and close those that leave a
# ping unanswered for 20 s (as uvicorn), so a sleeping session must answer them: --no-pings
# turns the testbeds' pings off. During the hold it samples every process's RSS and CPU every 5 s and the
# testbeds' open connections (their ground truth), prints a table, waits for the report and
# exits 0 only if every session passed and all N were open at once.
#
# Usage: bench/scale.sh [--sessions N] [--hold SECONDS] [--rate PER_S] [--per-process M]
#                       [--processes P] [--no-pings] [--target-dir DIR] [--out DIR]
# Every process it starts is recorded by PID and killed by PID on exit, failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS=100000
HOLD=60
RATE=2000
PER_PROCESS=17000
PROCESSES=""
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
OUT=""
PINGS="20s"
while [ $# -gt 0 ]; do
  case "$1" in
    --sessions) SESSIONS="$2"; shift 2 ;;
    --hold) HOLD="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --per-process) PER_PROCESS="$2"; shift 2 ;;
    --processes) PROCESSES="$2"; shift 2 ;;
    --target-dir) TARGET_DIR="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --no-pings) PINGS="0s"; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
# At least two of each, so the several-process path is the one measured.
if [ -z "$PROCESSES" ]; then
  PROCESSES=$(( (SESSIONS + PER_PROCESS - 1) / PER_PROCESS ))
  [ "$PROCESSES" -lt 2 ] && PROCESSES=2
fi
PER=$(( (SESSIONS + PROCESSES - 1) / PROCESSES ))
if [ "$PER" -gt 19500 ]; then
  echo "$PER sessions per process would exceed the open-files limit (20,000): raise --processes" >&2
  exit 2
fi
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/gauntlet-scale.XXXXXX)
OUT="${OUT:-$WORK/out}"
PIDS=()
cleanup() {
  local code=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  echo "logs: $WORK" >&2
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building (release)" >&2
CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -p gauntlet >&2
G="$TARGET_DIR/release/gauntlet"

export JWT_SECRET_KEY=scale-bench-secret GAUNTLET_LOG=warn

# A port free on every testbed address (each testbed its own 127.0.0.x).
PORT=$(python3 - "$PROCESSES" <<'PY'
import socket, sys
n = int(sys.argv[1])
for port in range(18080, 19000):
    try:
        socks = []
        for i in range(n):
            s = socket.socket(); s.bind((f"127.0.0.{11 + i}", port)); socks.append(s)
        for s in socks: s.close()
        print(port); break
    except OSError:
        for s in socks: s.close()
PY
)

echo "== $SESSIONS sessions: $PROCESSES testbeds and $PROCESSES workers, $PER each; hold ${HOLD}s; $RATE/s" >&2
TARGETS=()
ROLES=()
# Server pings every 20 s (as uvicorn) unless --no-pings: a session idle in its `sleep` answers
# them, or the testbed closes it 1011 and its `ws_close` fails it.
printf '[websocket]\nkeepalive_interval = "%s"\n' "$PINGS" >"$WORK/testbed.toml"
for i in $(seq 0 $((PROCESSES - 1))); do
  addr="127.0.0.$((11 + i)):$PORT"
  "$G" testbed --config "$WORK/testbed.toml" --listen "$addr" --max-managers-per-user 1000000 \
    >"$WORK/testbed-$i.log" 2>&1 &
  PIDS+=($!); ROLES+=("testbed-$i")
  TARGETS+=("\"http://$addr\"")
done

"$G" coordinator --listen 127.0.0.1:0 >"$WORK/coordinator.log" 2>&1 &
COORD_PID=$!
PIDS+=($COORD_PID); ROLES+=("coordinator")
URL=""
for _ in $(seq 200); do
  URL=$(grep -o 'coordinator listening on [^ ]*' "$WORK/coordinator.log" | awk '{print $4}' || true)
  [ -n "$URL" ] && break
  sleep 0.05
done
[ -n "$URL" ] || { echo "the coordinator did not start: $WORK/coordinator.log" >&2; exit 1; }
URL="http://$URL"

for i in $(seq 0 $((PROCESSES - 1))); do
  "$G" worker --coordinator "$URL" --name "scale-$i" --plan-env JWT_SECRET_KEY \
    --local-addresses "127.0.1.$((2 * i + 1)),127.0.1.$((2 * i + 2))" --drain 5s \
    >"$WORK/worker-$i.log" 2>&1 &
  PIDS+=($!); ROLES+=("worker-$i")
done

RAMP=$(python3 -c "print(max(1, round($SESSIONS / $RATE, 3)))")
SLEEP=$(python3 -c "print(round($RAMP + $HOLD + 20))")
GRACE=$(( SLEEP + 120 ))
# Every session must find a free VU on the worker that owns its arrival: a share owns its
# width's part of the arrivals give or take a few (a low-discrepancy sequence), so each worker
# gets 64 slots to spare (with exactly N, a 100,000-session run dropped 8 arrivals).
MAX_VUS=$((SESSIONS + 64 * PROCESSES))
PLAN="$WORK/scale.toml"
cat >"$PLAN" <<EOF
# bench/scale.sh: $SESSIONS sessions, each established then idle, all at once for ${HOLD}s.
name = "scale"
[target]
base_url = [$(IFS=,; echo "${TARGETS[*]}")]
connect_timeout = "60s"
[auth]
secret_env = "JWT_SECRET_KEY"
subject = "scale-user-{subject_index}"
subject_pool = 100000000
claims = { iss = "netra-auth-service", token_type = "access" }
[load]
model = "open"
rate = $RATE
duration = "${RAMP}s"
max_vus = $MAX_VUS
graceful_stop = "${GRACE}s"
[[scenarios]]
name = "idle"
steps = [
  { ws_connect = { timeout = "60s", confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { sleep = { duration = "${SLEEP}s" } },
  { ws_close = {} },
]
[fleet]
min_workers = $PROCESSES
EOF

# Each process's RSS before the run: the per-session figures are the growth over it.
sleep 1
declare -A RSS0
for idx in "${!ROLES[@]}"; do
  pid=${PIDS[$idx]}
  RSS0[$pid]=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
done

"$G" run "$PLAN" --coordinator "$URL" --min-workers "$PROCESSES" --out "$OUT" --no-history \
  >"$WORK/run.log" 2>&1 &
RUN_PID=$!
PIDS+=($RUN_PID)

# A figure of the testbeds' stats (SECTION FIELD), summed over the testbeds (their ground truth).
testbeds_total() {
  local total=0 n
  for t in "${TARGETS[@]}"; do
    t=${t//\"/}
    n=$(curl -s --max-time 5 "$t/__testbed/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1']['$2'])" 2>/dev/null || echo 0)
    total=$((total + n))
  done
  echo "$total"
}
open_total() { testbeds_total connections open; }

echo "== waiting until all $SESSIONS sessions are open" >&2
START=$(date +%s)
LIMIT=$(python3 -c "print(int($RAMP * 4 + 120))")
while true; do
  OPEN=$(open_total)
  [ "$OPEN" -ge "$SESSIONS" ] && break
  [ $(( ($(date +%s) - START) % 10 )) -eq 0 ] && echo "   $OPEN open" >&2
  if ! kill -0 "$RUN_PID" 2>/dev/null || [ $(( $(date +%s) - START )) -gt "$LIMIT" ]; then
    echo "only $OPEN of $SESSIONS sessions open after $(( $(date +%s) - START )) s" >&2
    tail -5 "$WORK/run.log" >&2 || true
    exit 1
  fi
  sleep 1
done
echo "== all $OPEN open after $(( $(date +%s) - START )) s; holding ${HOLD}s, sampling every 5 s" >&2

TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
declare -A CPU0 MAXRSS
for idx in "${!ROLES[@]}"; do
  pid=${PIDS[$idx]}
  CPU0[$pid]=$(cpu_ticks "$pid")
  MAXRSS[$pid]=$(rss_kib "$pid")
done
MIN_OPEN=$OPEN
HOLD_START=$(date +%s.%N)
END=$(( $(date +%s) + HOLD ))
while [ "$(date +%s)" -lt "$END" ]; do
  sleep 5
  for idx in "${!ROLES[@]}"; do
    pid=${PIDS[$idx]}
    r=$(rss_kib "$pid")
    [ "$r" -gt "${MAXRSS[$pid]}" ] && MAXRSS[$pid]=$r
  done
  OPEN=$(open_total)
  [ "$OPEN" -lt "$MIN_OPEN" ] && MIN_OPEN=$OPEN
  echo "   open $OPEN" >&2
done
HOLD_S=$(python3 -c "import time; print(round(time.time() - $HOLD_START, 1))")

echo
echo "| process | RSS before the run | RSS at the end of the hold | peak RSS in the hold | CPU-s in the hold | CPU (of one core) | RSS growth per session |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for idx in "${!ROLES[@]}"; do
  pid=${PIDS[$idx]}
  role=${ROLES[$idx]}
  r=$(rss_kib "$pid")
  c=$(( $(cpu_ticks "$pid") - ${CPU0[$pid]} ))
  per="-"
  r0=${RSS0[$pid]}
  case "$role" in worker-*|testbed-*) per=$(python3 -c "print(f'{($r - $r0) / $PER:.2f} KiB')") ;; esac
  python3 -c "print(f'| $role (pid $pid) | {$r0/1024:,.1f} MiB | {$r/1024:,.1f} MiB | {${MAXRSS[$pid]}/1024:,.1f} MiB | {$c/$TICK:.1f} | {100*$c/$TICK/$HOLD_S:.1f} % | $per |')"
done
echo
echo "open sessions (testbeds' count): at least $MIN_OPEN of $SESSIONS throughout the ${HOLD_S}s hold"
KEEPALIVE=$(testbeds_total frames keepalive_timeouts)
echo "connections the testbeds closed for an unanswered ping (pings every $PINGS): $KEEPALIVE"

echo "== waiting for the run to end (sessions close, the report is written)" >&2
wait "$RUN_PID" || true
REPORT="$OUT/report.json"
[ -f "$REPORT" ] || { echo "no report: $WORK/run.log" >&2; exit 1; }
python3 - "$REPORT" "$SESSIONS" "$MIN_OPEN" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
n, min_open = int(sys.argv[2]), int(sys.argv[3])
t = r["totals"]
print(f"report: {t['sessions']} sessions, {t['passed']} passed, {t['failed']} failed, "
      f"{t['interrupted']} interrupted, {t['dropped']} dropped; verdict {r['verdict']}: {r['verdict_reason']}")
for f in r["failures"][:5]:
    print(f"  {f['count']} x {f['category']}: {f['detail']}")
ok = t["passed"] == n and t["failed"] == 0 and min_open >= n
print("goal: " + ("met" if ok else "NOT met") + f" ({n} sessions held with zero failures)")
sys.exit(0 if ok else 1)
PY
