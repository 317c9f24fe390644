#!/usr/bin/env bash
# Benchmark of the executor (issue 3), all in one run so the ratios are fair:
#   - 1,000-step chain of `shell` steps running `true`, durable journal on
#   - 1,000-step chain of no-op steps (`sleep 0s`: the engine without a fork)
#   - the floor: bash forking `/bin/sh -c true` 1,000 times
#   - the peer: ansible-playbook running N `command: true` tasks on localhost
#     (ANSIBLE_TASKS, default 1000; installs ansible-core in bench/out/venv)
#   - peak memory of a 10,000-item for_each with concurrency 64
#
#   bench/run.sh            # needs hyperfine and python3; writes bench/out/
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { echo "hyperfine is missing: apt-get install hyperfine" >&2; exit 1; }
N=1000
ANSIBLE_TASKS=${ANSIBLE_TASKS:-1000}
cargo build -q --release -p runbook-cli
bin=$PWD/target/release/runbook
out=$PWD/bench/out/run
rm -rf "$out"; mkdir -p "$out/pb/fanout"
. bench/chains.sh
chains "$out/pb"
{
  printf 'apiVersion: runbook/v1\nname: fanout\nversion: 1\nsteps:\n  - id: fan\n    for_each: [%s]\n    concurrency: 64\n' "$(seq -s, 10000)"
  printf '    steps:\n      - { id: x, uses: sleep, with: { duration: 0s } }\n'
} > "$out/pb/fanout/v1.yaml"
printf '#!/bin/bash\nfor i in $(seq %d); do /bin/sh -c true; done\n' $N > "$out/floor.sh"
chmod +x "$out/floor.sh"

# Each measured run gets a fresh state file on the same disk as the work tree.
export RUNBOOK_PLAYBOOKS=$out/pb
hyperfine --warmup 2 --runs 10 --export-markdown "$out/results.md" \
  --prepare "rm -f $out/state.db*" \
  -n "bash: fork sh -c true x$N (floor)" "$out/floor.sh" \
  -n "runbook: $N shell steps" "RUNBOOK_STATE=$out/state.db $bin run chain-shell --output json > /dev/null" \
  -n "runbook: $N no-op steps" "RUNBOOK_STATE=$out/state.db $bin run chain-noop --output json > /dev/null"

rm -f "$out/state.db"*
/usr/bin/time -f "peak RSS, 10,000-item for_each at concurrency 64: %M KB (%e s)" \
  env RUNBOOK_STATE=$out/state.db $bin run fanout --output json > /dev/null

if [ "$ANSIBLE_TASKS" -gt 0 ]; then
  if [ ! -x "$out/../venv/bin/ansible-playbook" ]; then
    python3 -m venv "$out/../venv" && "$out/../venv/bin/pip" install -q ansible-core
  fi
  {
    printf -- '- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n'
    for i in $(seq "$ANSIBLE_TASKS"); do printf '    - command: "true"\n'; done
  } > "$out/ansible.yml"
  start=$(date +%s.%N)
  "$out/../venv/bin/ansible-playbook" -i localhost, -e ansible_python_interpreter="$out/../venv/bin/python" "$out/ansible.yml" > "$out/ansible.log"
  end=$(date +%s.%N)
  echo "ansible-playbook: $ANSIBLE_TASKS command tasks in $(echo "$end - $start" | bc) s"
fi
cat "$out/results.md"
