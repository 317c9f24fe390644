#!/usr/bin/env bash
# Peak RSS of a for_each of no-op steps (`sleep 0s`) at concurrency 64, at
# 1,000, 10,000 and 100,000 items (issue 20: 10,000 under 50 MB, 100,000 under
# 200 MB), and of a one-step run (what any run costs). Each size runs RUNS
# times (default 3) with a fresh state file; the median is printed.
#
#   bench/memory.sh                      # builds the release binary
#   BIN=/path/to/old/runbook bench/memory.sh   # another build, side by side
#   SIZES="10000" RUNS=5 bench/memory.sh
set -euo pipefail
. "$(dirname "$0")/common.sh" memory
SIZES=${SIZES:-1 1000 10000 100000}
RUNS=${RUNS:-3}
for n in $SIZES; do
  mkdir -p "$OUT/pb/fan$n"
  {
    printf 'apiVersion: runbook/v1\nname: fan%s\nversion: 1\nsteps:\n  - id: fan\n    for_each: [%s]\n    concurrency: 64\n' "$n" "$(seq -s, "$n")"
    printf '    steps:\n      - { id: x, uses: sleep, with: { duration: 0s } }\n'
  } > "$OUT/pb/fan$n/v1.yaml"
done
export RUNBOOK_PLAYBOOKS=$OUT/pb RUNBOOK_STATE=$OUT/state.db
printf '| items | peak RSS (median of %s) | all runs | wall (median) |\n|---:|---:|:---|---:|\n' "$RUNS"
for n in $SIZES; do
  rss=(); wall=()
  for _ in $(seq "$RUNS"); do
    rm -f "$OUT"/state.db*
    read -r kb secs < <(/usr/bin/time -f "%M %e" "$BIN" run "fan$n" --output json 2>&1 >/dev/null | tail -1)
    rss+=("$kb"); wall+=("$secs")
  done
  med_kb=$(printf '%s\n' "${rss[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
  med_s=$(printf '%s\n' "${wall[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
  all=$(printf '%s ' "${rss[@]}" | awk '{for (i = 1; i <= NF; i++) printf "%s%.1f", (i > 1 ? ", " : ""), $i / 1024}')
  printf '| %s | %.1f MB | %s | %s s |\n' "$n" "$(echo "$med_kb / 1024" | bc -l)" "$all" "$med_s"
done
