#!/usr/bin/env bash
# Benchmark of `runbook serve` and its web UI (issue 17): a run with
# 1,000,000 log lines opened at its tail (the API, and a real headless
# Chromium), and a 1,000-item fan-out followed live in the browser. See
# bench/serve.py for what is measured.
#
#   bench/serve.sh                      # LINES=1000000 ITEMS=1000; writes bench/out/serve/
#   LINES=100000 ITEMS=200 bench/serve.sh
#
# Needs chromium and chromedriver (scripts/setup installs them).
set -euo pipefail
source "$(dirname "$0")/common.sh" serve
command -v chromedriver >/dev/null || { echo "chromedriver is missing: apt-get install chromium chromium-driver" >&2; exit 1; }
python3 bench/serve.py
