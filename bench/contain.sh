#!/usr/bin/env bash
# The cost of holding each step's processes (issue 31), side by side in one
# run: 1,000 `shell` steps running `true` against the fork floor (bash forking
# `/bin/sh -c true` 1,000 times), on a quiet host and with 2,000 idle
# processes on it (IDLE), each with the step's cgroup (the default) and
# with the session fallback (RUNBOOK_CONTAIN=session). Containment must not
# cost more with more processes on the host: nothing reads the process table.
#
#   bench/contain.sh          # needs hyperfine; writes bench/out/contain/
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { echo "hyperfine is missing: apt-get install hyperfine" >&2; exit 1; }
N=${N:-1000}
IDLE=${IDLE:-2000}
RUNS=${RUNS:-10}
cargo build -q --release -p runbook-cli
bin=$PWD/target/release/runbook
out=$PWD/bench/out/contain
rm -rf "$out"; mkdir -p "$out/pb"
. bench/chains.sh
chains "$out/pb"
printf '#!/bin/bash\nfor i in $(seq %d); do /bin/sh -c true; done\n' "$N" > "$out/floor.sh"
chmod +x "$out/floor.sh"
export RUNBOOK_PLAYBOOKS=$out/pb XDG_STATE_HOME=$out/xdg

measure() {
  hyperfine --warmup 2 --runs "$RUNS" --export-markdown "$out/$1.md" \
    --prepare "rm -f $out/state.db*" \
    -n "floor: bash forks sh -c true x$N ($1)" "$out/floor.sh" \
    -n "runbook: $N shell steps, cgroup ($1)" "RUNBOOK_STATE=$out/state.db $bin run chain-shell --output json > /dev/null" \
    -n "runbook: $N shell steps, session ($1)" "RUNBOOK_CONTAIN=session RUNBOOK_STATE=$out/state.db $bin run chain-shell --output json > /dev/null"
}

measure quiet
idle=()
for _ in $(seq "$IDLE"); do sleep 3600 & idle+=($!); done
trap 'kill "${idle[@]}" 2>/dev/null' EXIT
echo "$(ls /proc | grep -c '^[0-9]') processes on the host"
measure "$IDLE idle processes"
cat "$out"/*.md
