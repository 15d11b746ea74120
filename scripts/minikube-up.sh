#!/usr/bin/env bash
# Deploy mp3converter to a local minikube: start it if needed, build the four images inside its
# Docker, create the Secrets with generated values, apply the manifests, wait for the rollouts,
# and print the /etc/hosts line and the tutorial's curl flow. Safe to run again: it keeps the
# Secrets it generated before (RabbitMQ and MySQL only read their credentials on first start)
# and restarts the services so rebuilt :dev images are picked up. See docs/deploy.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/minikube-up.sh [-h] [--in-cluster-db] [--keda] [--no-build]
  --in-cluster-db  run MySQL and MongoDB in the cluster (manifests/components/in-cluster-db)
                   instead of using the ones on the minikube host (host.minikube.internal)
  --keda           scale the converter on queue length (manifests/components/keda; KEDA must
                   already be installed in the cluster)
  --no-build       do not rebuild the images
  env: MINIKUBE_K8S_VERSION  Kubernetes version for a new cluster (default 1.34.0, the one
                             scripts/check-deploy.sh validates; "default" = minikube's choice)
       MINIKUBE_START_ARGS   more arguments for a new cluster, e.g. "--cpus=4 --memory=6g"
       MYSQL_PASSWORD        auth_user's MySQL password (default: the one already deployed, else
                             Auth123, the development password of init.sql)
       GMAIL_ADDRESS, GMAIL_PASSWORD   sender account and app password for the notification mail
EOF
}

IN_CLUSTER_DB=false
KEDA=false
BUILD=true
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --in-cluster-db) IN_CLUSTER_DB=true ;;
    --keda) KEDA=true ;;
    --no-build) BUILD=false ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
NS=mp3converter
SERVICES=(auth gateway converter notification)
MINIKUBE_K8S_VERSION=${MINIKUBE_K8S_VERSION:-1.34.0}
KUSTOMIZATION_DIR=$ROOT/.dev/minikube

log() { printf '[minikube-up] %s\n' "$*" >&2; }
die() {
  printf '[minikube-up] error: %s\n' "$*" >&2
  exit 1
}

# --- prerequisites ----------------------------------------------------------------------------
need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed: $2"
}
need minikube "see https://minikube.sigs.k8s.io/docs/start/"
need kubectl "see https://kubernetes.io/docs/tasks/tools/ (or use 'minikube kubectl --')"
need docker "the Docker CLI is needed to build inside minikube's Docker (https://docs.docker.com/engine/install/)"
if $BUILD && ! docker buildx version >/dev/null 2>&1; then
  die "docker buildx (BuildKit) is missing: docker/Dockerfile uses cache mounts; install the docker-buildx plugin"
fi

random_hex() {
  if command -v openssl >/dev/null 2>&1; then
    openssl rand -hex "$1"
  else
    head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'
  fi
}

# --- cluster ----------------------------------------------------------------------------------
if minikube status --format '{{.APIServer}}' 2>/dev/null | grep -q Running; then
  log "minikube is running"
else
  start_args=()
  [[ $MINIKUBE_K8S_VERSION == default ]] || start_args+=("--kubernetes-version=v$MINIKUBE_K8S_VERSION")
  # Word splitting wanted: a list of flags.
  # shellcheck disable=SC2206
  start_args+=(${MINIKUBE_START_ARGS:-})
  log "starting minikube ${start_args[*]}"
  minikube start "${start_args[@]}"
fi
kubectl config use-context minikube >/dev/null
server_minor=$(kubectl version -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | tail -n1)
if [[ $MINIKUBE_K8S_VERSION != default && -n $server_minor && $server_minor != "$(cut -d. -f2 <<<"$MINIKUBE_K8S_VERSION")" ]]; then
  log "warning: the cluster runs Kubernetes 1.$server_minor; the manifests are validated for $MINIKUBE_K8S_VERSION and the newest schema (scripts/check-deploy.sh)"
fi
log "enabling the ingress and metrics-server addons"
minikube addons enable ingress >/dev/null
minikube addons enable metrics-server >/dev/null
if $KEDA && ! kubectl get crd scaledobjects.keda.sh >/dev/null 2>&1; then
  die "--keda: KEDA is not installed (no CRD scaledobjects.keda.sh). Install it first, e.g.
  helm repo add kedacore https://kedacore.github.io/charts && helm install keda kedacore/keda -n keda --create-namespace"
fi

# --- images -----------------------------------------------------------------------------------
if $BUILD; then
  log "building images inside minikube's Docker"
  docker_env=$(minikube docker-env --shell bash) ||
    die "minikube docker-env failed: images can only be built in a cluster using the docker runtime (minikube start --container-runtime=docker)"
  eval "$docker_env"
  for svc in "${SERVICES[@]}"; do
    log "docker build --target $svc -t mp3converter/$svc:dev"
    DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile --target "$svc" -t "mp3converter/$svc:dev" .
  done
fi

# --- namespace and Secrets --------------------------------------------------------------------
kubectl apply -f manifests/namespace/namespace.yaml >/dev/null

# secret_value NAME KEY: the value deployed now, or nothing.
secret_value() {
  kubectl -n "$NS" get secret "$1" -o "go-template={{index .data \"$2\" | base64decode}}" 2>/dev/null || true
}

SECRET_DIR=$(mktemp -d)
trap 'rm -rf -- "$SECRET_DIR"' EXIT
chmod 700 "$SECRET_DIR"

# put_secret NAME APP KEY=VALUE...: create or update the Secret. Values go through files, never
# the command line (which other users can read in the process list).
put_secret() {
  local name=$1 app=$2 kv args=()
  shift 2
  rm -f -- "$SECRET_DIR"/*
  for kv in "$@"; do
    printf '%s' "${kv#*=}" >"$SECRET_DIR/${kv%%=*}"
    args+=("--from-file=${kv%%=*}=$SECRET_DIR/${kv%%=*}")
  done
  kubectl -n "$NS" create secret generic "$name" "${args[@]}" --dry-run=client -o yaml |
    kubectl label --local -f - "app=$app" app.kubernetes.io/part-of=mp3converter mp3converter.dev/managed-by=minikube-up -o yaml |
    kubectl apply -f - >/dev/null
  log "secret/$name: ${*%%=*}"
}

# RabbitMQ creates its user from the Secret only when its volume is empty: keep what exists.
rabbit_user=$(secret_value rabbitmq-secret RABBITMQ_DEFAULT_USER)
rabbit_pass=$(secret_value rabbitmq-secret RABBITMQ_DEFAULT_PASS)
if [[ -z $rabbit_user || -z $rabbit_pass ]]; then
  rabbit_user=mp3converter
  rabbit_pass=$(random_hex 24)
elif [[ $rabbit_pass == guest ]]; then
  log "warning: RabbitMQ keeps the placeholder guest/guest it was first started with; run scripts/minikube-down.sh (deletes its data) and this script again to get a generated password"
fi
amqp_url="amqp://$rabbit_user:$rabbit_pass@rabbitmq:5672/%2f"

jwt_secret=$(secret_value auth-secret JWT_SECRET)
if [[ ${#jwt_secret} -lt 32 || $jwt_secret == dev-placeholder-* ]]; then
  jwt_secret=$(random_hex 48)
fi
# Signed download links: one key for the gateway (checks them) and notification (mails them).
link_secret=$(secret_value gateway-secret DOWNLOAD_LINK_SECRET)
if [[ ${#link_secret} -lt 32 || $link_secret == dev-placeholder-* ]]; then
  link_secret=$(random_hex 48)
fi
mysql_password=${MYSQL_PASSWORD:-$(secret_value auth-secret MYSQL_PASSWORD)}
mysql_password=${mysql_password:-Auth123}

gmail_address=${GMAIL_ADDRESS:-$(secret_value notification-secret GMAIL_ADDRESS)}
gmail_password=${GMAIL_PASSWORD:-$(secret_value notification-secret GMAIL_PASSWORD)}
if [[ -z $gmail_address || -z $gmail_password || $gmail_address == placeholder-* ]]; then
  log "warning: GMAIL_ADDRESS / GMAIL_PASSWORD not set: notification runs, but no mail will be delivered"
  gmail_address=${gmail_address:-placeholder-sender@example.com}
  gmail_password=${gmail_password:-placeholder-gmail-app-password}
fi

put_secret rabbitmq-secret rabbitmq "RABBITMQ_DEFAULT_USER=$rabbit_user" "RABBITMQ_DEFAULT_PASS=$rabbit_pass"
put_secret auth-secret auth "MYSQL_PASSWORD=$mysql_password" "JWT_SECRET=$jwt_secret"
put_secret gateway-secret gateway "AMQP_URL=$amqp_url" "DOWNLOAD_LINK_SECRET=$link_secret"
put_secret converter-secret converter "AMQP_URL=$amqp_url"
put_secret notification-secret notification "AMQP_URL=$amqp_url" "GMAIL_ADDRESS=$gmail_address" "GMAIL_PASSWORD=$gmail_password" \
  "DOWNLOAD_LINK_SECRET=$link_secret"

# --- kustomization ----------------------------------------------------------------------------
components=()
if $IN_CLUSTER_DB; then
  mysql_root=$(secret_value mysql-secret MYSQL_ROOT_PASSWORD)
  [[ -n $mysql_root && $mysql_root != dev-placeholder-* ]] || mysql_root=$(random_hex 24)
  put_secret mysql-secret mysql "MYSQL_ROOT_PASSWORD=$mysql_root"
  # The schema: init.sql itself (kustomize may not read files outside manifests/).
  kubectl -n "$NS" create configmap mysql-initdb --from-file=init.sql=init.sql --dry-run=client -o yaml |
    kubectl label --local -f - app=mysql app.kubernetes.io/part-of=mp3converter -o yaml |
    kubectl apply -f - >/dev/null
  components+=(in-cluster-db)
fi
$KEDA && components+=(keda)
# Last: drops the placeholder Secrets so applying never overwrites the ones created above.
components+=(script-secrets)

mkdir -p "$KUSTOMIZATION_DIR"
{
  echo "# Written by scripts/minikube-up.sh on every run; applied with kubectl apply -k."
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  echo "  - ../../manifests"
  echo "components:"
  for c in "${components[@]}"; do echo "  - ../../manifests/components/$c"; done
} >"$KUSTOMIZATION_DIR/kustomization.yaml"

log "kubectl apply -k .dev/minikube (manifests/ + ${components[*]})"
kubectl apply -k "$KUSTOMIZATION_DIR"

# Same :dev tag, new image: a restart is the only way pods pick up a rebuild (and new Secrets).
kubectl -n "$NS" rollout restart deployment "${SERVICES[@]}" >/dev/null

# --- wait -------------------------------------------------------------------------------------
wait_for() {
  if ! kubectl -n "$NS" rollout status "$1" --timeout=10m; then
    kubectl -n "$NS" get pods -o wide >&2 || true
    die "$1 did not become ready. Look at: kubectl -n $NS describe $1; kubectl -n $NS logs $1
  auth not ready: is MySQL reachable at MYSQL_HOST with init.sql applied (or use --in-cluster-db)?
  gateway/converter/notification not ready: is MongoDB reachable at MONGODB_URI (host: mongod --bind_ip_all)?"
  fi
}
wait_for statefulset/rabbitmq
if $IN_CLUSTER_DB; then
  wait_for statefulset/mysql
  wait_for statefulset/mongo
fi
for svc in "${SERVICES[@]}"; do wait_for "deployment/$svc"; done

ip=$(minikube ip)
cat <<EOF

mp3converter is up in namespace $NS.

1. Make the ingress hosts resolve (once), e.g.:
     echo "$ip mp3converter.com rabbitmq-manager.com" | sudo tee -a /etc/hosts
   (with the docker driver on macOS or Windows, run 'minikube tunnel' and use 127.0.0.1 instead)

2. The tutorial's flow (demo user from init.sql):
     TOKEN=\$(curl -s -X POST http://mp3converter.com/login -u georgio@email.com:Admin123)
     curl -X POST -F 'file=@./test.mkv' -H "Authorization: Bearer \$TOKEN" http://mp3converter.com/upload
     # an email arrives at the uploader's address: "mp3 file_id: <fid> is now ready!"
     curl --output out.mp3 -X GET -H "Authorization: Bearer \$TOKEN" "http://mp3converter.com/download?fid=<fid>"

3. RabbitMQ management: http://rabbitmq-manager.com (user $rabbit_user; password:
     kubectl -n $NS get secret rabbitmq-secret -o go-template='{{.data.RABBITMQ_DEFAULT_PASS | base64decode}}')

Tear down: scripts/minikube-down.sh [--keep-data] [--stop]
EOF
