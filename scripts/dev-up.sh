#!/usr/bin/env bash
# One command from a fresh machine to the whole suite running locally: the dependencies
# (scripts/deps.sh), a release build, then `xtask dev-up` (crates/xtask/src/dev.rs): the auth
# database (init.sql, auth's migrations) and the development accounts (dev-seed.sql), secrets kept in .dev/, the
# four services in the background (logs in .dev/logs/, pids in .dev/pids/; running ones are
# restarted, so a re-run after a rebuild picks up the new binaries). Stop with scripts/dev-down.sh.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'EOF2'
usage: scripts/dev-up.sh [--no-build] [--debug] [--prometheus] [-h|--help]
  Start mp3converter locally: deps, init.sql, build (release), auth :5000, gateway :8080,
  converter (health :8081), notification (health :8082), mail UI at http://127.0.0.1:1080.
  --no-build  use the binaries already built      --debug  use the debug profile
  --prometheus  also start a Prometheus on 127.0.0.1:9090 (env PROMETHEUS_PORT) scraping the
                four services' /metrics every 5 s, with the suite's alert rules
  Env: MONGODB_URI (use that server), RUST_LOG (default info), MP3C_DEV_DIR (default <repo>/.dev)
EOF2
}

build=1 profile=release args=()
for arg; do
  case $arg in
    -h | --help) usage && exit 0 ;;
    --no-build) build=0 ;;
    --debug) profile=debug args+=("$arg") ;;
    --prometheus) args+=("$arg") ;;
    *) usage >&2 && exit 2 ;;
  esac
done

MP3C_ME=dev-up
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
cd "$MP3C_ROOT" && cargo_path
bash scripts/deps.sh
if ((build)); then
  log "cargo build --$profile --bins (waits if another build holds the lock)"
  if [[ $profile == release ]]; then cargo build --release --bins; else cargo build --bins; fi
fi
xtask=${CARGO_TARGET_DIR:-target}/$profile/xtask
[[ -x $xtask ]] || die "binary $xtask not found (build it, or drop --no-build)"
exec "$xtask" dev-up "${args[@]}"
