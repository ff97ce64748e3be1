#!/usr/bin/env bash
# Regenerates docs/screenshots/*.png (login, dashboard, models, the operate view
# with its live heatmap, phone width, the decisions view, the evaluation view and the plans page) from a freshly
# started saas-host in headless Chromium. Same setup as scripts/ui-test.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/screenshots
# `scripts/screenshots.sh evaluation`: only docs/screenshots/evaluation.png
# (ui-tests/screenshot-evaluation.mjs starts a server of its own).
if [ "${1:-}" = "evaluation" ]; then
  SCREENSHOT_DIR="$(pwd)/docs/screenshots" bash ui-tests/with-server.sh node screenshot-evaluation.mjs
else
  SCREENSHOT_DIR="$(pwd)/docs/screenshots" bash ui-tests/with-server.sh sh -c 'node screenshots.mjs && node screenshot-evaluation.mjs'
fi
rc=$?
if [ "$rc" = "75" ]; then
  echo "FAILED: screenshots need Chromium (apt-get install chromium)" >&2
  exit 1
fi
exit "$rc"
