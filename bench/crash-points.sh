#!/usr/bin/env bash
# The full crash-point sweep (issue 20): the test of
# crates/runbook-cli/tests/crash_points.rs with a wider fan-out, so that every
# durable write of a larger run is a crash point. Prints how many points were
# tried and what each crash led to; a violated invariant fails it.
#
#   bench/crash-points.sh            # ITEMS=20
#   ITEMS=50 bench/crash-points.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNBOOK_CRASH_ITEMS=${ITEMS:-20} cargo test -q -p runbook-cli --test crash_points -- --nocapture 2>&1 |
  grep -E 'crash points|test result'
