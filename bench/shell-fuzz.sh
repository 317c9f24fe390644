#!/usr/bin/env bash
# The shell contract's differential fuzzer, run longer than the test suite
# does: random sh programs with a template value in every position, hostile
# values, each program run by dash and bash (see
# crates/runbook-core/tests/shell_contract.rs for what is checked).
#
#   bench/shell-fuzz.sh                  # 20 seeds x 5,000 programs
#   SEEDS="1 2 3" CASES=20000 bench/shell-fuzz.sh
#
# Prints, per seed, the programs run and refused and the contexts covered; a
# failure prints the seed, the program, the rendered script and the value.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${SEEDS:-$(seq 1 20)}
cases=${CASES:-5000}
cargo test -q -p runbook-core --test shell_contract --no-run
failed=0
for seed in $seeds; do
  if RUNBOOK_FUZZ_SEED=$seed RUNBOOK_FUZZ_CASES=$cases \
    cargo test -q -p runbook-core --test shell_contract -- --nocapture 2>&1 | grep -E "^shell contract|^ +[0-9]+ |^case|^program|^rendered|^value|^with"; then :; fi
  if ! RUNBOOK_FUZZ_SEED=$seed RUNBOOK_FUZZ_CASES=$cases cargo test -q -p runbook-core --test shell_contract >/dev/null 2>&1; then
    failed=$((failed + 1))
  fi
done
echo "seeds with a failure: $failed"
