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
set -uo pipefail
cd "$(dirname "$0")/.."
seeds=${SEEDS:-$(seq 1 20)}
cases=${CASES:-5000}
cargo test -q -p runbook-core --test shell_contract --no-run || exit 1
failed=0
for seed in $seeds; do
  out=$(RUNBOOK_FUZZ_SEED=$seed RUNBOOK_FUZZ_CASES=$cases \
    cargo test -q -p runbook-core --test shell_contract -- --nocapture 2>&1)
  status=$?
  grep -E "^shell contract|^ +[0-9]+  |^case|^program|^rendered|^value|^with" <<<"$out"
  [ "$status" = 0 ] || failed=$((failed + 1))
done
echo "seeds with a failure: $failed"
[ "$failed" = 0 ]
