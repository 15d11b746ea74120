#!/usr/bin/env bash
# Pipeline figures of the release build: time from upload to the "ready" email for a 60-second
# video (median of N runs), and the gateway's peak resident memory (VmHWM of a fresh process)
# while it streams a ~500 MB upload into GridFS. Measured by crates/xtask (`xtask pipeline`);
# this script starts the dependencies and builds it.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/bench-pipeline.sh [-h|--help] [--runs N] [--upload-mb M]
  Starts the four release binaries against isolated queues/databases on the local servers
  (scripts/deps.sh), measures, prints a table, and stops everything it started.
  --runs N        upload-to-email runs for the 60 s video (default 3; the median is reported)
  --upload-mb M   size of the large upload in MB (default 500)
  The figures are also written to target/bench/pipeline.json.
USAGE
}

case ${1:-} in
  -h | --help)
    usage
    exit 0
    ;;
esac

MP3C_ME=bench-pipeline
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
cd "$MP3C_ROOT"
if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then PATH=$HOME/.cargo/bin:$PATH; fi
bash scripts/deps.sh >/dev/null
cargo build --release --bins --quiet
exec "${CARGO_TARGET_DIR:-$MP3C_ROOT/target}/release/xtask" pipeline "$@"
