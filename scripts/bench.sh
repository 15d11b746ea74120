#!/usr/bin/env bash
# Performance benchmark of the four services against baselines measured in the same run on the
# same servers (docs/performance.md has the figures and how to read them). This script installs
# what the benchmark needs, builds it and runs it; the benchmark itself is Rust (crates/xtask,
# `xtask bench`): it generates its media, starts its own throwaway SecantusDB (unless
# BENCH_MONGODB_URI is set) and the release binaries, measures, prints the table, writes
# target/bench/results.json and removes everything it started or created.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/bench.sh [-h|--help] [--quick]
  Benchmark the services against same-run baselines and print a table of figure, value,
  baseline, ratio, target and PASS/FAIL with the machine's cores and memory.
  --quick   a smaller run (~2-3 min): 256 MiB instead of 1 GiB, 60 s video only, one
            throughput round, shorter wrk runs
  Env: BENCH_MONGODB_URI  use this MongoDB instead of starting a throwaway SecantusDB
       BENCH_REPS         repetitions per measurement (default 3; the median is reported)
       BENCH_KEEP=1       keep the work directory (media, logs) under /tmp afterwards
       BENCH_<SERVICE>_BIN  run another binary for a service (e.g. BENCH_GATEWAY_BIN=path, to
                          compare a patched build); BENCH_SERVICE_ENV="A=1 B=2" adds variables
                          to every service
       BENCH_PERF=1       also record perf profiles of the gateway and SecantusDB (hot section)
       BENCH_SECTIONS     comma-separated subset of footprint,upload,download,hot,conversion,
                          throughput (default: all), e.g. to profile one part
  Exit status: 0 when every figure passes, 3 when one misses its target, 2 on a usage error,
  1 when the run itself failed (its work directory with the logs is kept then).
  The table is also written to .dev/bench-{quick,full}.txt, the results to
  target/bench/results.json; `target/release/xtask render --write docs/performance.md` puts
  them into the document. All options: target/release/xtask bench --help
USAGE
}

mode=full
while (($#)); do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --quick) mode=quick ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
  shift
done

MP3C_ME=bench
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
cd "$MP3C_ROOT"
mp3c_dirs
if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then PATH=$HOME/.cargo/bin:$PATH; fi

# --- what the benchmark needs -------------------------------------------------------------------
bash scripts/deps.sh >"$MP3C_LOG_DIR/bench-deps.log" 2>&1 || {
  show_log_tail "$MP3C_LOG_DIR/bench-deps.log"
  die "scripts/deps.sh failed"
}
if ! command -v wrk >/dev/null; then
  log "installing wrk (apt-get)"
  sudo_=()
  if ((EUID != 0)) && command -v sudo >/dev/null; then sudo_=(sudo); fi
  { "${sudo_[@]}" apt-get install -y wrk || { "${sudo_[@]}" apt-get update && "${sudo_[@]}" apt-get install -y wrk; }; } \
    >"$MP3C_LOG_DIR/bench-apt.log" 2>&1 || die "could not install wrk; log: $MP3C_LOG_DIR/bench-apt.log"
fi
for tool in curl ffmpeg ffprobe python3; do command -v "$tool" >/dev/null || die "$tool is needed"; done
if [[ -z ${BENCH_MONGODB_URI:-} ]] && ! python3 -c 'import secantus' 2>/dev/null; then
  die "SecantusDB is not installed (scripts/deps.sh installs it when no mongod is present); or set BENCH_MONGODB_URI"
fi

log "building release binaries (cargo build --release --bins)"
cargo build --release --bins -p auth -p gateway -p converter -p notification -p xtask >"$MP3C_LOG_DIR/bench-build.log" 2>&1 || {
  show_log_tail "$MP3C_LOG_DIR/bench-build.log"
  die "cargo build failed; log: $MP3C_LOG_DIR/bench-build.log"
}
target_dir=${CARGO_TARGET_DIR:-$MP3C_ROOT/target}
exec "$target_dir/release/xtask" bench "$mode"
