#!/usr/bin/env bash
# Two versions of runbook side by side, in one run, on one machine: the
# executor (bench/run.sh's 1,000-step chains) and the work queue
# (bench/queue.py). For a refactor that must not cost anything.
#
#   bench/compare.sh [BASE [HEAD]]   # default: a31117a (before the runner
#                                     # library) against HEAD
#
# Each version is built in release mode from a git worktree under
# bench/out/compare/ (one shared target directory, so the dependencies build
# once). BUILD_ONLY=1 stops after building; REUSE=1 keeps binaries already
# built (measure on a quiet machine). Needs hyperfine, python3 and what the lab needs (scripts/setup).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { echo "hyperfine is missing: apt-get install hyperfine" >&2; exit 1; }
BASE=${1:-a31117a}
HEAD=${2:-HEAD}
N=1000
out=$PWD/bench/out/compare
mkdir -p "$out/bin"
export CARGO_TARGET_DIR=$out/target
for side in base head; do
  rev=$BASE; [ "$side" = head ] && rev=$HEAD
  [ -n "${REUSE:-}" ] && [ -x "$out/bin/$side" ] && continue
  rm -rf "$out/$side"; git worktree prune
  git worktree add -q --detach "$out/$side" "$rev"
  (cd "$out/$side" && cargo build -q --release -p runbook-cli)
  cp "$CARGO_TARGET_DIR/release/runbook" "$out/bin/$side"
  git worktree remove --force "$out/$side"
  echo "$side: $(git rev-parse --short "$rev")"
done

[ -n "${BUILD_ONLY:-}" ] && exit 0

pb=$out/pb
rm -rf "$pb"
. bench/chains.sh
chains "$pb"
export RUNBOOK_PLAYBOOKS=$pb
hyperfine --warmup 2 --runs 10 --export-markdown "$out/run.md" \
  --prepare "rm -f $out/state.db*" \
  -n "base: $N shell steps" "RUNBOOK_STATE=$out/state.db $out/bin/base run chain-shell --output json > /dev/null" \
  -n "head: $N shell steps" "RUNBOOK_STATE=$out/state.db $out/bin/head run chain-shell --output json > /dev/null" \
  -n "base: $N no-op steps" "RUNBOOK_STATE=$out/state.db $out/bin/base run chain-noop --output json > /dev/null" \
  -n "head: $N no-op steps" "RUNBOOK_STATE=$out/state.db $out/bin/head run chain-noop --output json > /dev/null"

unset CARGO_TARGET_DIR RUNBOOK_PLAYBOOKS
for side in base head; do
  echo "== queue: $side"
  BIN=$out/bin/$side OUT=$out/queue-$side bench/queue.sh | tee "$out/queue-$side.txt"
done
cat "$out/run.md"
