# Sourced by the scripts that run saas-host for a test or a benchmark
# (load-test.sh, schemathesis.sh): start the binary $BIN on a free
# 127.0.0.1 port with its log in $TMP/server.log, learn its address
# (ADDR, from the JSON log: set LOG_FORMAT=json), stop it by its pid, and
# stop it and remove $TMP on exit. Needs BIN and TMP set.

PID=""
cleanup() {
  if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

start_server() {
  "$BIN" serve --host 127.0.0.1 --port 0 > "$TMP/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 200); do
    ADDR="$(grep -o '"addr":"[^"]*"' "$TMP/server.log" | head -1 | cut -d'"' -f4 || true)"
    [[ -n "$ADDR" ]] && return 0
    kill -0 "$PID" 2>/dev/null || { cat "$TMP/server.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "server did not start" >&2; cat "$TMP/server.log" >&2; exit 1
}
stop_server() { kill -TERM "$PID"; wait "$PID" || true; PID=""; }
