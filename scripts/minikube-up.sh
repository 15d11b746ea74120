#!/usr/bin/env bash
# Deploy mp3converter to a local minikube: `xtask minikube up` (crates/xtask/src/minikube.rs;
# see docs/deploy.md and `scripts/minikube-up.sh --help`).
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
exec cargo run --quiet --package xtask -- minikube up "$@"
