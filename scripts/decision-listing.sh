#!/usr/bin/env bash
# What the dashboard's read of a decision log costs on a long log
# (GET /models/{id}/decisions), on SQLite (temp database) or PostgreSQL:
#
#   scripts/decision-listing.sh                      # SQLite
#   scripts/decision-listing.sh postgres://...       # PostgreSQL (a fresh schema; psql
#                                                    # runs ANALYZE after the fill)
#   OLD_BIN=path scripts/decision-listing.sh         # also an older build, on the same file
#
# Starts the release binary (SAAS_HOST_BIN, else built) with an enterprise
# user, fills one logging model with FILL_SECONDS (default 30) of logging
# predicts (wrk, 2 threads, 32 connections, 1,000 array states), then times
# each request REPEAT times (default 5) with curl and prints the median and
# the slowest:
#   - oldest-first: the dashboard before `order`: the count (`offset=0&limit=1`),
#     then the newest 1,000 past an offset of total - 1,000;
#   - newest, uncounted: `order=newest&count=false&limit=1000` (the dashboard now);
#   - newest, counted: `order=newest&limit=1000`;
#   - the page half-way down the log, newest first, by `offset` and by the
#     `cursor` of the decision before it.
# With OLD_BIN (a build without `order`), the server is restarted on the same
# database with it and the oldest-first pair is timed there too. Stops what it
# starts by pid.
set -euo pipefail

DB_URL="${1:-}"
FILL_SECONDS="${FILL_SECONDS:-30}"
REPEAT="${REPEAT:-5}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${SAAS_HOST_BIN:-$TARGET/release/saas-host}"
if [[ -z "${SAAS_HOST_BIN:-}" ]]; then
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p saas-host)
fi
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }

TMP="$(mktemp -d)"
# shellcheck source=scripts/server-lib.sh
source "$ROOT/scripts/server-lib.sh"
DB_URL="${DB_URL:-sqlite://$TMP/listing.db}"
cat > "$TMP/limits.json" <<'JSON'
{"enterprise": {"monthly_calls": null, "max_models": null, "rate_per_second": 100000000, "burst": 100000000}}
JSON
export DATABASE_URL="$DB_URL" LIMITS_FILE="$TMP/limits.json" LOG_FORMAT=json
export RUST_LOG="${RUST_LOG:-warn,saas_host::server=info}"
export SECRET_KEY="listing bench secret key of at least thirty-two bytes"
json_field() { python3 -c "import sys, json; print(json.load(sys.stdin)$1)"; }

enterprise_user
MODEL="$(curl -sf -X POST "$BASE/models" -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \
  -d '{"name":"listing","n_actions":4}' | json_field '["id"]')"
curl -sf -X PATCH "$BASE/models/$MODEL" -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \
  -d '{"decisions":{"reward_wait_seconds":3600}}' > /dev/null
QL_TOKEN="$TOKEN" QL_MODEL="$MODEL" wrk -t2 -c32 -d"${FILL_SECONDS}s" -s "$ROOT/scripts/wrk/predict.lua" "$BASE" > "$TMP/fill.txt"
TOTAL="$(curl -sf "$BASE/models/$MODEL/decisions?limit=1" -H "authorization: Bearer $TOKEN" | json_field '["total"]')"
if [[ "$DB_URL" == postgres* ]]; then
  # The statistics autovacuum keeps of a table that grew gradually: without
  # them the planner takes the just-filled table for empty.
  psql -q "$DB_URL" -c 'ANALYZE decisions'
fi
echo "saas-host $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') at $DB_URL: $TOTAL decisions in one model's log"

# Seconds one GET of $1 (a query) takes.
get() {
  curl -sf -o /dev/null -w '%{time_total}\n' "$BASE/models/$MODEL/decisions?$1" -H "authorization: Bearer $TOKEN"
}
# Times REPEAT runs of `$2...` and prints label $1 with the median and the slowest, in ms.
timed() {
  local label="$1"; shift
  local runs=()
  for _ in $(seq 1 "$REPEAT"); do runs+=("$("$@")"); done
  printf '%s\n' "${runs[@]}" | python3 -c "
import sys, statistics
t = sorted(float(x) * 1000 for x in sys.stdin.read().split())
print(f'$label: median {statistics.median(t):.1f} ms, slowest {t[-1]:.1f} ms over {len(t)}')"
}
oldest_first() {
  local a b
  a="$(get 'offset=0&limit=1')"
  b="$(get "offset=$((TOTAL > 1000 ? TOTAL - 1000 : 0))&limit=1000")"
  python3 -c "print($a + $b)"
}
timed "oldest-first (count, then an offset of total - 1000)" oldest_first
timed "newest, uncounted (order=newest&count=false&limit=1000)" get 'order=newest&count=false&limit=1000'
timed "newest, counted (order=newest&limit=1000)" get 'order=newest&limit=1000'
HALF=$((TOTAL / 2))
CURSOR="$(curl -sf "$BASE/models/$MODEL/decisions?order=newest&count=false&limit=1&offset=$((HALF - 1))" \
  -H "authorization: Bearer $TOKEN" | json_field '["next"]')"
timed "half-way down by offset (order=newest&count=false&limit=1000&offset=$HALF)" \
  get "order=newest&count=false&limit=1000&offset=$HALF"
timed "the same page by cursor (order=newest&count=false&limit=1000&cursor=...)" \
  get "order=newest&count=false&limit=1000&cursor=$CURSOR"

if [[ -n "${OLD_BIN:-}" ]]; then
  stop_server
  BIN="$OLD_BIN"
  start_server
  BASE="http://$ADDR"
  echo "the same database on $OLD_BIN"
  timed "oldest-first (count, then an offset of total - 1000)" oldest_first
fi
