#!/usr/bin/env bash
# The engine's step benchmark, run RUNS times (each a fresh process), with
# the per-run figures and the medians: qlearn and rurel steps per second and
# their ratio, per state kind.
#
#   scripts/bench-engine.sh            # 6 runs of the step group
#   RUNS=3 GROUP=update scripts/bench-engine.sh
#
# Why several processes: on the development VM the same binary moves by up
# to 1.8x from one process to the next (the FxHash reference too), so one
# run's ratio says little; the median of several does. Timing is the
# benchmark thread's CPU time (QLEARN_BENCH_CLOCK=cpu), bench profile with
# fat LTO. Environment: RUNS (default 6), GROUP (step, update or predict).
set -euo pipefail

RUNS="${RUNS:-6}"
GROUP="${GROUP:-step}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Build once, then run the benchmark executable directly.
BIN="$(cargo bench -p qlearn-benches --bench engine --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "engine" and m.get("executable"):
        print(m["executable"])')"
if [ -z "$BIN" ]; then
  echo "could not build the engine benchmark" >&2
  exit 1
fi

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
for run in $(seq "$RUNS"); do
  echo "run $run of $RUNS ..." >&2
  QLEARN_BENCH_CLOCK=cpu "$BIN" --bench --warm-up-time 1 --measurement-time 3 "$GROUP/" >"$OUT/run-$run.txt" 2>&1
done

python3 - "$OUT" "$RUNS" "$GROUP" <<'PY'
import re, statistics, sys

out, runs, group = sys.argv[1], int(sys.argv[2]), sys.argv[3]
kinds = ["int", "string12", "array2"]


def parse(path):
    """Median throughput (M elements/s) of each benchmark id in a criterion log."""
    found, current = {}, None
    for line in open(path):
        m = re.match(r"^(\w+/[\w-]+/\w+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"thrpt:\s+\[\S+ \S+ ([0-9.]+) (\S+)", line)
        if m and current and current not in found:
            scale = {"Melem/s": 1.0, "Kelem/s": 1e-3, "Gelem/s": 1e3}.get(m.group(2), 1.0)
            found[current] = float(m.group(1)) * scale
    return found


results = [parse(f"{out}/run-{r}.txt") for r in range(1, runs + 1)]
print(f"{group}: million operations per second (thread CPU time), {runs} runs")
print()
print("| run | " + " | ".join(f"qlearn {k}" for k in kinds) + " | "
      + " | ".join(f"rurel {k}" for k in kinds) + " | ratio " + " / ".join(kinds) + " |")
print("| --- |" + " ---: |" * (2 * len(kinds)) + " --- |")
ratios = {k: [] for k in kinds}
for i, res in enumerate(results, 1):
    q = [res.get(f"{group}/qlearn/{k}") for k in kinds]
    r = [res.get(f"{group}/rurel/{k}") for k in kinds]
    rat = []
    for k, a, b in zip(kinds, q, r):
        if a and b:
            ratios[k].append(a / b)
            rat.append(f"{a / b:.2f}")
        else:
            rat.append("n/a")
    cells = [f"{v:.2f}" if v else "n/a" for v in q + r]
    print(f"| {i} | " + " | ".join(cells) + " | " + " / ".join(rat) + " |")
print()
for k in kinds:
    q = [res[f"{group}/qlearn/{k}"] for res in results if f"{group}/qlearn/{k}" in res]
    r = [res[f"{group}/rurel/{k}"] for res in results if f"{group}/rurel/{k}" in res]
    if q and r and ratios[k]:
        print(f"{k}: qlearn median {statistics.median(q):.1f} ({min(q):.1f}-{max(q):.1f}), "
              f"rurel median {statistics.median(r):.2f}, ratio median {statistics.median(ratios[k]):.2f}x "
              f"({min(ratios[k]):.2f}-{max(ratios[k]):.2f})")
ref = [res.get(f"{group}/fxhash-reference/int") for res in results]
ref = [v for v in ref if v]
if ref:
    print(f"FxHash reference (int): median {statistics.median(ref):.1f} ({min(ref):.1f}-{max(ref):.1f})")
PY
