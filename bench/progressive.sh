#!/usr/bin/env bash
# Progressive delivery (issue 19): a release that fails a fifth of its users'
# requests (and passes every health check), deployed by rolling-deploy under
# load through HAProxy, side by side in one run: with the metric analysis
# (batches [1, 100%], a bake, the instance's 5xx ratio against the rest's,
# roll_back all) and without it. For each: the failed requests, and the time
# from the first 5xx users saw to the deploy's end (the rollback finished, or
# the bad release everywhere). Then the same release by blue-green: a ramp
# of users to the new colour (10%, 50%) with each share judged by its 5xx
# ratio against the live colour's, against a switch at once. See
# bench/progressive.py.
#
#   bench/progressive.sh              # builds the release binary; writes bench/out/progressive/
#   HOSTS=4 BAKE=10s bench/progressive.sh   # bake (default 5s) no shorter than the 5 s window
#
# Needs what the lab needs, Prometheus included (scripts/setup).
set -euo pipefail
source "$(dirname "$0")/common.sh" progressive
exec 3> >(python3 tests/lab/lab.py up --watch-stdin --hosts "${HOSTS:-3}" --stack --prometheus --dir "$OUT/lab" > "$OUT/lab.out")
lab=$!
trap 'exec 3>&-; wait $lab 2>/dev/null' EXIT
for _ in $(seq 600); do [ -s "$OUT/lab.out" ] && break; sleep 0.1; done
[ -s "$OUT/lab.out" ] || { echo "the lab did not start" >&2; exit 1; }
python3 bench/progressive.py
