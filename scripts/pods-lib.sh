# shellcheck shell=bash
# Helpers shared by scripts/pods-up.sh, pods-down.sh and pods-test.sh. Sourced, never run.
# Expects _lib.sh to be sourced first.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  echo "usage: source scripts/pods-lib.sh   (helpers for pods-up.sh / pods-down.sh)" >&2
  exit 2
fi

# shellcheck disable=SC2034 # used by the scripts that source this file
PODS_SERVICES=(auth gateway converter notification)

# pods_state_dir NAME: where pods-up records what it made for instance NAME (secrets included).
pods_state_dir() { printf '%s/pods/%s\n' "$MP3C_DEV_DIR" "$1"; }

# pods_container NAME SERVICE: the container podman kube play makes for a Deployment
# (<deployment>-pod-0 is the pod, -<container> is appended).
pods_container() { printf '%s-%s-pod-0-%s\n' "$1" "$2" "$2"; }

# mysql_root [ARGS...]: the mysql client as an administrator (root over TCP when allowed, else the socket).
# shellcheck disable=SC2120 # callers pass no arguments today; the SQL comes on stdin
mysql_root() {
  if mysql --protocol=tcp -h127.0.0.1 -P3306 -uroot -e 'SELECT 1' >/dev/null 2>&1; then
    mysql --protocol=tcp -h127.0.0.1 -P3306 -uroot "$@"
  elif ((EUID == 0)); then
    mysql -uroot "$@"
  else
    sudo mysql -uroot "$@"
  fi
}

# pods_free_port: a TCP port free on 127.0.0.1 now.
pods_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
