#!/usr/bin/env bash
# HTTP load benchmark of saas-host with wrk (Debian package) on loopback.
#
#   scripts/load-test.sh                      # SQLite (temp database)
#   scripts/load-test.sh postgres://postgres@127.0.0.1:5432/test   # PostgreSQL
#
# Builds the release binary, starts it on a free 127.0.0.1 port with a fresh
# database, registers a user and makes it enterprise with the admin CLI,
# creates a model, then runs wrk (2 threads, 32 connections, DURATION s) over
# 1,000 array states: first POST /update, then POST /predict. Prints req/s and
# p99 latency per route and stops the server by its pid.
#
# The enterprise tier's per-user rate limit (500/s by default) would refuse
# almost everything a single benchmark user sends, so the server runs with a
# limits file that lifts it (limits are configuration); quotas and metering
# still run on every call. Environment: DURATION (default 10), CONNECTIONS
# (32), THREADS (2), RUST_LOG (default: warnings only), BLOCKING_THREADS,
# CARGO_TARGET_DIR (where the release binary is built).
set -euo pipefail

DB_URL="${1:-}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release/saas-host"

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (apt-get)" >&2
  apt-get update -qq && apt-get install -y -qq wrk
fi
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p saas-host)

TMP="$(mktemp -d)"
# shellcheck source=scripts/server-lib.sh
source "$ROOT/scripts/server-lib.sh"

if [[ -z "$DB_URL" ]]; then
  DB_URL="sqlite://$TMP/load.db"
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

json_field() { python3 -c "import sys, json; print(json.load(sys.stdin)$1)"; }

EMAIL="bench-$RANDOM@example.com"
start_server
BASE="http://$ADDR"
curl -sf -X POST "$BASE/register" -H 'content-type: application/json' \
  -d "{\"email\":\"$EMAIL\",\"password\":\"benchmark password\"}" > "$TMP/reg.json"
# SQLite serves one process: stop the server for the admin CLI, then restart.
stop_server
"$BIN" admin set-tier "$EMAIL" enterprise
start_server
BASE="http://$ADDR"
TOKEN="$(curl -sf -X POST "$BASE/login" -H 'content-type: application/json' \
  -d "{\"email\":\"$EMAIL\",\"password\":\"benchmark password\"}" | json_field '["access_token"]')"
MODEL="$(curl -sf -X POST "$BASE/models" -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \
  -d '{"name":"bench","n_actions":4}' | json_field '["id"]')"
curl -sf "$BASE/dashboard" -H "authorization: Bearer $TOKEN" | json_field '["limits"]["tier"]' | grep -qx enterprise

export QL_TOKEN="$TOKEN" QL_MODEL="$MODEL"
echo "saas-host $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') on $BACKEND at $BASE; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, 1,000 array states; $(nproc) cores"
for route in update predict; do
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$ROOT/scripts/wrk/$route.lua" "$BASE" > "$TMP/$route.txt"
  line="$(grep '^RESULT' "$TMP/$route.txt")"
  echo "$route: $line"
  if grep -q 'Non-2xx' "$TMP/$route.txt"; then grep 'Non-2xx' "$TMP/$route.txt"; fi
done
STATUS="$(curl -sf "$BASE/status/$MODEL?limit=1" -H "authorization: Bearer $TOKEN")"
echo "$STATUS" | python3 -c 'import sys, json; s = json.load(sys.stdin)["stats"]; print("model after the run: %d updates, %d predictions, %d states" % (s["updates"], s["predictions"], s["states"]))'
stop_server
