#!/usr/bin/env bash
# A run acts once (issue 31), many times over: a chain of four steps, each
# appending its line to a file once and sleeping with a child in the
# background, its runner SIGKILLed at a random moment, then resumed as an
# operator would (a step left uncertain is decided from the file). After
# each round every line is there exactly once, and no process of an earlier
# attempt was alive when a new one started (each step checks). The test is
# crates/runbook-cli/tests/acts_once.rs; CI runs 6 rounds.
#
#   bench/chaos.sh                 # ROUNDS=1000; RUNBOOK_CHAOS_SEED repeats a run
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-1000}
start=$(date +%s)
# cargo test, not nextest: a thousand rounds outlast nextest's 5-minute limit.
RUNBOOK_CHAOS_ROUNDS=$ROUNDS cargo test -q -p runbook-cli --test acts_once \
  a_runner_killed_at_random_moments_leaves_every_effect_done_once -- --nocapture 2>&1 |
  grep -E "chaos seed|rounds done|test result|panicked|round [0-9]+:"
echo "$ROUNDS rounds in $(( $(date +%s) - start )) s"
