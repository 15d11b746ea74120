#!/usr/bin/env bash
# Performance figures of the release build against baselines measured in the same run on the
# same servers (docs/performance.md has the figures and how to read them). This script installs
# what the benchmark needs and builds it; the measuring is Rust (crates/xtask): it generates its
# media, starts its own throwaway SecantusDB (unless BENCH_MONGODB_URI is set) and the release
# binaries, measures, prints the table, writes target/bench/*.json and removes what it started.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/bench.sh [-h|--help] [--quick | --instrumentation | --pipeline [ARGS] | --uploads [ARGS]]
  (none)      the benchmark (`xtask bench full`): a table of figure, value, baseline, ratio,
              target and PASS/FAIL with the machine's cores and memory (~9-11 min)
  --quick     a smaller run (~2-3 min): 256 MiB instead of 1 GiB, 60 s video only, one
              throughput round, shorter wrk runs
  --instrumentation
              the cost of the request metrics and trace context on the hot paths: auth and
              the gateway built a second time from the same sources with
              crates/xtask/uninstrumented.patch applied, both run side by side, and 3 s wrk runs
              alternating between them on each hot path (BENCH_ROUNDS pairs, default 20; ~7 min
              after the builds)
  --pipeline  upload-to-email time of a 60 s video and the gateway's peak memory on a large
              upload (`xtask pipeline`: --runs N, --upload-mb M; target/bench/pipeline.json)
  --uploads   the gateway's memory under many concurrent uploads (`xtask concurrent-uploads`:
              --count N, --seconds S, --timeout SECS; one JSON line)
  Env: BENCH_MONGODB_URI, BENCH_REPS, BENCH_KEEP=1, BENCH_<SERVICE>_BIN, BENCH_SERVICE_ENV,
  BENCH_PERF=1, BENCH_SECTIONS: see `target/release/xtask bench --help` for these and every option.
  Exit status of the benchmark: 0 when every figure passes, 3 when one misses its target, 2 on a
  usage error, 1 when the run itself failed (its work directory with the logs is kept then).
  The table is also written to .dev/bench-{quick,full}.txt, the results to
  target/bench/results.json; `target/release/xtask render --write docs/performance.md` puts
  them into the document.
USAGE
}

task=(bench full)
case ${1:-} in
  -h | --help) usage && exit 0 ;;
  --quick) (($# == 1)) || { usage >&2 && exit 2; } && task=(bench quick) ;;
  --instrumentation)
    (($# == 1)) || { usage >&2 && exit 2; }
    task=(bench quick --sections instrumentation --uninstrumented target/bench/uninstrumented
      --json target/bench/instrumentation.json --table .dev/bench-instrumentation.txt)
    ;;
  --pipeline) task=(pipeline "${@:2}") ;;
  --uploads) task=(concurrent-uploads "${@:2}") ;;
  "") ;;
  *) usage >&2 && exit 2 ;;
esac

MP3C_ME=bench
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
cd "$MP3C_ROOT" && mp3c_dirs && cargo_path
logged bench-deps bash scripts/deps.sh
if [[ ${task[0]} == bench ]]; then
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
fi
log "building release binaries (cargo build --release --bins)"
logged bench-build cargo build --release --bins -p auth -p gateway -p converter -p notification -p xtask
if [[ ${task[*]} == *--uninstrumented* ]]; then
  # The same sources as the build above (the working tree, committed or not), patched, built
  # in a target directory of their own so that neither build overwrites the other's binaries.
  log "building auth and gateway without request metrics and trace context (target/bench/uninstrumented)"
  src=target/bench/uninstrumented-src
  rm -rf "$src" && mkdir -p "$src" target/bench/uninstrumented
  tar --exclude=./target --exclude=./.dev --exclude=./.git -cf - . | tar -xf - -C "$src"
  git apply --directory="$src" crates/xtask/uninstrumented.patch || die "crates/xtask/uninstrumented.patch no longer applies"
  CARGO_TARGET_DIR=$PWD/target/bench/uninstrumented-target logged bench-build-uninstrumented \
    cargo build --release --bins -p auth -p gateway --manifest-path "$src/Cargo.toml"
  cp target/bench/uninstrumented-target/release/{auth,gateway} target/bench/uninstrumented/
fi
exec "${CARGO_TARGET_DIR:-target}/release/xtask" "${task[@]}"
