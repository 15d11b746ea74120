#!/usr/bin/env bash
# Deploy mp3converter to a local minikube: start it if needed, build the four images inside its
# Docker, create the Secrets with generated values, apply the manifests, wait for the rollouts,
# and print the /etc/hosts line and the tutorial's curl flow. Safe to run again: it keeps the
# Secrets it generated before (RabbitMQ and MySQL only read their credentials on first start)
# and restarts the services so rebuilt :dev images are picked up. See docs/deploy.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/minikube-up.sh [-h] [--in-cluster-db] [--keda] [--cert-manager] [--demo-user] [--no-build]
  --in-cluster-db  run MySQL and MongoDB in the cluster (manifests/components/in-cluster-db)
                   instead of using the ones on the minikube host (host.minikube.internal)
  --keda           scale the converter on queue length (manifests/components/keda; KEDA must
                   already be installed in the cluster)
  --cert-manager   have cert-manager issue the ingress certificate (manifests/components/cert-manager;
                   cert-manager must already be installed) instead of a self-signed one made here
  --demo-user      (with --in-cluster-db) add the tutorial's demo user georgio@email.com/Admin123
                   (dev-seed.sql): a public password, for a throwaway cluster only
  --no-build       do not rebuild the images
  env: MINIKUBE_K8S_VERSION  Kubernetes version for a new cluster (default 1.34.0, the one
                             scripts/check-deploy.sh validates; "default" = minikube's choice)
       MINIKUBE_START_ARGS   more arguments for a new cluster, e.g. "--cpus=4 --memory=6g"
       MYSQL_PASSWORD        the MySQL password of auth-configmap's MYSQL_USER on the host's MySQL
                             (default: the one already deployed; with --in-cluster-db generated).
                             Without either, the host path stops: no known password is deployed
       GMAIL_ADDRESS, GMAIL_PASSWORD   sender account and app password for the notification mail
EOF
}

IN_CLUSTER_DB=false
KEDA=false
CERT_MANAGER=false
DEMO_USER=false
BUILD=true
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --in-cluster-db) IN_CLUSTER_DB=true ;;
    --keda) KEDA=true ;;
    --cert-manager) CERT_MANAGER=true ;;
    --demo-user) DEMO_USER=true ;;
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
  # The same build step CI runs (scripts/images.sh), here with minikube's Docker engine.
  MP3C_ENGINE=docker bash "$ROOT/scripts/images.sh"
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

# Every value is generated on the first run and kept on later ones (the databases read theirs
# only when they first initialise their volumes). None is ever a value printed in the repository.
amqp_password() { # SERVICE: the password in its deployed AMQP_URL, or a new one
  local url pw
  url=$(secret_value "$1-secret" AMQP_URL)
  pw=$(sed -n 's|^amqp://[^:]*:\([^@]*\)@.*|\1|p' <<<"$url")
  if [[ ${#pw} -ge 16 && $url == "amqp://$1:"* ]]; then printf '%s' "$pw"; else random_hex 24; fi
}
declare -A amqp_pw
for svc in gateway converter notification; do amqp_pw[$svc]=$(amqp_password "$svc"); done
rabbit_admin_pw=$(secret_value rabbitmq-definitions admin-password)
[[ ${#rabbit_admin_pw} -ge 16 ]] || rabbit_admin_pw=$(random_hex 24)
# RabbitMQ loads these definitions at every boot: an administrator and one user per service,
# limited to its queues (scripts/rabbitmq_definitions.py); no guest user.
video_q=$(awk '/^  VIDEO_QUEUE:/ {print $2}' manifests/gateway/configmap.yaml)
mp3_q=$(awk '/^  MP3_QUEUE:/ {print $2}' manifests/notification/configmap.yaml)
python3 "$ROOT/scripts/rabbitmq_definitions.py" --admin-user admin --admin-password "$rabbit_admin_pw" \
  --video-queue "$video_q" --mp3-queue "$mp3_q" \
  --password "gateway=${amqp_pw[gateway]}" --password "converter=${amqp_pw[converter]}" \
  --password "notification=${amqp_pw[notification]}" >"$SECRET_DIR/definitions.json" ||
  die "could not write the RabbitMQ definitions"
definitions=$(<"$SECRET_DIR/definitions.json")
amqp_url() { printf 'amqp://%s:%s@rabbitmq:5672/%%2f' "$1" "${amqp_pw[$1]}"; }

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
if [[ -z $mysql_password ]]; then
  if $IN_CLUSTER_DB; then
    mysql_password=$(random_hex 24)
  else
    die "MYSQL_PASSWORD is not set: give the password of $(awk '/^  MYSQL_USER:/ {print $2}' manifests/auth/configmap.yaml) on the host's MySQL (create that user with one of your own, docs/deploy.md), or use --in-cluster-db"
  fi
fi
gmail_address=${GMAIL_ADDRESS:-$(secret_value notification-secret GMAIL_ADDRESS)}
gmail_password=${GMAIL_PASSWORD:-$(secret_value notification-secret GMAIL_PASSWORD)}
if [[ -z $gmail_address || -z $gmail_password ]]; then
  log "warning: GMAIL_ADDRESS / GMAIL_PASSWORD not set: notification will not start until notification-secret has them"
fi

mongo_extra=()
if $IN_CLUSTER_DB; then
  mongo_app_pw=$(sed -n 's|^mongodb://mp3converter:\([^@]*\)@.*|\1|p' <<<"$(secret_value gateway-secret MONGODB_URI)")
  [[ ${#mongo_app_pw} -ge 16 ]] || mongo_app_pw=$(random_hex 24)
  mongo_root_pw=$(secret_value mongo-secret MONGO_INITDB_ROOT_PASSWORD)
  [[ ${#mongo_root_pw} -ge 16 ]] || mongo_root_pw=$(random_hex 24)
  put_secret mongo-secret mongo "MONGO_INITDB_ROOT_USERNAME=admin" "MONGO_INITDB_ROOT_PASSWORD=$mongo_root_pw" \
    "MONGO_APP_USERNAME=mp3converter" "MONGO_APP_PASSWORD=$mongo_app_pw"
  mongo_extra=("MONGODB_URI=mongodb://mp3converter:$mongo_app_pw@mongo:27017/?authSource=admin")
fi

put_secret rabbitmq-definitions rabbitmq "definitions.json=$definitions" "admin-password=$rabbit_admin_pw"
put_secret auth-secret auth "MYSQL_PASSWORD=$mysql_password" "JWT_SECRET=$jwt_secret"
put_secret gateway-secret gateway "AMQP_URL=$(amqp_url gateway)" "DOWNLOAD_LINK_SECRET=$link_secret" "${mongo_extra[@]}"
put_secret converter-secret converter "AMQP_URL=$(amqp_url converter)" "${mongo_extra[@]}"
put_secret notification-secret notification "AMQP_URL=$(amqp_url notification)" "GMAIL_ADDRESS=$gmail_address" \
  "GMAIL_PASSWORD=$gmail_password" "DOWNLOAD_LINK_SECRET=$link_secret" "${mongo_extra[@]}"

# The ingress certificate: cert-manager's, or a self-signed one made here (kept while valid).
if ! $CERT_MANAGER && ! kubectl -n "$NS" get secret mp3converter-tls >/dev/null 2>&1; then
  command -v openssl >/dev/null 2>&1 || die "openssl is needed to make the ingress certificate (or use --cert-manager)"
  log "making a self-signed certificate for mp3converter.com (secret/mp3converter-tls)"
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=mp3converter.com \
    -addext subjectAltName=DNS:mp3converter.com -keyout "$SECRET_DIR/tls.key" -out "$SECRET_DIR/tls.crt" 2>/dev/null ||
    die "openssl could not make the certificate"
  kubectl -n "$NS" create secret tls mp3converter-tls --cert="$SECRET_DIR/tls.crt" --key="$SECRET_DIR/tls.key" \
    --dry-run=client -o yaml |
    kubectl label --local -f - app=gateway app.kubernetes.io/part-of=mp3converter -o yaml |
    kubectl apply -f - >/dev/null
fi
if $CERT_MANAGER && ! kubectl get crd certificates.cert-manager.io >/dev/null 2>&1; then
  die "--cert-manager: cert-manager is not installed (no CRD certificates.cert-manager.io); see https://cert-manager.io/docs/installation/"
fi

# --- kustomization ----------------------------------------------------------------------------
components=()
if $IN_CLUSTER_DB; then
  mysql_root=$(secret_value mysql-secret MYSQL_ROOT_PASSWORD)
  [[ -n $mysql_root && $mysql_root != dev-placeholder-* ]] || mysql_root=$(random_hex 24)
  # The image creates MYSQL_USER with MYSQL_PASSWORD (ALL on MYSQL_DATABASE) before init.sql.
  put_secret mysql-secret mysql "MYSQL_ROOT_PASSWORD=$mysql_root" \
    "MYSQL_DATABASE=$(awk '/^  MYSQL_DB:/ {print $2}' manifests/auth/configmap.yaml)" \
    "MYSQL_USER=$(awk '/^  MYSQL_USER:/ {print $2}' manifests/auth/configmap.yaml)" "MYSQL_PASSWORD=$mysql_password"
  # The schema: init.sql itself (kustomize may not read files outside manifests/); the demo user
  # of dev-seed.sql only when asked for.
  initdb=(--from-file=init.sql=init.sql)
  if $DEMO_USER; then
    awk '/^USE auth;/ {print} /^INSERT IGNORE INTO `user`/ {on = 1} on {print} on && /;/ {exit}' dev-seed.sql >"$SECRET_DIR/zz-demo-user.sql"
    initdb+=(--from-file=zz-demo-user.sql="$SECRET_DIR/zz-demo-user.sql")
  fi
  kubectl -n "$NS" create configmap mysql-initdb "${initdb[@]}" --dry-run=client -o yaml |
    kubectl label --local -f - app=mysql app.kubernetes.io/part-of=mp3converter -o yaml |
    kubectl apply -f - >/dev/null
  components+=(in-cluster-db)
fi
$KEDA && components+=(keda)
$CERT_MANAGER && components+=(cert-manager)
# Last: drops any Secret labelled as a placeholder, so applying never overwrites the ones
# created above (the base ships none; this guards against one coming back).
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
  auth not ready: is MySQL reachable at MYSQL_HOST with init.sql applied and MYSQL_PASSWORD right (or use --in-cluster-db)?
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
if $IN_CLUSTER_DB && $DEMO_USER; then
  user_hint="the demo user (--demo-user, dev-seed.sql): -u georgio@email.com:Admin123"
else
  user_hint="a user of yours: kubectl -n $NS exec -i deploy/auth -- auth user add you@example.com  (password on stdin)"
fi
cat <<EOF

mp3converter is up in namespace $NS.

1. Make the ingress host resolve (once), e.g.:
     echo "$ip mp3converter.com" | sudo tee -a /etc/hosts
   (with the docker driver on macOS or Windows, run 'minikube tunnel' and use 127.0.0.1 instead)

2. The tutorial's flow over HTTPS ($user_hint; the certificate is self-signed unless
   --cert-manager with a real issuer, hence -k):
     TOKEN=\$(curl -sk -X POST https://mp3converter.com/login -u EMAIL:PASSWORD)
     curl -k -X POST -F 'file=@./test.mkv' -H "Authorization: Bearer \$TOKEN" https://mp3converter.com/upload
     # an email arrives at the uploader's address: "mp3 file_id: <fid> is now ready!"
     curl -k --output out.mp3 -H "Authorization: Bearer \$TOKEN" "https://mp3converter.com/download?fid=<fid>"

3. RabbitMQ management (not on the ingress): kubectl -n $NS port-forward svc/rabbitmq 15672
   then http://127.0.0.1:15672, user admin, password:
     kubectl -n $NS get secret rabbitmq-definitions -o go-template='{{index .data "admin-password" | base64decode}}'

Tear down: scripts/minikube-down.sh [--keep-data] [--stop]
EOF
