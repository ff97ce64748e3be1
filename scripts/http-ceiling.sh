#!/usr/bin/env bash
# Issue 16's yardstick: the product's HTTP load test and a bare hyper server
# (benches/src/bin/bare-hyper.rs: reads the body, answers a constant
# predict-shaped JSON) driven by the same wrk scripts on the same machine, in
# one run, RUNS times alternating; prints every run's figures, the ratio
# saas-host / bare hyper per route (req/s, and server CPU time per request),
# the machine's load before each run, and per route how many runs met the
# issue's bar (>= 50% of bare hyper, p99 under 5 ms).
#
#   scripts/http-ceiling.sh                 # saas-host on SQLite (temp database)
#   scripts/http-ceiling.sh postgres://postgres@127.0.0.1:5432/test
#
# Environment: RUNS (default 3), DURATION (8 s per route), CONNECTIONS (32),
# THREADS (2), CARGO_TARGET_DIR, PIN_WORKERS=1 (both servers bind each worker
# thread to one CPU: `saas-host --pin-workers`), WORKER_THREADS=N (both servers
# run N async workers; default one per core), SAAS_WORKER_THREADS=N (saas-host
# only, overriding WORKER_THREADS for it), BUSY_POLL_US (saas-host's
# `--busy-poll-us`, read from the environment). The logging predict (a model that logs
# decisions) has no bare-hyper twin: its ratio is against the predict ceiling.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
RUNS="${RUNS:-3}"
export DURATION="${DURATION:-8}" CONNECTIONS="${CONNECTIONS:-32}" THREADS="${THREADS:-2}"

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (apt-get)" >&2
  apt-get update -qq && apt-get install -y -qq wrk
fi
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p saas-host -p qlearn-benches --bin bare-hyper)

TMP="$(mktemp -d)"
BARE_PID=""
cleanup() {
  if [[ -n "$BARE_PID" ]] && kill -0 "$BARE_PID" 2>/dev/null; then kill "$BARE_PID"; wait "$BARE_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

bare_run() {
  "$TARGET/release/bare-hyper" 0 > "$TMP/bare.log" &
  BARE_PID=$!
  local addr=""
  for _ in $(seq 1 200); do
    addr="$(sed -n 's/^listening on //p' "$TMP/bare.log" 2>/dev/null || true)"
    [[ -n "$addr" ]] && break
    sleep 0.05
  done
  [[ -n "$addr" ]] || { echo "bare-hyper did not start" >&2; exit 1; }
  for route in update predict; do
    local before after line reqs
    before="$(awk '{print $14 + $15}' "/proc/$BARE_PID/stat")"
    line="$(QL_TOKEN=unused QL_MODEL=unused wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency \
      -s "$ROOT/scripts/wrk/$route.lua" "http://$addr" | grep '^RESULT')"
    after="$(awk '{print $14 + $15}' "/proc/$BARE_PID/stat")"
    reqs="$(echo "$line" | sed -n 's/^RESULT requests=\([0-9]*\) .*/\1/p')"
    echo "$route: $line server_cpu_us_per_req=$(python3 -c "print(round(($after - $before) * 1e6 / $(getconf CLK_TCK) / max($reqs, 1), 1))")"
  done
  kill "$BARE_PID"; wait "$BARE_PID" 2>/dev/null || true; BARE_PID=""
}

rps() { sed -n "s/^$1: RESULT .* rps=\([0-9]*\) .*/\1/p" "$2"; }
p99() { sed -n "s/^$1: RESULT .* p99_ms=\([0-9.]*\) .*/\1/p" "$2"; }

cpu() { sed -n "s/^$1: RESULT .* server_cpu_us_per_req=\([0-9.]*\).*/\1/p" "$2"; }

# ratio: saas-host req/s over bare hyper's; cpu_ratio: bare hyper's server
# CPU time per request over saas-host's (the same share, measured as CPU
# spent, which other load on the machine disturbs less).
printf '%-4s %-6s %-16s %9s %9s %8s %9s %9s %8s %7s %9s\n' run load route saas_rps saas_p99 saas_cpu bare_rps bare_p99 bare_cpu ratio cpu_ratio
for run in $(seq 1 "$RUNS"); do
  load="$(cut -d' ' -f1 /proc/loadavg)"
  bare_run > "$TMP/bare-$run.txt"
  saas_env=()
  if [[ -n "${SAAS_WORKER_THREADS:-}" ]]; then saas_env=(WORKER_THREADS="$SAAS_WORKER_THREADS"); fi
  env "${saas_env[@]}" bash "$ROOT/scripts/load-test.sh" "$@" > "$TMP/saas-$run.txt"
  for route in update predict predict_logging; do
    twin="$route"; [[ "$route" == predict_logging ]] && twin=predict
    s="$(rps "$route" "$TMP/saas-$run.txt")"; b="$(rps "$twin" "$TMP/bare-$run.txt")"
    sc="$(cpu "$route" "$TMP/saas-$run.txt")"; bc="$(cpu "$twin" "$TMP/bare-$run.txt")"
    printf '%-4s %-6s %-16s %9s %9s %8s %9s %9s %8s %6.1f%% %8.1f%%\n' "$run" "$load" "$route" "$s" \
      "$(p99 "$route" "$TMP/saas-$run.txt")" "$sc" "$b" "$(p99 "$twin" "$TMP/bare-$run.txt")" "$bc" \
      "$(python3 -c "print(100 * $s / $b)")" "$(python3 -c "print(100 * $bc / $sc)")"
    echo "$route $s $b $(p99 "$route" "$TMP/saas-$run.txt")" >> "$TMP/summary.txt"
  done
  grep -h 'Non-2xx\|^saas-host' "$TMP/saas-$run.txt" | sed 's/^/    /' || true
done

# Issue 16's bar, per route over these runs: saas-host at >= 50% of bare
# hyper's req/s, and p99 under 5 ms (the logging predict against the predict
# ceiling, for information).
python3 - "$TMP/summary.txt" <<'PY'
import sys
runs = {}
for line in open(sys.argv[1]):
    route, saas, bare, p99 = line.split()
    runs.setdefault(route, []).append((float(saas) / float(bare), float(p99)))
for route, rs in runs.items():
    met = sum(r >= 0.5 for r, _ in rs)
    fast = sum(p < 5.0 for _, p in rs)
    lo, hi = min(r for r, _ in rs), max(r for r, _ in rs)
    print(f"{route}: >= 50% of bare hyper in {met} of {len(rs)} runs "
          f"({100 * lo:.2f}-{100 * hi:.2f}%), p99 < 5 ms in {fast} of {len(rs)}")
PY
