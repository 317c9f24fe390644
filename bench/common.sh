# What bench scripts start with (sourced, with the script's name): the
# repository as the working directory, the binary in BIN (a release build
# unless given) and a fresh OUT folder (bench/out/NAME unless given).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${BIN:-}" ]; then
  cargo build -q --release -p runbook-cli
  BIN=$PWD/target/release/runbook
fi
export BIN
export OUT=${OUT:-$PWD/bench/out/$1}
rm -rf "$OUT"; mkdir -p "$OUT"
