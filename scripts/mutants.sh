#!/usr/bin/env bash
# Mutation testing (issue 19), three ways:
#
#   scripts/mutants.sh                 # the hand-made mutations of scripts/mutants.tsv
#   scripts/mutants.sh cors xff        # only the named ones
#   scripts/mutants.sh --full [ARGS]   # cargo-mutants over the engine, tenancy,
#                                      # stores and the HTTP host (hours: run it in
#                                      # the background)
#   scripts/mutants.sh --diff [BASE]   # cargo-mutants on the lines changed from
#                                      # BASE to HEAD (default: origin/main or main),
#                                      # bounded (what .ci/run runs, BASE = HEAD~1)
#
# --full and --diff need cargo-mutants (`cargo install cargo-mutants`; the
# registry's crate). Both build in a copy of the tree with their own target
# dir (MUTANTS_TARGET_DIR, default target/mutants; a copy of an existing
# target dir there saves the first build), at `nice -n 19`, one job (`-j 1`,
# the machine is shared), each mutant's tests stopped after
# MUTANTS_TIMEOUT seconds (default 300; a mutant that hangs counts as
# "timeout", i.e. caught). Results: mutants.out/ under MUTANTS_OUT (default
# target/mutants-out) -- caught.txt, missed.txt, timeout.txt, unviable.txt,
# outcomes.json, written as the run goes, so a partial run has figures too;
# scripts/mutants-report.py prints them per module. ARGS go to cargo-mutants
# (e.g. `--shard 0/50 --sharding round-robin` for a sample, `--iterate` to
# skip what a previous run caught).
#
# --diff is what `.ci/run` runs: at most MUTANTS_DIFF_MAX mutants (default
# 12) of the change, picked evenly from those cargo-mutants lists, each with
# a MUTANTS_DIFF_TIMEOUT (default 120 s) test timeout, and the whole step
# under MUTANTS_DIFF_BUDGET seconds (default 300): exit 1 when a mutant
# survives (missed), 0 otherwise (also when the budget ran out: then it says
# so).
#
# Hand-made list: each line of scripts/mutants.tsv (tab-separated): name, file, the exact
# text to replace (must occur once), its replacement, and the arguments of
# the `cargo test` that must go red (e.g. `-p saas-host --test api promises::sqlite::cors`).
# `\n` in the texts stands for a newline. The file is restored after each
# run (also on Ctrl-C). Run it in a clean worktree: it edits sources in place.
# Exit status: 0 when every mutation was caught, 1 when one survived or
# could not be applied.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# The packages and files cargo-mutants mutates: the engine, tenancy and
# stores (qlearn-core) and the HTTP host (saas-host). The Python bindings,
# benches and examples are thin or not product code.
CM_SCOPE=(-p qlearn-core -p saas-host)

# cargo-mutants from crates.io, installed on first use.
ensure_cm() {
    if ! cargo mutants --version >/dev/null 2>&1; then
        echo "cargo-mutants is not installed: installing it (cargo install --locked cargo-mutants)" >&2
        cargo install --locked cargo-mutants || { echo "could not install cargo-mutants" >&2; exit 2; }
    fi
}

cm_run() {
    ensure_cm
    local target="${MUTANTS_TARGET_DIR:-$root/target/mutants}"
    local out="${MUTANTS_OUT:-$root/target/mutants-out}"
    mkdir -p "$target" "$out"
    # CM_BUDGET: stop the whole run (as Ctrl-C does) after that many seconds.
    local budget=()
    [ -n "${CM_BUDGET:-}" ] && budget=(timeout -s INT -k 60 "$CM_BUDGET")
    "${budget[@]}" env CARGO_TARGET_DIR="$target" nice -n 19 cargo mutants "${CM_SCOPE[@]}" -j 1 \
        --baseline skip --output "$out" --colors never "$@"
}

case "${1:-}" in
    --full)
        shift
        cm_run --timeout "${MUTANTS_TIMEOUT:-300}" --build-timeout 1200 "$@"
        exit $?
        ;;
    --diff)
        base="${2:-}"
        if [ -z "$base" ]; then
            base=main
            git rev-parse -q --verify origin/main >/dev/null && base=origin/main
        fi
        diff_file="$(mktemp)"
        git diff "$base" HEAD -- '*.rs' > "$diff_file"
        if [ ! -s "$diff_file" ]; then
            echo "mutants --diff: no Rust change since $base"; exit 0
        fi
        # The mutants of the change, then an even pick of at most MAX of them.
        listed="$(mktemp)"
        ensure_cm
        cargo mutants "${CM_SCOPE[@]}" --in-diff "$diff_file" --list --line-col false > "$listed" 2>/dev/null || true
        total=$(grep -c . "$listed" || true)
        max="${MUTANTS_DIFF_MAX:-12}"
        echo "mutants --diff: $total mutants in the change since $base; testing at most $max"
        if [ "$total" -eq 0 ]; then exit 0; fi
        shard=()
        if [ "$total" -gt "$max" ]; then
            n=$(( (total + max - 1) / max ))
            shard=(--shard "0/$n" --sharding round-robin)
        fi
        missed="${MUTANTS_OUT:-$root/target/mutants-diff}/mutants.out/missed.txt"
        rm -f "$missed" # a list left by an earlier run is not this run's
        set +e
        MUTANTS_OUT="${MUTANTS_OUT:-$root/target/mutants-diff}" CM_BUDGET="${MUTANTS_DIFF_BUDGET:-300}" \
            cm_run --in-diff "$diff_file" --timeout "${MUTANTS_DIFF_TIMEOUT:-120}" --build-timeout 600 "${shard[@]}"
        rc=$?
        set -e
        # cargo-mutants exits 3 (timeouts) even when a mutant was also missed:
        # the list decides.
        if [ -s "$missed" ]; then
            echo "mutants --diff: a mutant of the change survived:"; cat "$missed"; exit 1
        fi
        case "$rc" in
            0) echo "mutants --diff: every mutant tested was caught" ;;
            2) echo "mutants --diff: a mutant of the change survived (see mutants.out/missed.txt)"; exit 1 ;;
            124) echo "mutants --diff: the ${MUTANTS_DIFF_BUDGET:-300} s budget ran out; what ran is above" ;;
            3) echo "mutants --diff: a mutant timed out (counted as caught)" ;;
            4) echo "mutants --diff: the tree's own tests fail"; exit 1 ;;
            *) echo "mutants --diff: cargo-mutants exited $rc"; exit 1 ;;
        esac
        exit 0
        ;;
esac

list="${MUTANTS_LIST:-scripts/mutants.tsv}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
log_dir="$(mktemp -d)"
restore=""
trap '[ -n "$restore" ] && git checkout -q -- "$restore"' EXIT INT TERM
caught=0; survived=0; broken=0
while IFS=$'\t' read -r name file old new args; do
    case "$name" in ''|'#'*) continue ;; esac
    if [ "$#" -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$name"; then continue; fi
    if ! git diff --quiet -- "$file"; then
        echo "!! $name: $file has uncommitted changes; not touched"; broken=$((broken + 1)); continue
    fi
    if ! python3 - "$file" "$old" "$new" <<'PY'
import sys
path, old, new = sys.argv[1], sys.argv[2].replace("\\n", "\n"), sys.argv[3].replace("\\n", "\n")
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"{path}: expected the text once, found it {text.count(old)} times")
open(path, "w").write(text.replace(old, new))
PY
    then
        echo "!! $name: could not apply"; broken=$((broken + 1)); continue
    fi
    restore="$file"
    # shellcheck disable=SC2086  # args is a list of cargo arguments
    if cargo test $args > "$log_dir/$name.log" 2>&1; then
        echo "SURVIVED $name ($file): cargo test $args passed"; survived=$((survived + 1))
    elif grep -q "^error\(\[E[0-9]*\]\)\?:" "$log_dir/$name.log" && ! grep -q "test result" "$log_dir/$name.log"; then
        echo "unviable $name: does not compile (log $log_dir/$name.log)"; broken=$((broken + 1))
    else
        echo "caught   $name"; caught=$((caught + 1))
    fi
    git checkout -q -- "$file"
    restore=""
done < "$list"
echo "mutants: $caught caught, $survived survived, $broken not applied/unviable (logs in $log_dir)"
[ "$survived" -eq 0 ] && [ "$broken" -eq 0 ]
