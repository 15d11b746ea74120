#!/usr/bin/env bash
# Remove what scripts/minikube-up.sh (or `kubectl apply -k manifests/`) deployed. By default
# everything goes, data included: the namespace mp3converter holds every object we create, its
# Secrets and the PersistentVolumeClaims of RabbitMQ (and of MySQL/MongoDB with --in-cluster-db).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/minikube-down.sh [-h] [--keep-data] [--stop]
  (default)    delete the namespace mp3converter: every workload, Service, Ingress, ConfigMap,
               Secret and PersistentVolumeClaim (queued messages and in-cluster databases too)
  --keep-data  delete the workloads, Services, Ingresses, ConfigMaps, autoscalers and policies,
               but keep the namespace, the Secrets and the PersistentVolumeClaims, so the next
               scripts/minikube-up.sh finds its broker (and databases) as they were
  --stop       then stop minikube (minikube stop); the cluster and its images remain
EOF
}

KEEP_DATA=false
STOP=false
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --keep-data) KEEP_DATA=true ;;
    --stop) STOP=true ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
NS=mp3converter
log() { printf '[minikube-down] %s\n' "$*" >&2; }
die() {
  printf '[minikube-down] error: %s\n' "$*" >&2
  exit 1
}

command -v minikube >/dev/null 2>&1 || die "minikube is not installed"
command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed"

if ! minikube status --format '{{.APIServer}}' 2>/dev/null | grep -q Running; then
  log "minikube is not running: nothing to delete"
else
  kubectl config use-context minikube >/dev/null
  if ! kubectl get namespace "$NS" >/dev/null 2>&1; then
    log "namespace $NS does not exist: nothing to delete"
  elif $KEEP_DATA; then
    kinds=deployments,statefulsets,services,ingresses,configmaps,horizontalpodautoscalers,poddisruptionbudgets,networkpolicies
    if kubectl get crd scaledobjects.keda.sh >/dev/null 2>&1; then
      kinds+=,scaledobjects.keda.sh,triggerauthentications.keda.sh
    fi
    log "deleting $kinds labelled app.kubernetes.io/part-of=mp3converter (Secrets and volumes kept)"
    kubectl -n "$NS" delete "$kinds" -l app.kubernetes.io/part-of=mp3converter --ignore-not-found --wait
  else
    log "deleting namespace $NS (everything in it, data included)"
    kubectl delete namespace "$NS" --ignore-not-found --wait --timeout=5m
  fi
fi

rm -rf -- "$ROOT/.dev/minikube"

if $STOP; then
  log "stopping minikube"
  minikube stop
fi
log "done"
