#!/usr/bin/env bash
# What plugins cost each command: `runbook list` over the playbook library
# with no plugins, with the two example plugins described every time (an empty
# description cache per run), and with their descriptions remembered (the
# cache warm), side by side in one hyperfine run; and each plugin's
# `describe` alone.
#
#   bench/plugins.sh                  # builds the release binary
#   BIN=/path/to/runbook bench/plugins.sh
set -euo pipefail
. "$(dirname "$0")/common.sh" plugins
cp -r playbooks "$OUT/without"
cp -r playbooks "$OUT/with"
mkdir -p "$OUT/with/plugins"
cp examples/plugins/runbook-step-* "$OUT/with/plugins/"
export XDG_CACHE_HOME=$OUT/cache
"$BIN" --playbooks "$OUT/with" list > /dev/null   # fills the cache
hyperfine -N -w 5 -r 40 \
  -n "no plugins" "$BIN --playbooks $OUT/without list" \
  -n "2 plugins, described each time" "env XDG_CACHE_HOME=/dev/null/no-cache $BIN --playbooks $OUT/with list" \
  -n "2 plugins, remembered" "$BIN --playbooks $OUT/with list"
for p in "$OUT"/with/plugins/runbook-step-*; do
  hyperfine -N -w 3 -r 30 -n "$(basename "$p") describe" "$p describe"
done
