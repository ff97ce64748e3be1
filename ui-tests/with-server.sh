#!/usr/bin/env bash
# Shared by scripts/ui-test.sh and scripts/screenshots.sh:
#   ui-tests/with-server.sh <command...>
# makes sure Chromium, Node and playwright-core are there (installing them when
# it can), builds saas-host, starts it on a free port with a fresh SQLite
# database, waits for /healthz, runs <command...> inside ui-tests/ with
# QLEARN_BASE_URL set, and stops the server (by its pid) however it ends.
#
# Exit 75 means "no Chromium and none could be installed": the callers turn it
# into a loud SKIPPED line, or a failure when QLEARN_REQUIRE_BROWSER=1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
log() { printf '[ui] %s\n' "$*" >&2; }

apt_install() {
  if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then return 1; fi
  log "installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "${QLEARN_APT_UPDATED:-}" ]; then
    apt-get update -qq >/dev/null || true
    export QLEARN_APT_UPDATED=1
  fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- Chromium (Debian's package; never a browser build downloaded by npm) ---
if [ ! -x "$CHROMIUM" ]; then
  apt_install chromium fonts-dejavu-core || true
fi
if [ ! -x "$CHROMIUM" ]; then
  log "no Chromium at $CHROMIUM"
  exit 75
fi

# --- Node and playwright-core ---
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm || true
fi
if ! command -v node >/dev/null 2>&1; then
  log "node is missing and could not be installed"
  exit 1
fi
if [ ! -f "$here/node_modules/playwright-core/package.json" ]; then
  log "installing playwright-core (no browser download)"
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
  (cd "$here" && { npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error; })
fi

# --- the server ---
if [ -z "${QLEARN_SKIP_BUILD:-}" ]; then
  log "cargo build -p saas-host"
  cargo build -p saas-host
fi
BIN="${QLEARN_HOST_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/saas-host}"
if [ ! -x "$BIN" ]; then
  log "no server binary at $BIN"
  exit 1
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/qlearn-ui.XXXXXX")"
server_pid=""
cleanup() {
  local rc=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$rc" != "0" ] && [ -f "$tmp/server.log" ]; then
    log "server log (last 60 lines):"
    tail -n 60 "$tmp/server.log" >&2 || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$(node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")"
base="http://127.0.0.1:$port"
# The test drives the page much faster than a person clicks, and on a loaded
# 2-core CI machine the page's own pacing can bunch up: the free tier keeps the
# SPEC's monthly quota (100) and model limit (3), which the test checks, but gets
# a higher per-second rate limit. Rate limiting itself is tested by saas-host's
# integration tests. The free tier also gets decision logging (a paid
# feature: the decisions view is tested on it), not the advanced algorithms
# (the plans page shows free without them).
cat >"$tmp/limits.json" <<'JSON'
{"free": {"monthly_calls": 100, "max_models": 3, "rate_per_second": 100, "burst": 200,
          "features": ["decisions"]}}
JSON
log "starting saas-host on $base (database $tmp/ui.db)"
SECRET_KEY="ui-test-secret-0123456789abcdefghijklmnop" RUST_LOG="${RUST_LOG:-info}" \
  "$BIN" serve --port "$port" --host 127.0.0.1 --database-url "sqlite://$tmp/ui.db" \
  --limits-file "$tmp/limits.json" \
  --checkout-url 'https://buy.example/checkout?client_reference_id={user_id}&plan={plan}' \
  >"$tmp/server.log" 2>&1 &
server_pid=$!

healthy=""
for _ in $(seq 1 150); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    log "saas-host exited before it was healthy"
    exit 1
  fi
  if node -e "fetch('$base/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))" 2>/dev/null; then
    healthy=1
    break
  fi
  sleep 0.2
done
if [ -z "$healthy" ]; then
  log "saas-host did not answer /healthz within 30 s"
  exit 1
fi

cd "$here"
# QLEARN_HOST_BIN: for a test that starts a second server of its own
# (the white-labelled dashboard, lib.mjs `startServer`).
export QLEARN_BASE_URL="$base" CHROMIUM_PATH="$CHROMIUM" QLEARN_HOST_BIN="$BIN"
set +e
"$@"
rc=$?
set -e
exit "$rc"
