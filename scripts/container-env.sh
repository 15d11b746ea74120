#!/usr/bin/env bash
# Container tooling for `xtask images` and `xtask pods` (crates/xtask/src/pods/): installing
# podman and making base images, the parts that are package installs. The machine's global
# container configuration (/etc/containers) is never changed: podman reads ours through
# CONTAINERS_CONF, which xtask sets from the path `tools` prints.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/container-env.sh tools | base-images ENGINE
  tools        install podman, buildah, runc, debootstrap, kubernetes-client (apt-get, only what
               is missing), write .dev/containers/containers.conf and print its path
  base-images  make debian:bookworm-slim and rust:1-bookworm with debootstrap when ENGINE
               (podman or docker) lacks them (no registry is reachable from our machines)
EOF
}

MP3C_ME=container-env
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
mkdir -p "$MP3C_LOG_DIR"
SUDO=()
((EUID == 0)) || SUDO=(sudo)

tools() {
  local need=()
  command -v podman >/dev/null || need+=(podman)
  command -v buildah >/dev/null || need+=(buildah)
  command -v runc >/dev/null || need+=(runc)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v kubectl >/dev/null || need+=(kubernetes-client)
  # netavark + aardvark-dns: container networks with name resolution (podman's recommends).
  [[ -x /usr/lib/podman/netavark ]] || need+=(netavark)
  [[ -x /usr/lib/podman/aardvark-dns ]] || need+=(aardvark-dns)
  command -v slirp4netns >/dev/null || need+=(slirp4netns)
  command -v fuse-overlayfs >/dev/null || need+=(fuse-overlayfs)
  # podman builds its pod "pause" image locally from catatonit (no registry to pull it from).
  [[ -x /usr/libexec/podman/catatonit ]] || command -v catatonit >/dev/null || need+=(catatonit)
  command -v uidmap >/dev/null || dpkg -s uidmap >/dev/null 2>&1 || need+=(uidmap)
  if ((${#need[@]})); then
    local aptlog=$MP3C_LOG_DIR/apt.log
    log "installing ${need[*]} with apt-get (log: $aptlog)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache policy "${need[0]}" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      "${SUDO[@]}" apt-get update >>"$aptlog" 2>&1 || die "apt-get update failed; log: $aptlog"
    fi
    "${SUDO[@]}" apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 "${need[@]}" \
      >>"$aptlog" 2>&1 || die "apt-get install ${need[*]} failed; log: $aptlog"
  fi

  # Our own containers.conf: crun fails here ("cgroups in hybrid mode not supported"), systemd
  # is not the init of our CI machines, and podman's default ulimits exceed the machine's hard
  # limits ("setrlimit ... Operation not permitted"): nofile within this shell's hard limit,
  # nproc also within kernel.pid_max, above which runc's setrlimit fails even below the limit.
  local dir=${MP3C_CONTAINERS_DIR:-$MP3C_DEV_DIR/containers} nofile nproc pid_max
  mkdir -p "$dir"
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  pid_max=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)
  [[ $nofile == unlimited ]] && nofile=1048576
  [[ $nproc == unlimited ]] && nproc=$pid_max
  ((nproc > pid_max)) && nproc=$pid_max
  cat >"$dir/containers.conf.tmp" <<EOF
# Written by scripts/container-env.sh; read by podman through CONTAINERS_CONF.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
# Debian's podman keeps netavark, aardvark-dns and catatonit here; a containers.conf of our own
# replaces the distribution's, so name them.
helper_binaries_dir = ["/usr/lib/podman", "/usr/libexec/podman", "/usr/local/libexec/podman", "/usr/local/lib/podman"]

[network]
# netavark + aardvark-dns: networks with name resolution (CNI plugins are not installed).
network_backend = "netavark"
EOF
  mv -f "$dir/containers.conf.tmp" "$dir/containers.conf"
  printf '%s\n' "$dir/containers.conf"
}

# rootfs_image NAME FIX ENGINE [ENV...]: debootstrap a minbase bookworm, run FIX (a function
# name) on the tree, import it as NAME with the ENV entries (KEY=VALUE) in its configuration.
rootfs_image() {
  local name=$1 fix=$2 engine=$3 dir e dlog=$MP3C_LOG_DIR/debootstrap.log
  shift 3
  local changes=(--change 'CMD ["bash"]')
  for e in "$@"; do changes+=(--change "ENV $e"); done
  dir=$(mktemp -d "${TMPDIR:-/tmp}/mp3c-rootfs.XXXXXX")
  log "making $name with debootstrap (no registry is reachable; about a minute)"
  debootstrap --variant=minbase bookworm "$dir" http://deb.debian.org/debian >>"$dlog" 2>&1 || {
    rm -rf -- "$dir"
    die "debootstrap failed; log: $dlog"
  }
  # Like the official image: apt sources for bookworm and its security updates.
  printf 'deb http://deb.debian.org/debian %s main\n' bookworm bookworm-updates >"$dir/etc/apt/sources.list"
  echo 'deb http://deb.debian.org/debian-security bookworm-security main' >>"$dir/etc/apt/sources.list"
  "$fix" "$dir"
  rm -rf -- "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | "$engine" import "${changes[@]}" - "$name" >>"$dlog" 2>&1
  rm -rf -- "$dir"
}

fix_slim() { :; }

fix_rust() {
  # The official rust image is buildpack-deps (gcc, make, pkg-config, ...) plus rustup under
  # /usr/local. Ours: the same build essentials and this machine's own stable toolchain.
  chroot "$1" apt-get update >/dev/null
  chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    gcc libc6-dev make pkg-config ca-certificates git >/dev/null
  # This machine's trust store: cargo reaches crates.io through whatever TLS proxy the machine's
  # own CA bundle trusts (the official image trusts Debian's list, which is the same elsewhere).
  [[ -s /etc/ssl/certs/ca-certificates.crt ]] && cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/ca-certificates.crt"
  local tc b
  tc=$(rustup toolchain list 2>/dev/null | awk '/default/ {print $1}' | head -n1)
  [[ -n $tc ]] || tc=$(find "$HOME/.rustup/toolchains" -maxdepth 1 -name 'stable-*' -printf '%f\n' | head -n1)
  [[ -n $tc && -d $HOME/.rustup/toolchains/$tc ]] || die "no Rust toolchain under ~/.rustup to copy into the builder image"
  mkdir -p "$1/usr/local/rustup/toolchains" "$1/usr/local/cargo/bin"
  cp -a "$HOME/.rustup/toolchains/$tc" "$1/usr/local/rustup/toolchains/$tc"
  rm -rf -- "$1/usr/local/rustup/toolchains/$tc/share/doc"
  for b in cargo rustc rustdoc; do ln -sf "../../rustup/toolchains/$tc/bin/$b" "$1/usr/local/cargo/bin/$b"; done
}

base_images() {
  local engine=${1:?base-images needs an ENGINE} path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  if [[ $engine == podman ]]; then export CONTAINERS_CONF=${CONTAINERS_CONF:-$(tools)}; fi
  "$engine" image inspect docker.io/library/debian:bookworm-slim >/dev/null 2>&1 ||
    rootfs_image docker.io/library/debian:bookworm-slim fix_slim "$engine" "PATH=$path"
  # The official image's environment: rustup and cargo homes under /usr/local.
  "$engine" image inspect docker.io/library/rust:1-bookworm >/dev/null 2>&1 ||
    rootfs_image docker.io/library/rust:1-bookworm fix_rust "$engine" \
      RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo "PATH=/usr/local/cargo/bin:$path"
}

case ${1:-} in
  tools) tools ;;
  base-images) base_images "${2:-}" ;;
  -h | --help) usage ;;
  *) usage >&2; exit 2 ;;
esac
