#!/usr/bin/env bash
# Remove what scripts/pods-up.sh made for one instance, and nothing else: its pods (podman kube
# down of the play file it recorded), their volumes, its podman secrets, its MySQL database and
# user, its RabbitMQ vhost and users, its MongoDB databases, and its state under .dev/pods/.
# The host's servers keep running; images stay (scripts/images.sh made them).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'EOF2'
usage: scripts/pods-down.sh [-h] [--name NAME]
  Remove instance NAME (default mp3c-pods) of scripts/pods-up.sh.
EOF2
}

NAME=mp3c-pods
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --name) NAME=${2:?--name needs a value}; shift ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
[[ $NAME =~ ^[a-z][a-z0-9-]{0,30}$ ]] || { echo "--name: lowercase letters, digits and '-', at most 31" >&2; exit 2; }

MP3C_ME=pods-down
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
# shellcheck source=container-env.sh
source "$MP3C_ROOT/scripts/container-env.sh"
# shellcheck source=pods-lib.sh
source "$MP3C_ROOT/scripts/pods-lib.sh"
cd "$MP3C_ROOT"

STATE=$(pods_state_dir "$NAME")
if [[ ! -f $STATE/instance ]]; then
  log "no instance $NAME recorded ($STATE): nothing to remove"
  exit 0
fi
ID=$(awk -F= '$1 == "ID" {print $2}' "$STATE/instance")
MONGO=$(awk -F= '$1 == "MONGO" {print substr($0, index($0, "=") + 1)}' "$STATE/instance")
[[ $ID == "${NAME//-/_}" ]] || die "$STATE/instance does not belong to $NAME"
command -v podman >/dev/null && container_tools
status=0

if [[ -f $STATE/play.yaml ]]; then
  log "podman kube down (pods of $NAME)"
  # Containers get SIGTERM and the pod's grace period, as in a cluster; then the volumes go.
  podman kube down "$STATE/play.yaml" >/dev/null 2>&1 || true
  for svc in "${PODS_SERVICES[@]}"; do
    podman pod rm -f "$NAME-$svc-pod-0" >/dev/null 2>&1 || true
    podman volume rm -f "$NAME-$svc-tmp" >/dev/null 2>&1 || true
  done
fi
if [[ -f $STATE/secrets ]]; then
  while read -r s; do podman secret rm "$s" >/dev/null 2>&1 || true; done <"$STATE/secrets"
fi

log "MySQL: dropping database and user $ID"
mysql_root <<SQL || status=1
DROP DATABASE IF EXISTS \`$ID\`;
DROP USER IF EXISTS '$ID'@'127.0.0.1';
DROP USER IF EXISTS '$ID'@'localhost';
SQL

log "RabbitMQ: deleting vhost $NAME and its users"
rabbitmqctl -q delete_vhost "$NAME" >/dev/null 2>&1 || true
for svc in gateway converter notification; do rabbitmqctl -q delete_user "$NAME-$svc" >/dev/null 2>&1 || true; done

log "MongoDB: dropping ${ID}_videos and ${ID}_mp3s"
python3 - "$MONGO" "${ID}_videos" "${ID}_mp3s" <<'PY' || status=1
import sys
import pymongo
client = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000)
for db in sys.argv[2:]:
    client.drop_database(db)
PY

rm -rf -- "$STATE"
((status == 0)) || die "some of $NAME could not be removed (see above)"
log "removed $NAME"
