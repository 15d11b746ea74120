#!/usr/bin/env bash
# Stop what scripts/dev-up.sh and scripts/deps.sh started, and only that (by the pids they
# recorded in .dev/pids/). MariaDB and RabbitMQ are left alone unless deps.sh started them.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/dev-down.sh [--services-only] [--purge] [-h|--help]
  Stop the services started by dev-up.sh, then the dependencies deps.sh started.
  --services-only  keep the dependencies (maildev, MongoDB server, ...) running
  --purge          also delete the state directory (.dev/: data, logs, JWT secret, maildev install)
EOF
}

services_only=0
purge=0
while (($#)); do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --services-only) services_only=1 ;;
    --purge) purge=1 ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
  shift
done
if ((purge && services_only)); then
  echo "[dev-down] error: --purge deletes the dependencies' data too; not with --services-only" >&2
  exit 2
fi

MP3C_ME=dev-down
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"

[[ -d $MP3C_DEV_DIR ]] || {
  log "nothing to do: $MP3C_DEV_DIR does not exist"
  exit 0
}

# The gateway first (no new work comes in), auth last (the gateway needs it to drain).
for svc in prometheus gateway converter notification auth; do
  stop_recorded "$svc" 30
done

if ((!services_only)); then
  for dep in "${MP3C_DEPS[@]}"; do
    stop_dep "$dep"
  done
fi

if ((purge)); then
  dev_dir=$(cd -- "$MP3C_DEV_DIR" && pwd -P)
  case $dev_dir in
    / | "$HOME" | "$MP3C_ROOT") die "refusing to delete $dev_dir (MP3C_DEV_DIR points at it)" ;;
  esac
  rm -rf -- "$dev_dir"
  log "deleted $dev_dir"
fi
log "done"
