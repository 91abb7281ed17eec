#!/usr/bin/env bash
# The deploy end-to-end test: builds the image, starts a compose fleet (coordinator, testbed,
# three workers) under its own project name, and checks what real clusters do to a fleet.
# Bounded in time, and it removes its containers, network and volume even when it fails.
#   deploy/e2e.sh            (needs a Docker engine and docker-compose)
# Scenarios:
#   1. the staging-suite plan: the report's counts equal the testbed's ground truth; the
#      README's client command from another directory leaves the report files in that
#      directory's ./gauntlet-runs, owned by the caller, and prints that path;
#   2. `docker kill` of one worker during a longer run: the run completes, the worker is
#      reported lost, its share reassigned, the counts match the testbed's within the
#      in-flight bound the report states, and the verdict is error (lost load never passes);
#   3. `docker network disconnect` of one worker from the coordinator's network for two
#      snapshot intervals (well under the heartbeat timeout), then reconnect: its buffered
#      snapshots arrive and count once (the report equals the ground truth, nobody is lost);
#   4. the testbed restarted mid-run: the failures are classified (connect_refused,
#      unexpected_close...), the run completes, the verdict reflects the thresholds;
#   5. the coordinator stopped mid-run and started again: workers stop their sessions in
#      bounded time and reconnect; the run is reported as interrupted in the history.
set -euo pipefail
cd "$(dirname "$0")/.."

project="gauntlet-e2e-$$"
compose=(docker-compose -f deploy/compose.yaml -p "$project")
work=$(mktemp -d)
chmod 777 "$work"
export JWT_SECRET_KEY="e2e-secret-$$"
export GAUNTLET_TOKEN="e2e-worker-token-$$-$RANDOM" GAUNTLET_SUBMIT_TOKEN="e2e-submit-token-$$-$RANDOM"
export GAUNTLET_HTTP_PORT=0

cleanup() {
  "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "E2E FAIL: $*" >&2; "${compose[@]}" logs --tail=40 >&2 || true; exit 1; }
step() { echo "== $*"; }

# Every wait is bounded; the whole script also has an outer limit when .ci/run calls it.
step "build the image"
deploy/build-image.sh gauntlet:dev

step "compose up: coordinator, testbed, 3 workers"
timeout 120 "${compose[@]}" up -d --scale worker=3 >/dev/null

testbed_url() {
  echo "http://$("${compose[@]}" port testbed 8080)"
}
stats() { curl -sf "$(testbed_url)/__testbed/stats"; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$@"; }

# `run` with its report in $work/<name>; extra flags after the plan.
run_plan() {
  local name=$1 plan=$2; shift 2
  mkdir -p "$work/$name"; chmod 777 "$work/$name"
  # PWD: the client's ./gauntlet-runs bind mount is made in $work, never in the checkout.
  PWD="$work" timeout 240 "${compose[@]}" run --rm -v "$work/$name:/out" -e GAUNTLET_OUT=/out run "$plan" --min-workers 3 "$@" \
    > "$work/$name.log" 2>&1 || true
  [ -f "$work/$name/report.json" ] || { cat "$work/$name.log" >&2; fail "$name: no report.json"; }
}

reset_testbed() {
  # A fresh ground truth: restart the testbed container and wait for it to be healthy.
  timeout 60 "${compose[@]}" restart testbed >/dev/null
  for _ in $(seq 1 60); do
    stats >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  fail "the testbed did not come back"
}

step "1. staging suite on three workers: report = ground truth"
run_plan suite /plans/staging-suite.toml
truth=$(stats)
echo "$truth" > "$work/truth-suite.json"
verdict=$(json "$work/suite/report.json" "d['verdict']")
sessions=$(json "$work/suite/report.json" "d['totals']['sessions']")
ws_sessions=$(json "$work/suite/report.json" "sum(m['count'] for k, m in d['metrics'].items() if k in ('session.connect-ping', 'session.agent-run'))")
accepted=$(json "$work/truth-suite.json" "d['connections']['accepted']")
# (/health is also hit by the compose health check; the discovery endpoint only by the plan.)
health=$(json "$work/truth-suite.json" "d['http'].get('/api/discovery/services', {}).get('200', 0)")
http_sessions=$(json "$work/suite/report.json" "d['metrics']['session.critical-endpoints']['count']")
workers=$(json "$work/suite/report.json" "len(d['workers'])")
[ "$verdict" = pass ] || fail "suite verdict $verdict"
[ "$sessions" = 120 ] || fail "suite sessions $sessions"
[ "$workers" = 3 ] || fail "suite workers $workers"
[ "$ws_sessions" = "$accepted" ] || fail "WebSocket sessions $ws_sessions != testbed accepted $accepted"
[ "$http_sessions" = "$health" ] || fail "endpoint sessions $http_sessions != testbed discovery answers $health"
echo "   ok: $sessions sessions, WebSocket $ws_sessions = accepted $accepted, HTTP $http_sessions = discovery answers $health"

step "1b. the README's client command: reports land in ./gauntlet-runs of the caller"
# From a directory of the user's, as the user, with the plan path relative to /work.
mkdir -p "$work/cwd/gauntlet-runs"
repo=$(pwd)
(cd "$work/cwd" && GAUNTLET_USER="$(id -u):$(id -g)" timeout 240 docker-compose -f "$repo/deploy/compose.yaml" -p "$project" \
  run --rm run plans/health.toml --min-workers 3) > "$work/cwd.log" 2>&1 || true
shown=$(sed -n 's/^report: //p' "$work/cwd.log" | head -1)
case "$shown" in gauntlet-runs/run-*/report.*) ;; *) cat "$work/cwd.log" >&2; fail "readme client: printed report path '$shown'";; esac
dir=$(dirname "$shown")
for f in report.json report.md report.html junit.xml; do
  [ -f "$work/cwd/$dir/$f" ] || { cat "$work/cwd.log" >&2; fail "readme client: no $dir/$f in the caller's directory"; }
done
[ "$(stat -c %u "$work/cwd/$dir/report.html")" = "$(id -u)" ] || fail "readme client: report.html is not the caller's"
echo "   ok: $shown (and report.json, report.html, junit.xml) in the caller's ./gauntlet-runs, owned by the caller"

# A soak for scenarios 2-5: 30 VUs, ping and a short pause, for `duration`.
soak() {
  cat > "$work/$1.toml" <<PLAN
name = "e2e-$1"
[target]
base_url = "http://testbed:8080"
[auth]
secret_env = "JWT_SECRET_KEY"
claims = { iss = "netra-auth-service", token_type = "access" }
[load]
vus = 30
duration = "$2"
graceful_stop = "3s"
[[scenarios]]
name = "ping"
steps = [
  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { ws_send = { json = { type = "ping" } } },
  { ws_expect = { type = "pong" } },
  { sleep = { duration = "100ms" } },
  { ws_close = {} },
]
PLAN
  chmod 644 "$work/$1.toml"
  mkdir -p "$work/$1"; chmod 777 "$work/$1"
}
start_soak() {
  PWD="$work" timeout 240 "${compose[@]}" run --rm -v "$work/$1:/out" -v "$work/$1.toml:/$1.toml:ro" -e GAUNTLET_OUT=/out \
    run "/$1.toml" --min-workers 3 > "$work/$1.log" 2>&1 &
}
wait_established() {
  for _ in $(seq 1 120); do
    n=$(stats 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['connections']['established'])" 2>/dev/null || echo 0)
    [ "$n" -ge "$1" ] && return 0
    sleep 0.25
  done
  fail "the run never reached $1 established connections"
}

step "2. docker kill of one worker mid-run: lost, reassigned, counts within the bound"
reset_testbed
soak kill 12s
start_soak kill
runner=$!
wait_established 500
victim=$("${compose[@]}" ps -q worker | sed -n 1p)
docker kill "$victim" >/dev/null
wait "$runner" || true
[ -f "$work/kill/report.json" ] || { cat "$work/kill.log" >&2; fail "kill: no report.json"; }
lost=$(json "$work/kill/report.json" "sum(1 for w in d['workers'] if w['lost_at_ms'] is not None)")
shares=$(json "$work/kill/report.json" "round(sum(w['share'] for w in d['workers']), 6)")
delivered=$(json "$work/kill/report.json" "round(d['delivered'], 6)")
verdict=$(json "$work/kill/report.json" "d['verdict']")
bound=$(json "$work/kill/report.json" "sum(w['in_flight_bound'] or 0 for w in d['workers'])")
reported=$(json "$work/kill/report.json" "d['totals']['sessions']")
accepted=$(stats | python3 -c "import json,sys; print(json.load(sys.stdin)['connections']['accepted'])")
[ "$lost" = 1 ] || fail "kill: $lost workers reported lost"
python3 -c "import sys; sys.exit(0 if abs(float('$shares') - float('$delivered')) < 1e-5 and float('$delivered') < 1 else 1)" \
  || fail "kill: workers' shares add up to $shares, delivered $delivered (they must agree, below 1)"
[ "$verdict" = error ] || fail "kill: verdict $verdict (lost load is never a pass)"
[ "$accepted" -ge "$reported" ] || fail "kill: the report counts $reported sessions, the testbed only $accepted"
[ $((accepted - reported)) -le "$bound" ] || fail "kill: $((accepted - reported)) sessions missing, above the stated bound $bound"
echo "   ok: 1 worker lost, verdict error, delivered $delivered, testbed $accepted - report $reported = $((accepted - reported)) <= bound $bound"
# Back to three workers (the killed container starts again as a new worker).
timeout 120 "${compose[@]}" up -d --scale worker=3 >/dev/null

# 2 s: well under the 5 s heartbeat timeout, since after a cut TCP resumes only at its next
# retransmission (backed off while the cut lasted) or when HTTP/2 keepalive (2 s + 3 s) gives the
# connection up: a 3 s cut could leave a worker silent for over 5 s.
step "3. a worker cut from the coordinator for 2 s (timeout 5 s): buffered snapshots count once"
reset_testbed
soak cut 10s
start_soak cut
runner=$!
wait_established 300
victim=$("${compose[@]}" ps -q worker | sed -n 1p)
docker network disconnect "${project}_control" "$victim"
sleep 2
docker network connect "${project}_control" "$victim"
wait "$runner" || true
[ -f "$work/cut/report.json" ] || { cat "$work/cut.log" >&2; fail "cut: no report.json"; }
lost=$(json "$work/cut/report.json" "sum(1 for w in d['workers'] if w['lost_at_ms'] is not None)")
reported=$(json "$work/cut/report.json" "d['totals']['sessions']")
accepted=$(stats | python3 -c "import json,sys; print(json.load(sys.stdin)['connections']['accepted'])")
[ "$lost" = 0 ] || fail "cut: a short cut cost a worker ($lost lost)"
[ "$reported" = "$accepted" ] || fail "cut: report $reported sessions != testbed accepted $accepted"
echo "   ok: nobody lost, report $reported = testbed accepted $accepted"

step "4. the testbed restarted mid-run: failures classified, the run completes, verdict from thresholds"
reset_testbed
soak restart 10s
start_soak restart
runner=$!
wait_established 300
timeout 60 "${compose[@]}" restart -t 0 testbed >/dev/null
wait "$runner" || true
[ -f "$work/restart/report.json" ] || { cat "$work/restart.log" >&2; fail "restart: no report.json"; }
verdict=$(json "$work/restart/report.json" "d['verdict']")
categories=$(json "$work/restart/report.json" "' '.join(sorted({f['category'] for f in d['failures']}))")
[ "$verdict" = fail ] || fail "restart: verdict $verdict (the implicit threshold must fail)"
for c in $categories; do
  case "$c" in
    connect_refused|unexpected_close|dns|timeout) ;;
    *) json "$work/restart/report.json" "[(f['category'], f['detail'], f['samples'][:1]) for f in d['failures']]" >&2
       fail "restart: unexpected category $c" ;;
  esac
done
[ -n "$categories" ] || fail "restart: no failure recorded"
echo "   ok: verdict fail, failures classified as: $categories"

step "5. the coordinator stopped mid-run and started again: sessions stop, run interrupted in history"
reset_testbed
soak stop 30s
start_soak stop
runner=$!
wait_established 300
timeout 60 "${compose[@]}" stop -t 5 coordinator >/dev/null
stopped=$(date +%s)
# Workers give up their sessions once the coordinator has been away for their lease (5 s) plus
# the plan's graceful stop (3 s): allow 30 s.
while :; do
  open=$(stats | python3 -c "import json,sys; print(json.load(sys.stdin)['connections']['open'])")
  [ "$open" = 0 ] && break
  [ $(( $(date +%s) - stopped )) -le 30 ] || fail "stop: $open connections still open 30 s after the coordinator stopped"
  sleep 0.5
done
echo "   workers stopped their sessions after $(( $(date +%s) - stopped )) s"
wait "$runner" && fail "stop: the run client reported success without its coordinator" || true
timeout 60 "${compose[@]}" start coordinator >/dev/null
history=$(timeout 60 "${compose[@]}" run --rm --entrypoint /usr/local/bin/gauntlet run history --history /data/history.db 2>/dev/null)
echo "$history" | grep -q "e2e-stop .*interrupted" || {
  "${compose[@]}" logs coordinator | grep -iE "history|interrupted|error" >&2 || true
  fail "stop: the run is not marked interrupted in the history: $history"
}
port=$("${compose[@]}" port coordinator 7001)
for _ in $(seq 1 40); do
  workers=$(curl -sf -H "Authorization: Bearer $GAUNTLET_SUBMIT_TOKEN" "http://$port/api/runs" | python3 -c "import json,sys; print(json.load(sys.stdin)['workers'])" 2>/dev/null || echo 0)
  [ "$workers" -ge 3 ] && break
  sleep 0.5
done
[ "$workers" -ge 3 ] || fail "stop: workers did not reconnect to the restarted coordinator ($workers)"
echo "   ok: run interrupted in the history, $workers workers reconnected"

echo "E2E PASS"
