#!/usr/bin/env bash
# The containerised phase of scripts/test.sh: `xtask pods test` (crates/xtask/src/pods/test.rs).
# usage: scripts/pods-test.sh [-h] [--no-build]   (builds the images first unless --no-build)
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
command -v cargo >/dev/null || PATH=$HOME/.cargo/bin:$PATH
exec cargo run --quiet -p xtask -- pods test "$@"
