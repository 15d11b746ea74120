#!/usr/bin/env bash
# Remove what scripts/minikube-up.sh deployed: `xtask minikube down` (crates/xtask/src/minikube.rs;
# `scripts/minikube-down.sh --help` lists --keep-data and --stop).
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
exec cargo run --quiet --package xtask -- minikube down "$@"
