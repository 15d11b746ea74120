#!/usr/bin/env bash
# Run the Kubernetes manifests in containers on this machine: render manifests/ with kustomize
# through a small generated overlay and run the result with `podman kube play`, using the four
# images scripts/images.sh built. Waits until every probe of every Deployment answers, then
# prints the gateway's URL and the tutorial's curl flow. scripts/pods-down.sh removes it all.
#
# The overlay (.dev/pods/<name>/kustomization.yaml, written on every run) changes only what a
# laptop container runtime lacks, each patch listed there with its reason:
#   - hostNetwork and one replica: there is no cluster network, Service or DNS; the host's
#     MariaDB, RabbitMQ, MongoDB and maildev listen on 127.0.0.1 only, reachable from the host's
#     network namespace; each service's port moves to a free one on 127.0.0.1 (PORT/HEALTH_PORT
#     and the containerPort its probes name), never 8080/5000, which a dev-up may hold
#   - the host's servers instead of the cluster's: MYSQL_HOST, MONGODB_URI, AUTH_SVC_ADDRESS,
#     the AMQP host, and maildev instead of Gmail (SMTP_*)
#   - isolation on the shared servers: a MySQL database and user, a RabbitMQ vhost with one user
#     per service (limited to its queues), MongoDB databases, all named after <name>
#   - Secrets: the base has none (manifests/secret-templates/ lists them); values generated here,
#     handed to podman as podman secrets (`podman kube play` 4.3 does not take Secret objects)
#   - emptyDir volumes renamed per service (podman makes a named volume of each)
# Every image, securityContext, envFrom, probe, resource and other setting stays as the base has
# it. Services, Ingresses, autoscalers, PodDisruptionBudgets, NetworkPolicies and the RabbitMQ
# StatefulSet are not run (podman has no such objects; the host's broker stands in).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/pods-up.sh [-h] [--name NAME] [--no-demo-user]
  Run manifests/ with podman kube play against the host's servers (started by scripts/deps.sh).
  Needs the images of scripts/images.sh. Re-running replaces what an earlier run of NAME made.
  --name NAME       instance name (default mp3c-pods): prefixes pods, secrets, volumes, the
                    MySQL database/user, the RabbitMQ vhost/users and the MongoDB databases
  --no-demo-user    don't add the tutorial's demo user (georgio@email.com / Admin123)
  env: PODS_GATEWAY_PORT (28080), PODS_AUTH_PORT (25000), PODS_CONVERTER_PORT (28081),
       PODS_NOTIFICATION_PORT (28082): ports on 127.0.0.1; 0 picks a free one
       PODS_READY_TIMEOUT (180): seconds to wait for every probe
       MONGODB_URI: the MongoDB to use (default mongodb://127.0.0.1:27017)
EOF
}

NAME=mp3c-pods
DEMO_USER=1
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --name) NAME=${2:?--name needs a value}; shift ;;
    --no-demo-user) DEMO_USER=0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
[[ $NAME =~ ^[a-z][a-z0-9-]{0,30}$ ]] || { echo "--name: lowercase letters, digits and '-', at most 31" >&2; exit 2; }

MP3C_ME=pods-up
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
# shellcheck source=container-env.sh
source "$MP3C_ROOT/scripts/container-env.sh"
# shellcheck source=pods-lib.sh
source "$MP3C_ROOT/scripts/pods-lib.sh"
cd "$MP3C_ROOT"
mp3c_dirs
container_tools
[[ $(container_engine) == podman ]] || log "a Docker engine answers, but kube play needs podman: using podman"

for svc in "${PODS_SERVICES[@]}"; do
  podman image exists "mp3converter/$svc:dev" || die "image mp3converter/$svc:dev is missing: run scripts/images.sh first"
done

bash "$MP3C_ROOT/scripts/deps.sh"

STATE=$(pods_state_dir "$NAME")
if [[ -d $STATE ]]; then
  log "an earlier $NAME is recorded: removing it first"
  bash "$MP3C_ROOT/scripts/pods-down.sh" --name "$NAME"
fi
mkdir -p "$STATE"
chmod 700 "$STATE"

port_or_free() { if [[ ${1:-0} == 0 ]]; then pods_free_port; else echo "$1"; fi; }
declare -A PORT=(
  [auth]=$(port_or_free "${PODS_AUTH_PORT:-25000}")
  [gateway]=$(port_or_free "${PODS_GATEWAY_PORT:-28080}")
  [converter]=$(port_or_free "${PODS_CONVERTER_PORT:-28081}")
  [notification]=$(port_or_free "${PODS_NOTIFICATION_PORT:-28082}")
)
for svc in "${PODS_SERVICES[@]}"; do
  tcp_open 127.0.0.1 "${PORT[$svc]}" && die "127.0.0.1:${PORT[$svc]} (for $svc) is taken; set PODS_${svc^^}_PORT (0 = any free port)"
done

ID=${NAME//-/_}
secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
MYSQL_PW=$(secret)
JWT=$(secret)
LINK=$(secret)
declare -A AMQP_PW=([gateway]=$(secret) [converter]=$(secret) [notification]=$(secret))
MONGO=${MONGODB_URI:-mongodb://127.0.0.1:27017}
# The queue names the ConfigMaps give (the overlay keeps them; the vhost isolates them).
VIDEO_Q=$(awk '/^  VIDEO_QUEUE:/ {print $2}' manifests/gateway/configmap.yaml)
MP3_Q=$(awk '/^  MP3_QUEUE:/ {print $2}' manifests/notification/configmap.yaml)
# Recorded first, so pods-down can clean up even when a later step fails.
cat >"$STATE/instance" <<EOF
NAME=$NAME
ID=$ID
MONGO=$MONGO
GATEWAY_PORT=${PORT[gateway]}
AUTH_PORT=${PORT[auth]}
EOF

# --- the host's servers: a database, a vhost, users of this instance only -----------------------
log "MySQL: database and user $ID (generated password)"
{
  cat <<SQL
CREATE DATABASE IF NOT EXISTS \`$ID\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '$ID'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PW';
CREATE USER IF NOT EXISTS '$ID'@'localhost' IDENTIFIED BY '$MYSQL_PW';
ALTER USER '$ID'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PW';
ALTER USER '$ID'@'localhost' IDENTIFIED BY '$MYSQL_PW';
GRANT SELECT, INSERT, UPDATE, DELETE ON \`$ID\`.* TO '$ID'@'127.0.0.1';
GRANT SELECT, INSERT, UPDATE, DELETE ON \`$ID\`.* TO '$ID'@'localhost';
USE \`$ID\`;
SQL
  # The user table exactly as init.sql defines it, and (development setup) its demo user.
  awk '/^CREATE TABLE/ {on = 1} on {print} on && /;/ {exit}' init.sql
  if ((DEMO_USER)); then awk '/^INSERT IGNORE INTO `user`/ {on = 1} on {print} on && /;/ {exit}' dev-seed.sql; fi
} | mysql_root || die "could not create the MySQL database $ID"

log "RabbitMQ: vhost $NAME, one user per service limited to its queues (generated passwords)"
rabbitmqctl -q add_vhost "$NAME" >/dev/null 2>&1 || rabbitmqctl -q list_vhosts | grep -qxF "$NAME" ||
  die "rabbitmqctl add_vhost $NAME failed"
# The permissions the cluster's definitions give (scripts/rabbitmq_definitions.py), in the vhost.
while read -r user configure write read; do
  svc=${user#"$NAME-"}
  # rabbitmqctl reads stdin: never the loop's.
  rabbitmqctl -q delete_user "$user" </dev/null >/dev/null 2>&1 || true
  printf '%s' "${AMQP_PW[$svc]}" | rabbitmqctl -q add_user "$user" >/dev/null 2>&1 ||
    die "rabbitmqctl add_user $user failed"
  rabbitmqctl -q set_permissions -p "$NAME" "$user" "$configure" "$write" "$read" </dev/null >/dev/null ||
    die "rabbitmqctl set_permissions $user failed"
done < <(python3 scripts/rabbitmq_definitions.py --permissions-only --user-prefix "$NAME-" \
  --video-queue "$VIDEO_Q" --mp3-queue "$MP3_Q")

# --- the overlay --------------------------------------------------------------------------------
OVERLAY=$STATE/overlay
mkdir -p "$OVERLAY"
rel=$(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$MP3C_ROOT/manifests" "$OVERLAY")
amqp() { printf 'amqp://%s:%s@127.0.0.1:5672/%s' "$NAME-$1" "${AMQP_PW[$1]}" "$NAME"; }
deployment_patch() { # SERVICE: hostNetwork, one replica, the moved port, a volume of its own
  cat <<EOF
  # podman: no cluster network; the host's servers listen on 127.0.0.1 only.
  - target: {kind: Deployment, name: $1}
    patch: |-
      - {op: add, path: /spec/replicas, value: 1}
      - {op: add, path: /spec/template/spec/hostNetwork, value: true}
      - {op: replace, path: /spec/template/spec/containers/0/ports/0/containerPort, value: ${PORT[$1]}}
      - {op: replace, path: /spec/template/spec/volumes/0/name, value: $NAME-$1-tmp}
      - {op: replace, path: /spec/template/spec/containers/0/volumeMounts/0/name, value: $NAME-$1-tmp}
EOF
}
{
  cat <<EOF
# Written by scripts/pods-up.sh on every run (never committed: it holds generated secrets).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
# podman's names are global: pods, volumes and secrets carry the instance's name.
namePrefix: $NAME-
resources:
  - $rel
  # The Secrets the base leaves to the deployer (manifests/secret-templates/), generated here.
  - secrets.yaml
patches:
EOF
  for svc in "${PODS_SERVICES[@]}"; do deployment_patch "$svc"; done
  cat <<EOF
  # The host's servers, this instance's database, vhost and users; ports moved.
  - target: {kind: ConfigMap, name: auth-configmap}
    patch: |-
      - {op: replace, path: /data/PORT, value: "${PORT[auth]}"}
      - {op: replace, path: /data/MYSQL_HOST, value: 127.0.0.1}
      - {op: replace, path: /data/MYSQL_USER, value: $ID}
      - {op: replace, path: /data/MYSQL_DB, value: $ID}
  - target: {kind: ConfigMap, name: gateway-configmap}
    patch: |-
      - {op: replace, path: /data/PORT, value: "${PORT[gateway]}"}
      - {op: replace, path: /data/AUTH_SVC_ADDRESS, value: "127.0.0.1:${PORT[auth]}"}
      - {op: replace, path: /data/MONGODB_URI, value: "$MONGO"}
      - {op: replace, path: /data/MONGODB_VIDEOS_DB, value: ${ID}_videos}
      - {op: replace, path: /data/MONGODB_MP3S_DB, value: ${ID}_mp3s}
      # No proxy in front of it here: the peer address is the client's.
      - {op: replace, path: /data/TRUSTED_PROXY_HOPS, value: "0"}
  - target: {kind: ConfigMap, name: converter-configmap}
    patch: |-
      - {op: replace, path: /data/HEALTH_PORT, value: "${PORT[converter]}"}
      - {op: replace, path: /data/MONGODB_URI, value: "$MONGO"}
      - {op: replace, path: /data/MONGODB_VIDEOS_DB, value: ${ID}_videos}
      - {op: replace, path: /data/MONGODB_MP3S_DB, value: ${ID}_mp3s}
  - target: {kind: ConfigMap, name: notification-configmap}
    patch: |-
      - {op: replace, path: /data/HEALTH_PORT, value: "${PORT[notification]}"}
      - {op: replace, path: /data/MONGODB_URI, value: "$MONGO"}
      - {op: replace, path: /data/MONGODB_MP3S_DB, value: ${ID}_mp3s}
      # maildev on the host instead of Gmail: no TLS, no login.
      - {op: replace, path: /data/SMTP_HOST, value: 127.0.0.1}
      - {op: replace, path: /data/SMTP_PORT, value: "1025"}
      - {op: replace, path: /data/SMTP_TLS, value: none}
      - {op: replace, path: /data/SMTP_AUTH, value: "false"}
EOF
} >"$OVERLAY/kustomization.yaml"
secret_yaml() { # NAME APP KEY=VALUE...
  printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: mp3converter\n  labels:\n    app: %s\ntype: Opaque\nstringData:\n' "$1" "$2"
  local kv
  for kv in "${@:3}"; do printf '  %s: "%s"\n' "${kv%%=*}" "${kv#*=}"; done
}
(
  umask 077
  {
    secret_yaml auth-secret auth "MYSQL_PASSWORD=$MYSQL_PW" "JWT_SECRET=$JWT"
    secret_yaml gateway-secret gateway "AMQP_URL=$(amqp gateway)" "DOWNLOAD_LINK_SECRET=$LINK"
    secret_yaml converter-secret converter "AMQP_URL=$(amqp converter)"
    # maildev takes no login (SMTP_AUTH=false): no password.
    secret_yaml notification-secret notification "AMQP_URL=$(amqp notification)" "GMAIL_ADDRESS=$NAME@mp3converter.local" "GMAIL_PASSWORD=" "DOWNLOAD_LINK_SECRET=$LINK"
  } >"$OVERLAY/secrets.yaml"
)

log "kubectl kustomize $OVERLAY"
kubectl kustomize "$OVERLAY" >"$STATE/rendered.yaml"
chmod 600 "$STATE/rendered.yaml"

# --- what podman runs: our four Deployments and their ConfigMaps; Secrets as podman secrets -------
python3 "$MP3C_ROOT/scripts/pods_play.py" split --name "$NAME" --rendered "$STATE/rendered.yaml" \
  --out "$STATE" || die "rendering for podman failed"
for f in "$STATE"/secret-*.json; do
  sname=$(basename "$f" .json)
  sname=${sname#secret-}
  podman secret rm "$sname" >/dev/null 2>&1 || true
  podman secret create "$sname" "$f" >/dev/null
  echo "$sname" >>"$STATE/secrets"
  rm -f -- "$f"
done

log "podman kube play ($(grep -c '^kind: Deployment' "$STATE/play.yaml") Deployments)"
if ! podman kube play "$STATE/play.yaml" >"$STATE/play.log" 2>&1; then
  cat "$STATE/play.log" >&2
  die "podman kube play failed; remove what was made with scripts/pods-down.sh --name $NAME"
fi

# --- ready: every probe of every Deployment answers -----------------------------------------------
deadline=$(($(date +%s) + ${PODS_READY_TIMEOUT:-180}))
while read -r svc kind path port; do
  url=http://127.0.0.1:$port$path
  until curl -fsS -o /dev/null --max-time 3 "$url" 2>/dev/null; do
    state=$(podman inspect --format '{{.State.Status}}' "$(pods_container "$NAME" "$svc")" 2>/dev/null || echo missing)
    if [[ $state != running ]] || (($(date +%s) > deadline)); then
      podman logs --tail 40 "$(pods_container "$NAME" "$svc")" >&2 || true
      die "$svc: $kind probe $url did not answer 200 (container $state); scripts/pods-down.sh --name $NAME removes it"
    fi
    sleep 1
  done
  log "$svc: $kind probe $path answers on 127.0.0.1:$port"
done < <(python3 "$MP3C_ROOT/scripts/pods_play.py" probes --play "$STATE/play.yaml")

python3 "$MP3C_ROOT/scripts/pods_play.py" inspect --name "$NAME" --play "$STATE/play.yaml" ||
  die "a container does not run as its manifest says"

gw=http://127.0.0.1:${PORT[gateway]}
demo="georgio@email.com:Admin123"
((DEMO_USER)) || demo="EMAIL:PASSWORD  # add one: podman exec -i $(pods_container "$NAME" auth) auth user add EMAIL"
cat <<EOF

mp3converter runs in podman from manifests/ (instance $NAME): gateway $gw

  TOKEN=\$(curl -s -X POST $gw/login -u $demo)
  curl -X POST -F 'file=@./test.mkv' -H "Authorization: Bearer \$TOKEN" $gw/upload
  # the mail arrives at http://127.0.0.1:1080 : "mp3 file_id: <fid> is now ready!"
  curl --output out.mp3 -H "Authorization: Bearer \$TOKEN" "$gw/download?fid=<fid>"

Logs: podman logs $(pods_container "$NAME" gateway)  (also -auth, -converter, -notification)
Tear down: scripts/pods-down.sh --name $NAME
EOF
