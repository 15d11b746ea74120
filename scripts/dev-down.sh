#!/usr/bin/env bash
# Stop what scripts/dev-up.sh and scripts/deps.sh started, and only that (by the pids they
# recorded in .dev/pids/): `xtask dev-down` (crates/xtask/src/dev.rs). MariaDB and RabbitMQ
# are left alone unless deps.sh started them.
# usage: scripts/dev-down.sh [--services-only] [--purge] [-h|--help]
#   --services-only  keep the dependencies (maildev, MongoDB server, ...) running
#   --purge          also delete the state directory (.dev/: data, logs, JWT secret, maildev install)
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
target=${CARGO_TARGET_DIR:-target}
for xtask in "$target/release/xtask" "$target/debug/xtask" ""; do [[ ! -x $xtask ]] || break; done
[[ -n $xtask ]] || { cargo build --quiet -p xtask && xtask=$target/debug/xtask; }
exec "$xtask" dev-down "$@"
