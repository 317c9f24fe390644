#!/usr/bin/env bash
# Benchmark: load + validate + plan a generated 10,000-step playbook, and validate
# a library of 20 playbooks. Goals (issue 2): under 1 s and under 50 ms.
#
#   bench/plan.sh            # builds release, generates inputs, runs hyperfine
#
# Needs python3 and hyperfine (apt-get install hyperfine). Writes bench/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { echo "hyperfine is missing: apt-get install hyperfine" >&2; exit 1; }
cargo build -q --release -p runbook-cli
bin=target/release/runbook
out=bench/out
rm -rf "$out"; mkdir -p "$out"
python3 bench/gen_playbooks.py "$out"
steps=$(grep -c '^ *- id:' "$out/big/big/v1.yaml")
echo "big playbook: $steps step definitions, $(wc -c < "$out/big/big/v1.yaml") bytes"
$bin --playbooks "$out/big" plan big > "$out/plan.txt"
echo "plan lines: $(wc -l < "$out/plan.txt")"
hyperfine -N --warmup 2 --runs 10 --export-markdown "$out/results.md" \
  -n "validate 10k steps" "$bin --playbooks $out/big validate big" \
  -n "plan 10k steps" "$bin --playbooks $out/big plan big" \
  -n "validate library of 20" "$bin --playbooks $out/library validate"
/usr/bin/time -f "peak RSS of plan 10k: %M KB" $bin --playbooks "$out/big" plan big > /dev/null
cat "$out/results.md"
