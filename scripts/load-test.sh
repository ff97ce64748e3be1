#!/usr/bin/env bash
# HTTP load benchmark of saas-host with wrk (Debian package) on loopback.
#
#   scripts/load-test.sh                      # SQLite (temp database)
#   scripts/load-test.sh postgres://postgres@127.0.0.1:5432/test   # PostgreSQL
#   EVAL_DURING=1 scripts/load-test.sh         # also predict while an evaluation job runs
#
# Builds the release binary, starts it on a free 127.0.0.1 port with a fresh
# database, registers a user and makes it enterprise with the admin CLI,
# creates a model, then runs wrk (2 threads, 32 connections, DURATION s) over
# 1,000 array states: first POST /update, then POST /predict, then POST
# /predict on a model that logs decisions (issue 14: every answer is a logged
# decision awaiting its reward), then POST /rewards: one final reward for
# each decision that run logged (learned at once; should the rewards outrun
# the decisions, the ids start over and those rewards are late). The route
# `mixed` (not run unless named in ROUTES) sends decisions and their rewards
# together, the rewards QL_LAG decisions behind (scripts/wrk/mixed.lua), on a
# model of its own. Prints
# req/s and p99 latency per route, the server's CPU per request and the load
# average, and stops the server by its pid.
#
# The enterprise tier's per-user rate limit (500/s by default) would refuse
# almost everything a single benchmark user sends, so the server runs with a
# limits file that lifts it (limits are configuration); quotas and metering
# still run on every call. Environment: DURATION (default 10), CONNECTIONS
# (32), THREADS (2), RUST_LOG (default: warnings only), BLOCKING_THREADS,
# SQLITE_OPTIONS (the temp database URL's options, e.g. cache_mb=16),
# CARGO_TARGET_DIR (where the release binary is built), SAAS_HOST_BIN (a
# binary to run instead, e.g. another commit's for a before/after), PERF_OUT (a folder:
# record a `perf` CPU profile of the server, with DWARF call graphs, during
# each route's run there as ROUTE.data; see docs/benchmarks-http.md), PERF_STAT=1 (count
# the server's context switches and system calls per request with `perf stat`),
# SCHED_OUT (a folder: record the whole machine's scheduler events for 2 s in
# the middle of each route's run there as ROUTE.sched.data, and print where its
# idle time came from with scripts/idle-causes.py; one perf at a time: it is
# skipped when PERF_OUT or PERF_STAT is set),
# ROUTE_HOOK (a command run as `$ROUTE_HOOK before ROUTE` and `$ROUTE_HOOK after
# ROUTE` around each route's run, outside its measurement: scripts/http-ceiling.sh
# measures bare hyper there, right before and after saas-host, on the same route),
# IDLE_SECS (after the routes, the server's CPU over that many seconds with no
# request: its background work over what the run stored).
set -euo pipefail

DB_URL="${1:-}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${SAAS_HOST_BIN:-$TARGET/release/saas-host}"

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (apt-get)" >&2
  apt-get update -qq && apt-get install -y -qq wrk
fi
if [[ -z "${SAAS_HOST_BIN:-}" ]]; then
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p saas-host)
fi

TMP="$(mktemp -d)"
# shellcheck source=scripts/server-lib.sh
source "$ROOT/scripts/server-lib.sh"

if [[ -z "$DB_URL" ]]; then
  DB_URL="sqlite://$TMP/load.db${SQLITE_OPTIONS:+?$SQLITE_OPTIONS}"
  BACKEND=sqlite
else
  BACKEND=postgres
fi
cat > "$TMP/limits.json" <<'JSON'
{"enterprise": {"monthly_calls": null, "max_models": null, "rate_per_second": 100000000, "burst": 100000000}}
JSON

export DATABASE_URL="$DB_URL" LIMITS_FILE="$TMP/limits.json" LOG_FORMAT=json
export RUST_LOG="${RUST_LOG:-warn,saas_host::server=info}"
export SECRET_KEY="load-test secret key of at least thirty-two bytes"

# The server's CPU time so far, in clock ticks (utime + stime of /proc/PID/stat).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
# The kernel's share of it (stime).
sys_ticks() { awk '{print $15}' "/proc/$PID/stat"; }
# The machine's idle and busy jiffies so far (all CPUs, /proc/stat): a run
# whose server and wrk leave CPUs idle is waiting, not computing.
idle_ticks() { awk '$1 == "cpu" {print $5 + $6}' /proc/stat; }
all_ticks() { awk '$1 == "cpu" {s = 0; for (i = 2; i <= 9; i++) s += $i; print s}' /proc/stat; }
# The jiffies the hypervisor gave the machine's CPUs to other guests (steal):
# a run with a long latency tail and high steal was the host's, not ours.
steal_ticks() { awk '$1 == "cpu" {print $9}' /proc/stat; }
json_field() { python3 -c "import sys, json; print(json.load(sys.stdin)$1)"; }

enterprise_user
MODEL="$(curl -sf -X POST "$BASE/models" -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \
  -d '{"name":"bench","n_actions":4}' | json_field '["id"]')"
LOGGING_MODEL="$(curl -sf -X POST "$BASE/models" -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \
  -d '{"name":"bench-decisions","n_actions":4}' | json_field '["id"]')"
ROUTES="${ROUTES:-update predict predict_logging rewards}"
if ! curl -sf -X PATCH "$BASE/models/$LOGGING_MODEL" -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \
  -d '{"decisions":{"reward_wait_seconds":600}}' > /dev/null; then
  # An older build (SAAS_HOST_BIN) without decision logging.
  echo "this build has no decision logging: predict_logging skipped"
  ROUTES="update predict"
fi
if [[ " $ROUTES " == *" mixed "* ]]; then
  # The mixed route's own model: its decision ids are the client's.
  MIXED_MODEL="$(curl -sf -X POST "$BASE/models" -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \
    -d '{"name":"bench-mixed","n_actions":4}' | json_field '["id"]')"
  curl -sf -X PATCH "$BASE/models/$MIXED_MODEL" -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \
    -d '{"decisions":{"reward_wait_seconds":600}}' > /dev/null
fi
DECISIONS=0
curl -sf "$BASE/dashboard" -H "authorization: Bearer $TOKEN" | json_field '["limits"]["tier"]' | grep -qx enterprise

export QL_TOKEN="$TOKEN" QL_MODEL="$MODEL"
echo "saas-host $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') on $BACKEND at $BASE; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, 1,000 array states; $(nproc) cores; workers ${WORKER_THREADS:-one per core}, pinned ${PIN_WORKERS:-no}, busy poll ${BUSY_POLL_US:-0} µs"
for route in $ROUTES; do
  if [[ -n "${ROUTE_HOOK:-}" ]]; then $ROUTE_HOOK before "$route"; fi
  script="$route"
  if [[ "$route" == predict_logging ]]; then script=predict; fi
  QL_MODEL="$MODEL"
  if [[ "$route" == predict_logging || "$route" == rewards ]]; then QL_MODEL="$LOGGING_MODEL"; fi
  if [[ "$route" == mixed ]]; then QL_MODEL="$MIXED_MODEL"; fi
  cpu_before="$(cpu_ticks)"
  sys_before="$(sys_ticks)"
  idle_before="$(idle_ticks)"
  all_before="$(all_ticks)"
  steal_before="$(steal_ticks)"
  PERF_PID=""
  if [[ -n "${PERF_OUT:-}" ]]; then
    perf record -q -F 499 --call-graph dwarf,16384 -p "$PID" -o "$PERF_OUT/$route.data" -- sleep "$DURATION" 2>/dev/null &
    PERF_PID=$!
  elif [[ "${PERF_STAT:-}" == 1 ]]; then
    perf stat -x, -e context-switches,raw_syscalls:sys_enter -p "$PID" -o "$TMP/$route.stat" -- sleep "$DURATION" 2>/dev/null &
    PERF_PID=$!
  elif [[ -n "${SCHED_OUT:-}" ]]; then
    # Two seconds from the middle of the run: the whole machine (the load
    # generator's switches are half of the story).
    (sleep "$(python3 -c "print(max(0, $DURATION / 2 - 1))")" &&
      perf sched record -q -o "$SCHED_OUT/$route.sched.data" -- sleep 2 > /dev/null 2>&1) &
    PERF_PID=$!
  fi
  QL_MODEL="$QL_MODEL" QL_DECISIONS="$DECISIONS" QL_THREADS="$THREADS" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$ROOT/scripts/wrk/$script.lua" "$BASE" > "$TMP/$route.txt"
  if [[ -n "$PERF_PID" ]]; then wait "$PERF_PID" || true; fi
  cpu_after="$(cpu_ticks)"
  sys_after="$(sys_ticks)"
  idle_after="$(idle_ticks)"
  all_after="$(all_ticks)"
  steal_after="$(steal_ticks)"
  line="$(grep '^RESULT' "$TMP/$route.txt")"
  reqs="$(sed -n 's/^RESULT requests=\([0-9]*\) .*/\1/p' "$TMP/$route.txt")"
  # The server's CPU time (user + system, all threads) per request: less
  # sensitive to what else runs on the machine than req/s.
  cpu_us="$(python3 -c "print(round(($cpu_after - $cpu_before) * 1e6 / $(getconf CLK_TCK) / max($reqs, 1), 1))")"
  if [[ "$route" == predict_logging ]]; then DECISIONS="$reqs"; fi
  sys_us="$(python3 -c "print(round(($sys_after - $sys_before) * 1e6 / $(getconf CLK_TCK) / max($reqs, 1), 1))")"
  idle_pct="$(python3 -c "print(round(100 * ($idle_after - $idle_before) / max($all_after - $all_before, 1), 1))")"
  steal_pct="$(python3 -c "print(round(100 * ($steal_after - $steal_before) / max($all_after - $all_before, 1), 1))")"
  echo "$route: $line server_cpu_us_per_req=$cpu_us of_which_kernel=$sys_us machine_idle_pct=$idle_pct machine_steal_pct=$steal_pct loadavg=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
  if grep -q 'Non-2xx' "$TMP/$route.txt"; then grep 'Non-2xx' "$TMP/$route.txt"; fi
  if [[ -f "$TMP/$route.stat" ]]; then
    # The server's context switches and system calls per request (all its
    # threads; the window is wrk's, so the division is close, not exact).
    awk -F, -v n="$reqs" -v r="$route" '$3 == "context-switches" {cs = $1} $3 == "raw_syscalls:sys_enter" {sc = $1}
      END {printf "%s: context_switches_per_req=%.2f syscalls_per_req=%.2f\n", r, cs / n, sc / n}' "$TMP/$route.stat"
  fi
  if [[ -n "${SCHED_OUT:-}" && -f "$SCHED_OUT/$route.sched.data" ]]; then
    echo "$route: where the machine's idle time came from (2 s mid-run):"
    python3 "$ROOT/scripts/idle-causes.py" "$SCHED_OUT/$route.sched.data" 8 | sed 's/^/  /'
  fi
  if [[ -n "${ROUTE_HOOK:-}" ]]; then $ROUTE_HOOK after "$route"; fi
done
# IDLE_SECS=N: after the routes, the server's CPU over N seconds with no
# request (its settle passes, checkpoints and other background work over what
# the run stored), in milliseconds of CPU per second.
if [[ -n "${IDLE_SECS:-}" ]]; then
  cpu_before="$(cpu_ticks)"
  sleep "$IDLE_SECS"
  cpu_after="$(cpu_ticks)"
  echo "idle after the routes: server_cpu_ms_per_s=$(python3 -c "print(round(($cpu_after - $cpu_before) * 1e3 / $(getconf CLK_TCK) / $IDLE_SECS, 1))") over $IDLE_SECS s, $DECISIONS decisions logged"
fi
# EVAL_DURING=1 (issue 18: evaluations never stall live traffic): after the
# routes, an offline evaluation job (greedy, uniform, logged and one
# candidate replay) over the logging model's decisions, with the predict
# route run again while the job's worker computes; prints the predict
# figures during the job and the job's own times.
if [[ "${EVAL_DURING:-}" == 1 && " $ROUTES " == *" rewards "* ]]; then
  JOB="$(curl -sf -X POST "$BASE/models/$LOGGING_MODEL/evaluations" -H 'content-type: application/json' \
    -H "authorization: Bearer $TOKEN" \
    -d '{"policies":[{"kind":"greedy"},{"kind":"uniform"},{"kind":"logged"},{"kind":"candidate","name":"lr","config":{"learning_rate":0.05}}],"mode":"one_step","min_ess":0,"min_coverage":0}' \
    | json_field '["id"]')"
  cpu_before="$(cpu_ticks)"
  QL_MODEL="$MODEL" QL_THREADS="$THREADS" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$ROOT/scripts/wrk/predict.lua" "$BASE" > "$TMP/during.txt"
  cpu_after="$(cpu_ticks)"
  reqs="$(sed -n 's/^RESULT requests=\([0-9]*\) .*/\1/p' "$TMP/during.txt")"
  cpu_us="$(python3 -c "print(round(($cpu_after - $cpu_before) * 1e6 / $(getconf CLK_TCK) / max($reqs, 1), 1))")"
  echo "predict during the evaluation job: $(grep '^RESULT' "$TMP/during.txt") server_cpu_us_per_req=$cpu_us loadavg=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
  for _ in $(seq 1 600); do
    STATE="$(curl -sf "$BASE/models/$LOGGING_MODEL/evaluations/$JOB" -H "authorization: Bearer $TOKEN")"
    echo "$STATE" | json_field '["status"]' | grep -qE '^(done|failed|cancelled)$' && break
    sleep 1
  done
  echo "$STATE" | python3 -c 'import sys, json; j = json.load(sys.stdin); r = j.get("result") or {}; print("evaluation job: %s, created %s, started %s, finished %s, %s decisions" % (j["status"], j["created_at"], j["started_at"], j["finished_at"], r.get("decisions")))'
fi
STATUS="$(curl -sf "$BASE/status/$MODEL?limit=1" -H "authorization: Bearer $TOKEN")"
echo "$STATUS" | python3 -c 'import sys, json; s = json.load(sys.stdin)["stats"]; print("model after the run: %d updates, %d predictions, %d states" % (s["updates"], s["predictions"], s["states"]))'
if [[ " $ROUTES " == *" rewards "* ]]; then
  curl -sf "$BASE/models/$LOGGING_MODEL" -H "authorization: Bearer $TOKEN" | python3 -c 'import sys, json; m = json.load(sys.stdin); print("logging model after the run: %s; %d updates" % (m["decision_stats"], m["stats"]["updates"]))'
fi
if [[ " $ROUTES " == *" mixed "* ]]; then
  curl -sf "$BASE/models/$MIXED_MODEL" -H "authorization: Bearer $TOKEN" | python3 -c 'import sys, json; m = json.load(sys.stdin); print("mixed model after the run: %s; %d updates" % (m["decision_stats"], m["stats"]["updates"]))'
fi
stop_server
# Stored bytes per decision (SQLite): the pages of the decision rows and their
# indexes (dbstat), over the decisions logged.
if [[ "$BACKEND" == sqlite && "$DECISIONS" -gt 0 ]]; then
  python3 - "$TMP/load.db" "$DECISIONS" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
n = int(sys.argv[2])
names = ("decisions", "decisions_time", "decisions_due", "decisions_step")
rows = c.execute(
    "SELECT name, SUM(pgsize), SUM(unused) FROM dbstat WHERE name IN (%s) GROUP BY name"
    % ",".join("?" * len(names)), names).fetchall()
total = sum(r[1] for r in rows)
print("stored bytes per decision: %.1f (%d decisions; pages by table: %s)"
      % (total / n, n, ", ".join("%s %d B (%d unused)" % r for r in rows)))
PY
fi
