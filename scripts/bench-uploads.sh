#!/usr/bin/env bash
# Issue 13, point 12: the gateway's memory under many concurrent uploads, measured by
# `xtask concurrent-uploads` (crates/xtask) against a freshly started stack of release binaries.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'EOF2'
usage: scripts/bench-uploads.sh [-h|--help] [--count N] [--seconds S] [--timeout SECS]
  Start the dependencies (scripts/deps.sh), build release binaries, then upload one small test
  video (--seconds of generated video, default 40, ~0.9 MB) --count times at once (default 200)
  and wait until each accepted upload has exactly one mp3. Prints one JSON line: statuses,
  the gateway's idle and peak RSS (KiB), and whether every accepted upload was converted once.
  Env: BENCH_SERVICE_ENV="A=1 B=2" adds variables to every service (e.g. MAX_CONCURRENT_UPLOADS).
EOF2
}

case "${1:-}" in
  -h | --help)
    usage
    exit 0
    ;;
esac

MP3C_ME=bench-uploads
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
cd "$MP3C_ROOT"
bash "$MP3C_ROOT/scripts/deps.sh"
cargo build --release --bins -p auth -p gateway -p converter -p notification -p xtask
exec target/release/xtask concurrent-uploads "$@"
