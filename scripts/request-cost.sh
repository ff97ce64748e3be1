#!/usr/bin/env bash
# Issue 16: what one request costs in user-space instructions, counted by
# valgrind's callgrind (repeatable whatever else the machine runs, unlike
# req/s or CPU time), for saas-host and for the bare hyper ceiling
# (benches/src/bin/bare-hyper.rs), with the same wrk scripts.
#
#   scripts/request-cost.sh                 # saas-host on SQLite (temp database)
#   SAAS_HOST_BIN=path scripts/request-cost.sh   # another build (before/after)
#   ROUTES="update predict predict_logging" scripts/request-cost.sh
#                                           # also the predict of a model that
#                                           # logs its decisions (saas-host only)
#   KEEP=dir scripts/request-cost.sh        # keep the callgrind files there
#                                           # (callgrind_annotate --inclusive=yes FILE)
#
# Each server runs under `valgrind --tool=callgrind` with instrumentation off;
# per route, instrumentation is switched on (callgrind_control -i on), wrk runs
# DURATION seconds (default 10) with CONNECTIONS connections (default 32),
# it is switched off and the counts dumped: instructions per request
# = the dump's total / the requests wrk counted. Kernel time (syscalls, the
# loopback, context switches) is not in these counts: `PERF_STAT=1
# scripts/load-test.sh` counts system calls and context switches per request
# of the normal binary. Under valgrind the server runs one thread at a time and ~50x
# slower, so group commits gather more calls than at full speed: compare
# builds with this script, not with the figures of a load test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
ROUTES="${ROUTES:-update predict}"
for tool in wrk valgrind; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "installing $tool (apt-get)" >&2
    apt-get update -qq && apt-get install -y -qq "$tool"
  fi
done
if [[ -z "${SAAS_HOST_BIN:-}" ]]; then
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p saas-host)
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p qlearn-benches --bin bare-hyper)
fi
BIN="${SAAS_HOST_BIN:-$TARGET/release/saas-host}"
BARE_BIN="${BARE_HYPER_BIN:-$TARGET/release/bare-hyper}"

TMP="$(mktemp -d)"
OUT="${KEEP:-$TMP/cg}"
mkdir -p "$OUT"
# shellcheck source=scripts/server-lib.sh
source "$ROOT/scripts/server-lib.sh"

cat > "$TMP/limits.json" <<'JSON'
{"enterprise": {"monthly_calls": null, "max_models": null, "rate_per_second": 100000000, "burst": 100000000}}
JSON
export DATABASE_URL="sqlite://$TMP/cost.db" LIMITS_FILE="$TMP/limits.json" LOG_FORMAT=json
export RUST_LOG="${RUST_LOG:-warn,saas_host::server=info}"
export SECRET_KEY="request-cost secret key of at least thirty-two bytes"
json_field() { python3 -c "import sys, json; print(json.load(sys.stdin)$1)"; }

# The user, the model and a token, made on the normal binary.
enterprise_user
MODEL="$(curl -sf -X POST "$BASE/models" -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \
  -d '{"name":"cost","n_actions":4}' | json_field '["id"]')"
# A model that logs its decisions, for the logging predict (saas-host only:
# bare hyper answers every route the same, so it measures it as predict).
LOGGING_MODEL="$(curl -sf -X POST "$BASE/models" -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \
  -d '{"name":"cost-decisions","n_actions":4}' | json_field '["id"]')"
curl -sf -X PATCH "$BASE/models/$LOGGING_MODEL" -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \
  -d '{"decisions":{"reward_wait_seconds":600}}' > /dev/null
export QL_TOKEN="$TOKEN" QL_MODEL="$MODEL" QL_THREADS=2

# wrk against $1 (base URL) for each route; the server's pid is $2.
measure() {
  local base="$1" pid="$2" name="$3" route line reqs ir
  for route in $ROUTES; do
    local script="$route" model="$MODEL"
    if [[ "$route" == predict_logging ]]; then
      [[ "$name" == bare ]] && continue
      script=predict model="$LOGGING_MODEL"
    fi
    callgrind_control -i on "$pid" > /dev/null 2>&1
    QL_MODEL="$model" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$ROOT/scripts/wrk/$script.lua" "$base" > "$TMP/wrk.txt"
    callgrind_control -i off "$pid" > /dev/null 2>&1
    # Each dump is a new file (callgrind.out.PID.N): the newest is this route's.
    callgrind_control -d "$pid" > /dev/null 2>&1
    local dump=""
    for _ in $(seq 1 100); do
      dump="$(ls -t "$OUT"/callgrind.out."$pid".* 2>/dev/null | head -1 || true)"
      [[ -n "$dump" ]] && grep -q '^totals:' "$dump" && break
      sleep 0.2
    done
    mv "$dump" "$OUT/$name-$route.callgrind"
    line="$(grep '^RESULT' "$TMP/wrk.txt")"
    reqs="$(echo "$line" | sed -n 's/^RESULT requests=\([0-9]*\) .*/\1/p')"
    ir="$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$OUT/$name-$route.callgrind")"
    printf '%-6s %-8s requests=%-7s instructions_per_request=%s\n' "$name" "$route" "$reqs" \
      "$(python3 -c "print(round($ir / max($reqs, 1)))")"
  done
}

CALLGRIND="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$OUT/callgrind.out.%p"

# saas-host under callgrind, the same database.
stop_server
SERVER_WRAPPER="$CALLGRIND" start_server
measure "http://$ADDR" "$PID" saas
stop_server

# bare hyper under callgrind.
$CALLGRIND "$BARE_BIN" 0 > "$TMP/bare.log" 2>&1 &
PID=$!
wait_listening "$TMP/bare.log"
measure "http://$ADDR" "$PID" bare
stop_server
