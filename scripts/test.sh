#!/usr/bin/env bash
# The one test command: every Rust test (engine, storage conformance on
# memory/SQLite/PostgreSQL, durability, the HTTP service), the Python module's
# pytest suite, the API contract (Schemathesis against the real server, every
# check, positive and negative data: scripts/schemathesis.sh) and the
# dashboard's end-to-end test in headless Chromium.
#
# Suites that need something a newcomer may lack (a PostgreSQL server,
# Chromium) run when it is there and print a loud SKIPPED line when not.
# CI sets QLEARN_REQUIRE_POSTGRES=1 and QLEARN_REQUIRE_BROWSER=1 so nothing
# skips there.
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n==== %s ====\n' "$*"; }
failed=()

section "Deployment files: deploy/check.sh (nginx -t, compose schema, hadolint; installs nginx for the scale-out test)"
if ! bash deploy/check.sh; then failed+=("deploy"); fi

section "Rust: cargo test --workspace"
if ! cargo test --workspace --all-targets; then failed+=("rust"); fi
# Doc tests (not part of --all-targets).
if ! cargo test --workspace --doc; then failed+=("rust-doc"); fi

section "Rust: the engine alone (qlearn-core --no-default-features: no database, crypto or network dependency)"
if ! cargo test -p qlearn-core --no-default-features; then failed+=("rust-engine-only"); fi

section "Python: py-bindings (pytest)"
if ! bash scripts/py-test.sh; then failed+=("python"); fi

section "API contract: Schemathesis against the real server (free and enterprise users)"
if ! bash scripts/schemathesis.sh; then failed+=("schemathesis"); fi

section "Web dashboard: headless Chromium"
if ! bash scripts/ui-test.sh; then failed+=("browser"); fi

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED suites: ${failed[*]}"
  exit 1
fi
echo "All test suites passed."
