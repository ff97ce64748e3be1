#!/usr/bin/env bash
# Re-creates the small bugs of issue 19's mutation run, one at a time, and
# reports which ones the test command lets through ("survived").
#
#   scripts/mutants.sh                 # every mutation in scripts/mutants.tsv
#   scripts/mutants.sh cors xff        # only the named ones
#
# Each line of scripts/mutants.tsv (tab-separated): name, file, the exact
# text to replace (must occur once), its replacement, and the arguments of
# the `cargo test` that must go red (e.g. `-p saas-host --test api promises::sqlite::cors`).
# `\n` in the texts stands for a newline. The file is restored after each
# run (also on Ctrl-C). Run it in a clean worktree: it edits sources in place.
# Exit status: 0 when every mutation was caught, 1 when one survived or
# could not be applied.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
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
