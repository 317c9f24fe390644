#!/usr/bin/env bash
# Benchmark of the work queue (issue 8): throughput of short runs through the
# queue with 1, 2 and 4 workers against one PostgreSQL (fsync on), and claim
# latency of an idle worker. See bench/queue.py for what is measured.
#
#   bench/queue.sh            # RUNS=200 LATENCY=30 by default; writes bench/out/queue/
#   BIN=path OUT=dir bench/queue.sh   # another binary (bench/compare.sh does this)
#
# Needs the PostgreSQL 15 server binaries and what the lab needs (scripts/setup).
set -euo pipefail
source "$(dirname "$0")/common.sh" queue
exec 3> >(python3 tests/lab/lab.py up --watch-stdin --hosts 0 --no-haproxy --postgres --dir "$OUT/lab" > "$OUT/lab.out")
lab=$!
trap 'exec 3>&-; wait $lab 2>/dev/null' EXIT
for _ in $(seq 600); do [ -s "$OUT/lab.out" ] && break; sleep 0.1; done
[ -s "$OUT/lab.out" ] || { echo "the lab did not start" >&2; exit 1; }
python3 bench/queue.py
