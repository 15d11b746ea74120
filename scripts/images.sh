#!/usr/bin/env bash
# Build the four images from docker/Dockerfile and tag them as the manifests name them
# (mp3converter/<service>:dev). With Docker when an engine answers (`docker info`), else with
# podman, which this script installs (apt-get) and configures for itself (scripts/container-env.sh:
# runc, cgroupfs, ulimits within the machine's; never the machine's global configuration).
#
# No registry is reachable from our machines: when the engine lacks the Dockerfile's base images
# (debian:bookworm-slim, rust:1-bookworm) they are made here with debootstrap, the builder with
# this machine's Rust toolchain. Where a registry is reachable Docker pulls the official ones.
#
# The builder stage compiles the four binaries at once; its layer and the Dockerfile's cache
# mounts (cargo registry, target/) persist between runs, so a second run with nothing changed
# takes seconds and a source change recompiles our crates only.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/images.sh [-h] [--tag TAG] [SERVICE...]
  Build mp3converter/<service>:TAG (default dev) for auth gateway notification converter (or the
  SERVICEs named) and print each image's size (base + our layers) and the build time.
  env: MP3C_ENGINE=docker|podman  force an engine (default: docker when `docker info` answers)
       IMAGES_NO_CACHE=1          build without the layer cache (cold build; cache mounts kept)
EOF
}

TAG=dev
SERVICES=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --tag) TAG=${2:?--tag needs a value}; shift ;;
    auth | gateway | notification | converter) SERVICES+=("$1") ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
((${#SERVICES[@]})) || SERVICES=(auth gateway notification converter)

MP3C_ME=images
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
# shellcheck source=container-env.sh
source "$MP3C_ROOT/scripts/container-env.sh"
cd "$MP3C_ROOT"
mp3c_dirs

ENGINE=$(container_engine)
if [[ $ENGINE == podman ]]; then
  container_tools
  ensure_base_images podman
fi
log "engine: $ENGINE"

build_args=(build -f docker/Dockerfile)
if [[ $ENGINE == podman ]]; then
  # crates.io and Debian's mirrors are reached from RUN steps through the host's network.
  build_args+=(--network host --layers)
else
  export DOCKER_BUILDKIT=1
fi
[[ ${IMAGES_NO_CACHE:-0} == 1 ]] && build_args+=(--no-cache)

size_of() { "$ENGINE" image inspect --format '{{.Size}}' "$1"; }
mb() { awk -v b="$1" 'BEGIN {printf "%.1f MB", b / 1e6}'; }

start_all=$(date +%s)
for svc in "${SERVICES[@]}"; do
  start=$(date +%s)
  log "building mp3converter/$svc:$TAG (log: $MP3C_LOG_DIR/image-$svc.log)"
  if ! "$ENGINE" "${build_args[@]}" --target "$svc" -t "mp3converter/$svc:$TAG" . >"$MP3C_LOG_DIR/image-$svc.log" 2>&1; then
    show_log_tail "$MP3C_LOG_DIR/image-$svc.log"
    die "building mp3converter/$svc:$TAG failed; log: $MP3C_LOG_DIR/image-$svc.log"
  fi
  log "mp3converter/$svc:$TAG built in $(($(date +%s) - start)) s"
done
took=$(($(date +%s) - start_all))

# Sizes as base + our layers: what a user with the official base already pulled downloads.
base=$(size_of docker.io/library/debian:bookworm-slim 2>/dev/null || size_of debian:bookworm-slim)
printf '\n%-32s %12s %14s\n' image total "our layers"
for svc in "${SERVICES[@]}"; do
  total=$(size_of "mp3converter/$svc:$TAG")
  printf '%-32s %12s %14s\n' "mp3converter/$svc:$TAG" "$(mb "$total")" "$(mb $((total - base)))"
done
printf '%-32s %12s   (made here with debootstrap when absent; the official slim image is ~75 MB)\n' \
  debian:bookworm-slim "$(mb "$base")"
printf 'built %d image(s) in %d s with %s\n' "${#SERVICES[@]}" "$took" "$ENGINE"
