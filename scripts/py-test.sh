#!/usr/bin/env bash
# Builds the Python module `qlearn` (py-bindings/) in a virtualenv and runs its
# tests: pytest (incl. hypothesis properties, the examples and, when the
# saas-host binary builds, the server interop test) and mypy.stubtest on the
# hand-written stub.
#
# Needs only python3 (with venv and pip) and a Rust toolchain. The virtualenv
# is $QLEARN_VENV or ./.venv at the repository root, created on first use.
#   scripts/py-test.sh               # build (release) + all tests
#   scripts/py-test.sh -k pickle     # extra arguments go to pytest
# Environment:
#   QLEARN_VENV            virtualenv to create/reuse (default ./.venv)
#   QLEARN_SKIP_SERVER=1   do not build saas-host (its interop tests then skip)
#   QLEARN_SAAS_HOST=PATH  use this saas-host binary instead of building one
#   CARGO_TARGET_DIR       cargo's target dir (default ./target, shared with
#                          `cargo test`, so saas-host is usually built already)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${QLEARN_VENV:-$root/.venv}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

if [ ! -x "$venv/bin/python" ]; then
    echo "== creating virtualenv $venv"
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
echo "== installing build and test tools into $venv"
"$py" -m pip install --quiet --disable-pip-version-check --upgrade \
    "maturin>=1.9.4,<2" "numpy>=1.21" pytest hypothesis mypy "gymnasium>=1.0" \
    "httpx>=0.24" pandas

echo "== building the extension (maturin develop --release)"
# maturin develop installs into the virtualenv named by VIRTUAL_ENV.
VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" \
    "$venv/bin/maturin" develop --release --quiet -m py-bindings/Cargo.toml

if [ -z "${QLEARN_SAAS_HOST:-}" ] && [ "${QLEARN_SKIP_SERVER:-0}" != 1 ]; then
    echo "== building saas-host for the interop tests (cargo build -p saas-host)"
    if cargo build --quiet -p saas-host --bin saas-host; then
        export QLEARN_SAAS_HOST="$target_dir/debug/saas-host"
    else
        echo "!! saas-host does not build: the server interop tests will be SKIPPED" >&2
        export QLEARN_SAAS_HOST=/nonexistent/saas-host
    fi
fi

echo "== pytest"
# -rs prints the reason of every skipped test (e.g. no saas-host binary).
"$py" -m pytest py-bindings/tests -q -rs "$@"

echo "== mypy.stubtest (the .pyi stub against the built module)"
(cd py-bindings && "$py" -m mypy.stubtest qlearn)
