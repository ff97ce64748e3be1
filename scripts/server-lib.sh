# Sourced by the scripts that run saas-host for a test or a benchmark
# (load-test.sh, schemathesis.sh): start the binary $BIN on a free
# 127.0.0.1 port (under $SERVER_WRAPPER if set) with its log in $TMP/server.log, learn its address
# (ADDR, from the JSON log: set LOG_FORMAT=json), stop it by its pid, and
# stop it and remove $TMP on exit. Needs BIN and TMP set.

PID=""
cleanup() {
  if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

start_server() {
  # SERVER_WRAPPER: a command to run the server under (e.g. valgrind).
  ${SERVER_WRAPPER:-} "$BIN" serve --host 127.0.0.1 --port 0 > "$TMP/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 1200); do
    ADDR="$(grep -o '"addr":"[^"]*"' "$TMP/server.log" | head -1 | cut -d'"' -f4 || true)"
    [[ -n "$ADDR" ]] && return 0
    kill -0 "$PID" 2>/dev/null || { cat "$TMP/server.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "server did not start" >&2; cat "$TMP/server.log" >&2; exit 1
}
stop_server() { kill -TERM "$PID"; wait "$PID" || true; PID=""; }

# For the benchmarks: a running server (started here) with an enterprise
# user, whose token is TOKEN, and BASE its URL. Needs json_field and the
# limits file that lifts the enterprise rate limit.
enterprise_user() {
  local email="bench-$RANDOM@example.com"
  start_server
  BASE="http://$ADDR"
  curl -sf -X POST "$BASE/register" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"benchmark password\"}" > /dev/null
  # SQLite serves one process: stop the server for the admin CLI, then restart.
  stop_server
  "$BIN" admin set-tier "$email" enterprise
  start_server
  BASE="http://$ADDR"
  TOKEN="$(curl -sf -X POST "$BASE/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"benchmark password\"}" | json_field '["access_token"]')"
}

# Waits for a line "listening on ADDR" in file $1 (the bare hyper server's
# first line) and sets ADDR.
wait_listening() {
  ADDR=""
  for _ in $(seq 1 600); do
    ADDR="$(sed -n 's/^listening on //p' "$1" 2>/dev/null || true)"
    [[ -n "$ADDR" ]] && return 0
    sleep 0.05
  done
  echo "no 'listening on' in $1" >&2; cat "$1" >&2; exit 1
}
