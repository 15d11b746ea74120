#!/usr/bin/env bash
# Remove what scripts/pods-up.sh made for one instance: `xtask pods down` (crates/xtask/src/pods/down.rs).
# usage: scripts/pods-down.sh [-h] [--name NAME]
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
command -v cargo >/dev/null || PATH=$HOME/.cargo/bin:$PATH
exec cargo run --quiet -p xtask -- pods down "$@"
