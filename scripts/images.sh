#!/usr/bin/env bash
# Build the four images from docker/Dockerfile as the manifests name them (mp3converter/<service>:dev),
# with Docker when an engine answers, else podman: `xtask images` (crates/xtask/src/pods/images.rs).
# usage: scripts/images.sh [-h] [--tag TAG] [--no-cache] [SERVICE...]   (env MP3C_ENGINE=docker|podman)
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
command -v cargo >/dev/null || PATH=$HOME/.cargo/bin:$PATH
exec cargo run --quiet -p xtask -- images "$@"
