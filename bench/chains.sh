# Sourced by bench/run.sh and bench/compare.sh: writes the two N-step chains
# into the library folder $1: chain-shell (`shell: true`, a fork per step) and
# chain-noop (`sleep 0s`: the engine and its journal without a fork).
chains() {
  local pb=$1
  mkdir -p "$pb/chain-shell" "$pb/chain-noop"
  {
    printf 'apiVersion: runbook/v1\nname: chain-shell\nversion: 1\nsteps:\n'
    for i in $(seq "$N"); do printf '  - { id: s%d, uses: shell, with: { run: "true" } }\n' "$i"; done
  } > "$pb/chain-shell/v1.yaml"
  {
    printf 'apiVersion: runbook/v1\nname: chain-noop\nversion: 1\nsteps:\n'
    for i in $(seq "$N"); do printf '  - { id: s%d, uses: sleep, with: { duration: 0s } }\n' "$i"; done
  } > "$pb/chain-noop/v1.yaml"
}
