#!/usr/bin/env bash
# HTTP load benchmark of the scale-out setup: wrk -> nginx (deploy/nginx.conf
# itself, upstreams, port and paths substituted) -> one or two saas-host
# instances -> one PostgreSQL database (a schema of its own, dropped at the
# end). A sibling of scripts/load-test.sh, with the same wrk scripts.
#
#   scripts/load-test-nginx.sh [postgres://postgres@127.0.0.1:5432/test]
#
# Runs, in order: one instance direct (no nginx, the reference), one instance
# through nginx, two instances through nginx; each POST /update then
# POST /predict for DURATION s. Besides req/s and latency it prints the CPU
# each party used during the run (from /proc: saas-host, nginx, the
# PostgreSQL backends serving them), in cores, so that updates/s per
# PostgreSQL core can be read off. Environment: DURATION (10), CONNECTIONS
# (32), THREADS (2), CARGO_TARGET_DIR.
set -euo pipefail

PG_URL="${1:-postgres://postgres@127.0.0.1:5432/test}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release/saas-host"

command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v nginx >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nginx-light; }
command -v psql >/dev/null 2>&1 || { echo "psql is needed to make the schema" >&2; exit 1; }
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p saas-host)

TMP="$(mktemp -d)"
chmod 755 "$TMP"
SCHEMA="load_nginx_$$"
PIDS=()
NGINX_PID=""
cleanup() {
  [[ -n "$NGINX_PID" ]] && kill -TERM "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

psql -q "$PG_URL" -c "CREATE SCHEMA $SCHEMA" >/dev/null
SEP='?'; [[ "$PG_URL" == *\?* ]] && SEP='&'
export DATABASE_URL="$PG_URL${SEP}options=-csearch_path%3D$SCHEMA"
cat > "$TMP/limits.json" <<'JSON'
{"enterprise": {"monthly_calls": null, "max_models": null, "rate_per_second": 100000000, "burst": 100000000}}
JSON
export LIMITS_FILE="$TMP/limits.json" LOG_FORMAT=json TRUSTED_PROXIES=127.0.0.0/8
export RUST_LOG="${RUST_LOG:-warn,saas_host::server=info}"
export SECRET_KEY="load-test secret key of at least thirty-two bytes"

# Starts one instance; appends its pid to PIDS and its address to ADDRS.
ADDRS=()
start_instance() {
  local log="$TMP/server-${#PIDS[@]}.log"
  "$BIN" serve --host 127.0.0.1 --port 0 > "$log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 200); do
    local addr
    addr="$(grep -o '"addr":"[^"]*"' "$log" | head -1 | cut -d'"' -f4 || true)"
    if [[ -n "$addr" ]]; then ADDRS+=("$addr"); return 0; fi
    sleep 0.05
  done
  echo "saas-host did not start" >&2; cat "$log" >&2; exit 1
}
stop_all() {
  [[ -n "$NGINX_PID" ]] && { kill -TERM "$NGINX_PID"; wait "$NGINX_PID" || true; NGINX_PID=""; }
  for p in "${PIDS[@]}"; do kill -TERM "$p"; wait "$p" || true; done
  PIDS=(); ADDRS=()
}

# nginx on a free port in front of ADDRS, from deploy/nginx.conf.
start_nginx() {
  NGINX_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  python3 - "$ROOT/deploy/nginx.conf" "$TMP" "$NGINX_PORT" "${ADDRS[@]}" > "$TMP/nginx.conf" <<'PY'
import sys
conf, tmp, port, addrs = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3], sys.argv[4:]
out, done = [], False
for line in conf.splitlines():
    t = line.strip()
    if t.startswith("server app"):
        if not done:
            opts = t.split(" ", 2)[2].rstrip(";")
            out += [f"    server {a} {opts};" for a in addrs]
            done = True
        continue
    line = {"listen 80;": f"    listen 127.0.0.1:{port};",
            "error_log /dev/stderr warn;": f"error_log {tmp}/nginx-error.log warn;",
            "access_log /dev/stdout qlearn;": f"  access_log {tmp}/access.log qlearn;",
            "http {": "http {\n" + "".join(f"  {k}_temp_path {tmp}/{k};\n" for k in
                      ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))}.get(t, line)
    out.append(line)
assert done
print("\n".join(out))
PY
  nginx -c "$TMP/nginx.conf" -p "$TMP" -g "daemon off; pid $TMP/nginx.pid;" &
  NGINX_PID=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$NGINX_PORT/healthz" >/dev/null && return 0
    sleep 0.05
  done
  echo "nginx did not start" >&2; cat "$TMP/nginx-error.log" >&2; exit 1
}

# CPU seconds (user+system) used so far by the given pids.
cpu_of() {
  python3 - "$@" <<'PY'
import os, sys
hz = os.sysconf("SC_CLK_TCK"); t = 0
for p in sys.argv[1:]:
    try:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        t += int(f[11]) + int(f[12])
    except OSError:
        pass
print(t / hz)
PY
}
# The PostgreSQL backends serving our instances (other clients of the same
# server are not counted; nor are its shared background processes, such as
# the WAL writer).
pg_pids() {
  local re ports
  re="$(IFS='|'; echo "${PIDS[*]}")"
  ports="$(ss -tnpH state established | grep -E "pid=($re)," | awk '{print $3" "$4}' \
    | grep -E ':5432$' | awk '{print $1}' | sed 's/.*://' | paste -sd, -)"
  [[ -n "$ports" ]] && psql -Atq "$PG_URL" -c "select pid from pg_stat_activity where client_port in ($ports)"
}
nginx_pids() { [[ -n "$NGINX_PID" ]] && { echo "$NGINX_PID"; pgrep -P "$NGINX_PID" || true; }; }
sample() { # -> "postgres saas-host nginx" CPU seconds
  echo "$(cpu_of $(pg_pids)) $(cpu_of "${PIDS[@]}") $(cpu_of $(nginx_pids))"
}

json_field() { python3 -c "import sys, json; print(json.load(sys.stdin)$1)"; }

run() { # label base-url
  local label="$1" base="$2"
  for route in update predict; do
    local pg0 app0 ngx0 pg1 app1 ngx1
    read -r pg0 app0 ngx0 <<< "$(sample)"
    local load; load="$(cut -d' ' -f1-3 /proc/loadavg)"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$ROOT/scripts/wrk/$route.lua" "$base" > "$TMP/$route.txt"
    read -r pg1 app1 ngx1 <<< "$(sample)"
    local line; line="$(grep '^RESULT' "$TMP/$route.txt" | sed 's/^RESULT //')"
    python3 - "$label" "$route" "$line" "$DURATION" "$pg0" "$pg1" "$app0" "$app1" "$ngx0" "$ngx1" "$load" <<'PY'
import sys
label, route, line, d = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
pg, app, ngx = [(float(sys.argv[i + 1]) - float(sys.argv[i])) / d for i in (5, 7, 9)]
kv = dict(x.split("=") for x in line.split())
rps = float(kv["rps"])
print(f"{label:<24} {route:<8} {rps:>8.0f} req/s  p50 {float(kv['p50_ms']):6.2f} ms  p99 {float(kv['p99_ms']):6.2f} ms  "
      f"errors {kv['non2xx_or_errors']:>4}  cores: postgres {pg:.2f} saas-host {app:.2f} nginx {ngx:.2f}"
      + (f"  ({rps / pg:,.0f} req/s per PostgreSQL core)" if pg > 0.05 else "") + f"  load {sys.argv[11]}")
PY
  done
}

# The user, made enterprise (limits lifted) with the admin CLI.
start_instance
EMAIL="bench-$RANDOM@example.com"
curl -sf -X POST "http://${ADDRS[0]}/register" -H 'content-type: application/json' \
  -d "{\"email\":\"$EMAIL\",\"password\":\"benchmark password\"}" > /dev/null
"$BIN" admin set-tier "$EMAIL" enterprise > /dev/null
stop_all

echo "saas-host $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), PostgreSQL, nginx $(nginx -v 2>&1 | cut -d/ -f2); wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, 1,000 array states; $(nproc) cores"
for setup in direct-1 nginx-1 nginx-2; do
  n="${setup#*-}"
  for _ in $(seq 1 "$n"); do start_instance; done
  if [[ "$setup" == direct-* ]]; then BASE="http://${ADDRS[0]}"; else start_nginx; BASE="http://127.0.0.1:$NGINX_PORT"; fi
  TOKEN="$(curl -sf -X POST "$BASE/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$EMAIL\",\"password\":\"benchmark password\"}" | json_field '["access_token"]')"
  MODEL="$(curl -sf -X POST "$BASE/models" -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \
    -d "{\"name\":\"bench-$setup\",\"n_actions\":4}" | json_field '["id"]')"
  export QL_TOKEN="$TOKEN" QL_MODEL="$MODEL"
  case "$setup" in
    direct-1) label="1 instance, direct" ;;
    nginx-1) label="nginx + 1 instance" ;;
    nginx-2) label="nginx + 2 instances" ;;
  esac
  run "$label" "$BASE"
  # Every update wrk saw answered was applied (and at most the ones in
  # flight at the end besides).
  sent="$(grep -o 'requests=[0-9]*' "$TMP/update.txt" | cut -d= -f2)"
  curl -sf "$BASE/status/$MODEL?limit=1" -H "authorization: Bearer $TOKEN" \
    | python3 -c 'import sys, json
s = json.load(sys.stdin)["stats"]; sent, conns = int(sys.argv[1]), int(sys.argv[2])
ok = sent <= s["updates"] <= sent + conns
print("  model after the run: %d updates (wrk counted %d answered), %d predictions%s" % (s["updates"], sent, s["predictions"], "" if ok else "  MISMATCH"))
sys.exit(0 if ok else 1)' "$sent" "$CONNECTIONS"
  stop_all
done
