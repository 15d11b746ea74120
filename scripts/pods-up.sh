#!/usr/bin/env bash
# Run manifests/ with podman kube play against the host's servers: `xtask pods up` (crates/xtask/src/pods/up.rs).
# usage: scripts/pods-up.sh [-h] [--name NAME] [--no-demo-user]   (-h lists every option)
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
command -v cargo >/dev/null || PATH=$HOME/.cargo/bin:$PATH
exec cargo run --quiet -p xtask -- pods up "$@"
