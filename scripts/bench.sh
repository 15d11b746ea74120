#!/usr/bin/env bash
# Performance benchmark of the four services against baselines measured in the same run on the
# same servers (see docs/performance.md for the figures and how to read them):
#   upload      POST /upload of a large file through the gateway vs. the same bytes streamed into
#               GridFS directly (common::gridfs::upload); gateway peak and idle RSS
#   download    GET /download of that file (an mp3 owned by the user) vs. a direct driver read;
#               gateway peak RSS; a Range request must get 206
#   conversion  converter time per job (publish of the video message -> mp3 message on the mp3
#               queue) vs. the bare ffmpeg command line on the same file; mp3 stream copy
#   throughput  20 videos queued at once: one converter vs. two competing converters
#   hot paths   wrk: auth POST /validate; the gateway's authenticated path (token checked by auth,
#               no database work); a whole small GET /download vs. the MongoDB floor of its queries
#   footprint   idle RSS of each service; start-up to ready
# It generates its own media, starts what it needs (scripts/deps.sh for MariaDB, RabbitMQ,
# ffmpeg; its own throwaway SecantusDB on a free port unless BENCH_MONGODB_URI is set; the
# release binaries) and removes everything it started or created on exit.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'EOF'
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
  The table is also written to .dev/bench-{quick,full}.txt.
EOF
}

QUICK=0
while (($#)); do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --quick) QUICK=1 ;;
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
if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then PATH=$HOME/.cargo/bin:$PATH; fi

# --- parameters -------------------------------------------------------------------------------
REPS=${BENCH_REPS:-3}
SECTIONS=",${BENCH_SECTIONS:-footprint,upload,download,hot,conversion,throughput},"
want() { [[ $SECTIONS == *",$1,"* ]]; }
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPS must be a positive number"
if ((QUICK)); then
  MODE=quick
  BIG_MIB=256
  CONV_SECONDS=(60)
  COPY_SECONDS=60
  TP_REPS=1
  TP_CONFIGS=(one two1)
  WRK_SECS=3
  IDLE_SETTLE=1
else
  MODE=full
  BIG_MIB=1024
  CONV_SECONDS=(60 600)
  COPY_SECONDS=600
  TP_REPS=$REPS
  TP_CONFIGS=(one two1 twoN)
  WRK_SECS=10
  IDLE_SETTLE=2
fi
TP_JOBS=20
WRK_CONNS=16
NPROC=$(nproc)
RUN=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
BIN=$MP3C_ROOT/target/release
AMQP=amqp://guest:guest@127.0.0.1:5672/%2f
EMAIL="bench-$RUN@example.com"
USER_PASSWORD="Bench-$RUN-pw"
JWT="bench-only-jwt-secret-$RUN-0123456789abcdefghijklmnop"
CLK_TCK=$(getconf CLK_TCK)

WORK=$(mktemp -d "/tmp/mp3c-bench-$RUN.XXXX")
LOGS=$WORK/logs
MEDIA=$WORK/media
mkdir -p "$LOGS" "$MEDIA"
ROWS=$WORK/rows.tsv
RAW=$WORK/raw.txt
: >"$ROWS"
: >"$RAW"

# --- clean-up ---------------------------------------------------------------------------------
PIDS=()     # every process this script started and still has to stop
MYSQL_DB="" # the MySQL database and user this run created
MONGO_PID=""
MONGO_URI=${BENCH_MONGODB_URI:-}
# $WORK/queues and $WORK/mongo-dbs list the queues (with their .retry/.dead) and the MongoDB
# databases this run used.

stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  set +e
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [[ -s $WORK/queues && -x $BIN/bench ]]; then
    "$BIN/bench" amqp-clean --amqp "$AMQP" --queues "$(sort -u "$WORK/queues" | paste -sd,)" ||
      log "could not delete the queues listed in $WORK/queues"
  fi
  if [[ -n $MYSQL_DB ]]; then
    mysql_root -e "DROP DATABASE IF EXISTS \`$MYSQL_DB\`; DROP USER IF EXISTS '$MYSQL_DB'@'%'; DROP USER IF EXISTS '$MYSQL_DB'@'localhost';" 2>/dev/null
  fi
  if [[ -n $MONGO_PID ]]; then
    stop_pid "$MONGO_PID"
  elif [[ -s $WORK/mongo-dbs && -n $MONGO_URI ]]; then
    "$BIN/bench" drop --uri "$MONGO_URI" --db "$(sort -u "$WORK/mongo-dbs" | paste -sd,)" ||
      log "could not drop the MongoDB databases listed in $WORK/mongo-dbs"
  fi
  rm -rf -- "$WORK/secantus-data" "$MEDIA"
  if [[ ${BENCH_KEEP:-0} == 1 || ($rc -ne 0 && $rc -ne 3) ]]; then
    log "work directory kept: $WORK (logs in $WORK/logs)"
  else
    rm -rf -- "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers ----------------------------------------------------------------------------------
mysql_root() { mysql --protocol=tcp -h127.0.0.1 -P3306 -uroot "$@"; }
now_ns() { date +%s%N; }
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
mib_of_kib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
calc() { awk "BEGIN {printf \"%.${2:-2}f\", $1}"; }
# holds EXPR: awk truth of a comparison, e.g. holds "0.93 >= 0.8"
holds() { awk "BEGIN {exit !($1)}"; }
FAILED=0
# row FIGURE VALUE BASELINE RATIO TARGET CONDITION: CONDITION (an awk comparison, or "" for a
# figure reported without a target) decides PASS/FAIL.
row() {
  local verdict="-"
  if [[ -n $6 ]]; then
    if holds "$6"; then verdict=PASS; else
      verdict=FAIL
      FAILED=1
    fi
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "${3:--}" "${4:--}" "${5:--}" "$verdict" >>"$ROWS"
  log "$(printf '%-46s %-22s %-18s %-8s %-14s %s' "$1" "$2" "$3" "$4" "$5" "$verdict")"
}
raw() { printf '%s\n' "$*" >>"$RAW"; }

# cpu_ticks PID: user+system time of PID and of its reaped children (ffmpeg), in clock ticks.
cpu_ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
# sys_ticks: "busy total" clock ticks of the whole machine.
sys_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }

# bin_of NAME: the binary of a service (BENCH_<NAME>_BIN overrides the release build)
bin_of() {
  local var="BENCH_${1^^}_BIN"
  printf '%s' "${!var:-$BIN/$1}"
}
# spawn NAME ENV...: start a release binary with exactly this environment; sets SPAWNED_PID
# and SPAWN_NS (the wall-clock time just before the spawn).
SPAWNED_PID=""
SPAWN_NS=0
spawn() {
  local name=$1
  shift
  SPAWN_NS=$(now_ns)
  # shellcheck disable=SC2086 # BENCH_SERVICE_ENV is a list of words on purpose
  env -i PATH="$PATH" HOME="$HOME" RUST_LOG=info "$@" ${BENCH_SERVICE_ENV:-} "$(bin_of "$name")" >>"$LOGS/$name.log" 2>&1 &
  SPAWNED_PID=$!
  PIDS+=("$SPAWNED_PID")
}
# wait_ready URL: ms from the last spawn to URL answering 200 (dies after 30 s).
wait_ready() {
  "$BIN/bench" wait-ready --url "$1" --since-ns "$SPAWN_NS" --timeout 30 ||
    die "$1 did not become ready; logs in $LOGS"
}
stop() {
  local pid=$1 keep=() p
  stop_pid "$pid"
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# ffmpeg_secs FILE copy|encode: seconds of the converter's exact ffmpeg command line
ffmpeg_secs() {
  local codec=(-c:a libmp3lame -q:a 4) t0
  [[ $2 == copy ]] && codec=(-c:a copy)
  t0=$(now_ns)
  ffmpeg -nostdin -hide_banner -loglevel error -y -i "$1" -map 0:a:0 -vn -sn -dn "${codec[@]}" -f mp3 "$WORK/bare.mp3"
  calc "($(now_ns) - $t0) / 1e9" 3
}
declare -A JOB_MEDIAN BARE_MEDIAN

# --- dependencies, tools, build ---------------------------------------------------------------
log "mode $MODE, $REPS repetitions, work directory $WORK"
mp3c_dirs
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
bash "$MP3C_ROOT/scripts/deps.sh" >"$LOGS/deps.log" 2>&1 || {
  show_log_tail "$LOGS/deps.log"
  die "scripts/deps.sh failed"
}
if ! command -v wrk >/dev/null; then
  log "installing wrk (apt-get)"
  SUDO=""
  if ((EUID != 0)) && command -v sudo >/dev/null; then SUDO=sudo; fi
  { $SUDO apt-get install -y wrk || { $SUDO apt-get update && $SUDO apt-get install -y wrk; }; } >"$LOGS/apt.log" 2>&1 ||
    die "could not install wrk; log: $LOGS/apt.log"
fi
for tool in mysql curl ffmpeg python3; do command -v "$tool" >/dev/null || die "$tool is needed"; done
log "building release binaries (cargo build --release --bins)"
cargo build --release --bins -p auth -p gateway -p converter -p notification -p bench >"$LOGS/build.log" 2>&1 || {
  show_log_tail "$LOGS/build.log"
  die "cargo build failed; log: $LOGS/build.log"
}

# --- MongoDB: a throwaway SecantusDB (or the given server) -------------------------------------
if [[ -z $MONGO_URI ]]; then
  py=$(python3 -c 'import sys; print(sys.executable)')
  "$py" -c 'import secantus' 2>/dev/null || die "SecantusDB is not installed (scripts/deps.sh installs it when no mongod is present); or set BENCH_MONGODB_URI"
  mport=$(free_port)
  mkdir -p "$WORK/secantus-data"
  # Short oplog retention: SecantusDB keeps a copy of every GridFS chunk written in its oplog.
  (cd "$WORK" && exec "$py" -m secantus --host 127.0.0.1 --port "$mport" --storage-path "$WORK/secantus-data" \
    --oplog-retention-seconds 30 --log-level WARNING >"$LOGS/secantusd.log" 2>&1) &
  MONGO_PID=$!
  MONGO_URI="mongodb://127.0.0.1:$mport"
  wait_until "SecantusDB on 127.0.0.1:$mport" 60 "$LOGS/secantusd.log" - probe mongo 127.0.0.1 "$mport"
  MONGO_DESC="SecantusDB $("$py" -c 'import importlib.metadata as m; print(m.version("secantusdb"))' 2>/dev/null || echo '?') (Python), throwaway, 127.0.0.1:$mport"
else
  probe mongo-uri "$MONGO_URI" || die "BENCH_MONGODB_URI does not answer a ping"
  MONGO_DESC="given by BENCH_MONGODB_URI"
fi
# Names are recorded in files: these run inside $(...), where a variable would not survive.
mdb() { # mdb NAME: a MongoDB database name of this run
  printf 'b%s_%s\n' "$RUN" "$1" >>"$WORK/mongo-dbs"
  printf 'b%s_%s' "$RUN" "$1"
}
queue() { # queue NAME: a queue name of this run
  printf 'bench-%s-%s\n' "$RUN" "$1" >>"$WORK/queues"
  printf 'bench-%s-%s' "$RUN" "$1"
}

# --- MySQL: a private auth database and user ----------------------------------------------------
MYSQL_DB="bench_$RUN"
MYSQL_PW="pw-$RUN"
mysql_root -e "CREATE DATABASE \`$MYSQL_DB\`;
  CREATE USER '$MYSQL_DB'@'%' IDENTIFIED BY '$MYSQL_PW'; CREATE USER '$MYSQL_DB'@'localhost' IDENTIFIED BY '$MYSQL_PW';
  GRANT SELECT, INSERT, UPDATE ON \`$MYSQL_DB\`.* TO '$MYSQL_DB'@'%';
  GRANT SELECT, INSERT, UPDATE ON \`$MYSQL_DB\`.* TO '$MYSQL_DB'@'localhost';" ||
  die "cannot create the MySQL database as root over TCP"
# The user table exactly as init.sql defines it.
awk '/^CREATE TABLE/ {on = 1} on {print} on && /;/ {exit}' init.sql | mysql_root "$MYSQL_DB" ||
  die "cannot create the user table"
MYSQL_ENV=(MYSQL_HOST=127.0.0.1 MYSQL_PORT=3306 "MYSQL_USER=$MYSQL_DB" "MYSQL_PASSWORD=$MYSQL_PW" "MYSQL_DB=$MYSQL_DB")

# --- media --------------------------------------------------------------------------------------
ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }
log "generating media in $MEDIA"
# A 60 s 640x360 25 fps MPEG-4 video with a stereo 44.1 kHz AAC track (tones plus noise, so the
# encoder has real work), and the same with an MP3 track (the stream-copy case).
ff -f lavfi -i "testsrc2=size=640x360:rate=25:duration=60" \
  -f lavfi -i "aevalsrc=sin(440*2*PI*t)+0.2*random(0)|sin(660*2*PI*t)+0.2*random(1):s=44100:d=60" \
  -c:v mpeg4 -b:v 1M -c:a aac -b:a 128k -shortest "$MEDIA/video-60.mkv"
ff -i "$MEDIA/video-60.mkv" -map 0 -c:v copy -c:a libmp3lame -b:a 192k "$MEDIA/mp3audio-60.mkv"
# Longer versions are the 60 s ones looped (stream copy: seconds to make).
for s in "${CONV_SECONDS[@]}" "$COPY_SECONDS"; do
  if ((s != 60)); then
    [[ -e $MEDIA/video-$s.mkv ]] || ff -stream_loop $((s / 60 - 1)) -i "$MEDIA/video-60.mkv" -c copy "$MEDIA/video-$s.mkv"
    [[ -e $MEDIA/mp3audio-$s.mkv ]] || ff -stream_loop $((s / 60 - 1)) -i "$MEDIA/mp3audio-60.mkv" -c copy "$MEDIA/mp3audio-$s.mkv"
  fi
done
# The big upload: the 60 s video looped up to the size (real, already-compressed media).
ff -stream_loop -1 -i "$MEDIA/video-60.mkv" -c copy -fs $((BIG_MIB * 1024 * 1024)) "$MEDIA/big.mkv"
BIG=$MEDIA/big.mkv
BIG_BYTES=$(stat -c %s "$BIG")
BIG_LABEL="$(calc "$BIG_BYTES / 1048576" 0) MiB"
# A small mp3 for the request-rate test (1 s, ~20 KB: one GridFS chunk).
ff -f lavfi -i "sine=frequency=440:duration=1" -c:a libmp3lame -q:a 4 "$MEDIA/small.mp3"
raw "media: big $BIG_BYTES bytes; video-60 $(stat -c %s "$MEDIA/video-60.mkv") bytes; small.mp3 $(stat -c %s "$MEDIA/small.mp3") bytes"

# --- service environments ----------------------------------------------------------------------
AUTH_PORT=$(free_port)
AUTH_ENV=("${MYSQL_ENV[@]}" "PORT=$AUTH_PORT" "JWT_SECRET=$JWT")
# gateway_env PORT VIDEOS_DB MP3S_DB VIDEO_QUEUE
gateway_env() {
  GW_ENV=("PORT=$1" "AUTH_SVC_ADDRESS=127.0.0.1:$AUTH_PORT" "MONGODB_URI=$MONGO_URI" "AMQP_URL=$AMQP"
    "MONGODB_VIDEOS_DB=$2" "MONGODB_MP3S_DB=$3" "VIDEO_QUEUE=$4")
}
# converter_env HEALTH_PORT VIDEOS_DB MP3S_DB VIDEO_QUEUE MP3_QUEUE [CONCURRENCY]
converter_env() {
  CV_ENV=("HEALTH_PORT=$1" "MONGODB_URI=$MONGO_URI" "AMQP_URL=$AMQP" "MONGODB_VIDEOS_DB=$2"
    "MONGODB_MP3S_DB=$3" "VIDEO_QUEUE=$4" "MP3_QUEUE=$5" "TMPDIR=$WORK")
  if [[ -n ${6:-} ]]; then CV_ENV+=("CONVERTER_CONCURRENCY=$6"); fi
}
# start_gateway VIDEOS_DB MP3S_DB VIDEO_QUEUE: a fresh gateway, ready; sets GW_PID, GW_URL, GW_READY_MS
start_gateway() {
  local port
  port=$(free_port)
  gateway_env "$port" "$@"
  spawn gateway "${GW_ENV[@]}"
  GW_PID=$SPAWNED_PID
  GW_URL="http://127.0.0.1:$port"
  wait_ready "$GW_URL/readyz" >/dev/null
}

# --- idle footprint and start-up ---------------------------------------------------------------
log "== idle footprint and start-up to ready"
AUTH_URL="http://127.0.0.1:$AUTH_PORT"
FOOT_VQ=$(queue foot-video)
FOOT_MQ=$(queue foot-mp3)
FOOT_VDB=$(mdb foot_videos)
FOOT_MDB=$(mdb foot_mp3s)
for svc in auth gateway converter notification; do
  want footprint || break
  readies=()
  rsss=()
  for ((r = 0; r < REPS; r++)); do
    case $svc in
      auth)
        spawn auth "${AUTH_ENV[@]}"
        url="$AUTH_URL/readyz"
        ;;
      gateway)
        port=$(free_port)
        gateway_env "$port" "$FOOT_VDB" "$FOOT_MDB" "$FOOT_VQ"
        spawn gateway "${GW_ENV[@]}"
        url="http://127.0.0.1:$port/readyz"
        ;;
      converter)
        port=$(free_port)
        converter_env "$port" "$FOOT_VDB" "$FOOT_MDB" "$FOOT_VQ" "$FOOT_MQ"
        spawn converter "${CV_ENV[@]}"
        url="http://127.0.0.1:$port/readyz"
        ;;
      notification)
        port=$(free_port)
        spawn notification "HEALTH_PORT=$port" "MONGODB_URI=$MONGO_URI" "AMQP_URL=$AMQP" "MONGODB_MP3S_DB=$FOOT_MDB" \
          "MP3_QUEUE=$FOOT_MQ" SMTP_HOST=127.0.0.1 SMTP_PORT=1025 SMTP_TLS=none SMTP_AUTH=false GMAIL_ADDRESS=bench@localhost
        url="http://127.0.0.1:$port/readyz"
        ;;
    esac
    pid=$SPAWNED_PID
    readies+=("$(wait_ready "$url")")
    # Idle: ready, after its start-up work settled and one readiness probe per second.
    for ((i = 0; i < IDLE_SETTLE; i++)); do sleep 1; curl -fsS -o /dev/null "$url" || true; done
    rsss+=("$(kib "$pid" VmRSS)")
    stop "$pid"
  done
  raw "startup $svc ms: ${readies[*]}; idle VmRSS kB: ${rsss[*]}"
  ready_ms=$(median "${readies[@]}")
  rss_mib=$(mib_of_kib "$(median "${rsss[@]}")")
  row "$svc: idle RSS" "$rss_mib MiB" "" "" "< 30 MiB" "$rss_mib < 30"
  row "$svc: start-up to ready" "$(calc "$ready_ms" 0) ms" "" "" "< 1000 ms" "$ready_ms < 1000"
done

# --- setup: auth (kept up), a user and its token, the files to download -------------------------
spawn auth "${AUTH_ENV[@]}"
AUTH_PID=$SPAWNED_PID
wait_ready "$AUTH_URL/readyz" >/dev/null
# A user and a token (login through a gateway, as a client does).
env -i PATH="$PATH" "${MYSQL_ENV[@]}" AUTH_USER_PASSWORD="$USER_PASSWORD" "$BIN/auth" user add "$EMAIL" >>"$LOGS/auth-user.log" 2>&1 ||
  die "auth user add failed; log: $LOGS/auth-user.log"
start_gateway "$FOOT_VDB" "$FOOT_MDB" "$FOOT_VQ"
TOKEN=$(curl -fsS -X POST -u "$EMAIL:$USER_PASSWORD" "$GW_URL/login") || die "login through the gateway failed"
stop "$GW_PID"

DL_DB=$(mdb dl_mp3s)
if want download; then
  BIG_FID=$("$BIN/bench" put --uri "$MONGO_URI" --db "$DL_DB" --file "$BIG" --username "$EMAIL") || die "storing the big file failed"
fi
SMALL_FID=$("$BIN/bench" put --uri "$MONGO_URI" --db "$DL_DB" --file "$MEDIA/small.mp3" --username "$EMAIL") || die "storing small.mp3 failed"

# --- upload ------------------------------------------------------------------------------------
want upload && log "== upload: $BIG_LABEL through POST /upload vs. straight into GridFS"
UP_VQ=$(queue upload-video)
up_gw=() up_base=() up_hwm=() up_idle=() up_ratio=()
for ((r = 0; r < REPS; r++)); do
  want upload || break
  # A fresh gateway per repetition (VmHWM counts from process start); the order of gateway and
  # baseline alternates so that a slow phase of the server does not always hit the same side.
  gdb=$(mdb "up_gw$r")
  start_gateway "$gdb" "$(mdb up_mp3s)" "$UP_VQ"
  sleep 1
  up_idle+=("$(kib "$GW_PID" VmRSS)")
  for side in $( ((r % 2)) && echo "gateway baseline" || echo "baseline gateway"); do
    if [[ $side == baseline ]]; then
      db=$(mdb "up_base$r")
      out=$("$BIN/bench" upload --uri "$MONGO_URI" --db "$db" --file "$BIG") || die "baseline upload failed"
      read -r secs bytes <<<"$out"
      ((bytes == BIG_BYTES)) || die "baseline stored $bytes bytes, expected $BIG_BYTES"
      up_base+=("$(calc "$bytes / 1048576 / $secs" 1)")
      "$BIN/bench" drop --uri "$MONGO_URI" --db "$db"
    else
      out=$(curl -sS -o "$WORK/upload.out" -w '%{http_code} %{time_total} %{size_upload}' -H 'Expect:' \
        -H "Authorization: Bearer $TOKEN" -F "file=@$BIG;type=video/x-matroska" "$GW_URL/upload")
      read -r code secs sent <<<"$out"
      [[ $code == 200 ]] || die "upload answered $code: $(head -c 300 "$WORK/upload.out")"
      up_hwm+=("$(kib "$GW_PID" VmHWM)")
      up_gw+=("$(calc "$BIG_BYTES / 1048576 / $secs" 1)")
      stop "$GW_PID"
      "$BIN/bench" drop --uri "$MONGO_URI" --db "$gdb"
    fi
    sleep 1
  done
  up_ratio+=("$(calc "${up_gw[-1]} / ${up_base[-1]}" 3)")
  raw "upload rep $r: gateway ${up_gw[-1]} MiB/s (multipart body $sent bytes), baseline ${up_base[-1]} MiB/s, ratio ${up_ratio[-1]}, VmHWM ${up_hwm[-1]} kB"
done
if want upload; then
  gw=$(median "${up_gw[@]}")
  base=$(median "${up_base[@]}")
  ratio=$(calc "$(median "${up_ratio[@]}")")
  row "upload $BIG_LABEL: gateway throughput" "$gw MiB/s" "$base MiB/s" "$ratio" ">= 0.80x" "$ratio >= 0.8"
  hwm=$(mib_of_kib "$(median "${up_hwm[@]}")")
  row "upload: gateway peak RSS (VmHWM)" "$hwm MiB" "" "" "< 64 MiB" "$hwm < 64"
  row "upload: gateway idle RSS before it" "$(mib_of_kib "$(median "${up_idle[@]}")") MiB" "" "" "" ""
fi

# --- download ----------------------------------------------------------------------------------
want download && log "== download: $BIG_LABEL through GET /download vs. a direct driver read"
dl_gw=() dl_base=() dl_range=() dl_hwm=() dl_ratio=()
for ((r = 0; r < REPS; r++)); do
  want download || break
  out=$("$BIN/bench" download --uri "$MONGO_URI" --db "$DL_DB" --id "$BIG_FID" --mode driver) || die "baseline download failed"
  read -r secs bytes <<<"$out"
  ((bytes == BIG_BYTES)) || die "baseline read $bytes bytes, expected $BIG_BYTES"
  dl_base+=("$(calc "$bytes / 1048576 / $secs" 1)")
  out=$("$BIN/bench" download --uri "$MONGO_URI" --db "$DL_DB" --id "$BIG_FID" --mode range) || die "read_range download failed"
  read -r secs bytes <<<"$out"
  dl_range+=("$(calc "$bytes / 1048576 / $secs" 1)")

  start_gateway "$(mdb dl_videos)" "$DL_DB" "$(queue dl-video)"
  sleep 1
  out=$(curl -sS -o /dev/null -w '%{http_code} %{time_total} %{size_download}' \
    -H "Authorization: Bearer $TOKEN" "$GW_URL/download?fid=$BIG_FID")
  read -r code secs bytes <<<"$out"
  [[ $code == 200 && $bytes == "$BIG_BYTES" ]] || die "download answered $code with $bytes bytes"
  dl_hwm+=("$(kib "$GW_PID" VmHWM)")
  dl_gw+=("$(calc "$BIG_BYTES / 1048576 / $secs" 1)")
  dl_ratio+=("$(calc "${dl_gw[-1]} / ${dl_base[-1]}" 3)")
  raw "download rep $r: ratio ${dl_ratio[-1]}, gateway ${dl_gw[-1]} MiB/s, driver ${dl_base[-1]} MiB/s, read_range ${dl_range[-1]} MiB/s, VmHWM ${dl_hwm[-1]} kB"
  if ((r == 0)); then
    range=$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' -r 1000-2023 \
      -H "Authorization: Bearer $TOKEN" "$GW_URL/download?fid=$BIG_FID")
    raw "download Range 1000-2023: $range"
  fi
  stop "$GW_PID"
done
if want download; then
  gw=$(median "${dl_gw[@]}")
  base=$(median "${dl_base[@]}")
  ratio=$(calc "$(median "${dl_ratio[@]}")")
  row "download $BIG_LABEL: gateway throughput" "$gw MiB/s" "$base MiB/s" "$ratio" ">= 0.80x" "$ratio >= 0.8"
  row "download: read_range (gateway's reader), direct" "$(median "${dl_range[@]}") MiB/s" "$base MiB/s" "$(calc "$(median "${dl_range[@]}") / $base")" "" ""
  hwm=$(mib_of_kib "$(median "${dl_hwm[@]}")")
  row "download: gateway peak RSS (VmHWM)" "$hwm MiB" "" "" "< 64 MiB" "$hwm < 64"
  code=${range%% *}
  row "download: Range bytes=1000-2023" "$code, ${range##* } bytes" "" "" "206, 1024 bytes" "$code == 206 && ${range##* } == 1024"
fi

# --- hot paths (wrk) ---------------------------------------------------------------------------
if want hot; then
  log "== request rates: $WRK_CONNS connections, ${WRK_SECS}s x $REPS"
  cat >"$WORK/bearer.lua" <<EOF
wrk.headers["Authorization"] = "Bearer $TOKEN"
EOF
  cat >"$WORK/validate.lua" <<EOF
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $TOKEN"
EOF
  # wrk_run URL [SCRIPT]: "<req/s> <p99 ms> <non-2xx count>" of one run
  wrk_run() {
    local out
    out=$(wrk -t2 -c"$WRK_CONNS" -d"${WRK_SECS}s" --latency ${2:+-s "$2"} "$1") || die "wrk failed on $1"
    printf '%s\n' "$out" >>"$LOGS/wrk.log"
    awk '
      /Requests\/sec:/ {rps = $2}
      /Non-2xx or 3xx responses:/ {bad = $NF}
      $1 == "99%" {v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
                   p99 = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : (u == "m") ? v * 60000 : v}
      END {printf "%s %.2f %d\n", rps, p99, bad}' <<<"$out"
  }
  # cpu_split: "name=ticks ..." of the processes a request goes through
  cpu_split() {
    local n
    for n in mongo gateway auth; do
      case $n in
        mongo) [[ -n $MONGO_PID ]] && printf 'secantusd=%s ' "$(cpu_ticks "$MONGO_PID")" ;;
        gateway) [[ -n ${GW_PID:-} ]] && kill -0 "$GW_PID" 2>/dev/null && printf 'gateway=%s ' "$(cpu_ticks "$GW_PID")" ;;
        auth) printf 'auth=%s ' "$(cpu_ticks "$AUTH_PID")" ;;
      esac
    done
    printf '\n'
  }
  # cpu_per_request BEFORE AFTER REQUESTS: CPU ms per request of each process
  cpu_per_request() {
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$CLK_TCK" 'BEGIN {
      split(a, x, " "); split(b, y, " ")
      for (i in y) {split(x[i], p, "="); split(y[i], q, "="); printf "%s %.3f ms, ", q[1], 1000 * (q[2] - p[2]) / hz / n}
    }' | sed 's/, $//'
  }
  # rate_of LABEL URL SCRIPT: medians over REPS runs -> RATE P99 BAD
  rate_of() {
    local rates=() p99s=() bad=0 r rps p99 b out c0 c1 n=0
    c0=$(cpu_split)
    for ((r = 0; r < REPS; r++)); do
      out=$(wrk_run "$2" "$3")
      read -r rps p99 b <<<"$out"
      rates+=("$rps")
      p99s+=("$p99")
      bad=$((bad + b))
      n=$(calc "$n + $rps * $WRK_SECS" 0)
    done
    c1=$(cpu_split)
    raw "wrk $1: req/s ${rates[*]}; p99 ms ${p99s[*]}; non-2xx $bad; CPU per request: $(cpu_per_request "$c0" "$c1" "$n")"
    RATE=$(calc "$(median "${rates[@]}")" 0)
    P99=$(median "${p99s[@]}")
    BAD=$bad
  }
  start_gateway "$(mdb hot_videos)" "$DL_DB" "$(queue hot-video)"
  curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" "$GW_URL/download?fid=$SMALL_FID" || die "small download failed"

  rate_of "auth GET /healthz" "$AUTH_URL/healthz" ""
  floor=$RATE
  rate_of "auth POST /validate" "$AUTH_URL/validate" "$WORK/validate.lua"
  row "auth POST /validate" "$RATE req/s (p99 $P99 ms)" "$floor req/s /healthz" "$(calc "$RATE / $floor")" ">= 15000 req/s" "$RATE >= 15000 && $BAD == 0"

  # The authenticated request path: the token validated through auth over kept-alive
  # connections, then the handler (no fid: 400, so no database work).
  rate_of "gateway GET /download (no fid: auth hop only, 400)" "$GW_URL/download" "$WORK/bearer.lua"
  row "gateway authenticated path (auth hop, 400)" "$RATE req/s (p99 $P99 ms)" "" "" ">= 5000 req/s" "$RATE >= 5000"

  c0=$(cpu_split)
  out=$("$BIN/bench" find-rate --uri "$MONGO_URI" --db "$DL_DB" --id "$SMALL_FID" --username "$EMAIL" \
    --concurrency "$WRK_CONNS" --secs "$WRK_SECS") || die "find-rate failed"
  c1=$(cpu_split)
  read -r frate fp50 fp99 <<<"$out"
  raw "find-rate (MongoDB floor of a small download): $frate req/s, p50 $fp50 ms, p99 $fp99 ms; CPU per request: $(cpu_per_request "$c0" "$c1" "$(calc "$frate * $WRK_SECS" 0)")"
  rate_of "gateway GET /download small mp3" "$GW_URL/download?fid=$SMALL_FID" "$WORK/bearer.lua"
  if [[ ${BENCH_PERF:-0} == 1 ]] && command -v perf >/dev/null; then
    # A flat CPU profile of the gateway and of SecantusDB during one more run.
    perf record -F 499 -p "$GW_PID" -o "$WORK/perf-gateway.data" -- sleep "$WRK_SECS" >/dev/null 2>&1 &
    perf_pid=$!
    if [[ -n $MONGO_PID ]]; then
      perf record -F 499 -p "$MONGO_PID" -o "$WORK/perf-mongo.data" -- sleep "$WRK_SECS" >/dev/null 2>&1 &
    fi
    wrk_run "$GW_URL/download?fid=$SMALL_FID" "$WORK/bearer.lua" >/dev/null
    wait "$perf_pid" || true
    sleep 1
    for f in gateway mongo; do
      if [[ -e $WORK/perf-$f.data ]]; then
        perf report -i "$WORK/perf-$f.data" --stdio --no-children --sort dso,symbol 2>/dev/null |
          grep -v -e '^#' -e '^$' | head -40 >"$LOGS/perf-$f.txt" || true
      fi
    done
    log "perf profiles: $LOGS/perf-gateway.txt $LOGS/perf-mongo.txt"
  fi
  # A whole small download adds two MongoDB queries per request: its rate is the database's,
  # so the target is on the gateway's share (the database floor measured alongside).
  row "gateway GET /download (small owned mp3)" "$RATE req/s (p99 $P99 ms)" "$(calc "$frate" 0) req/s MongoDB" "$(calc "$RATE / $frate")" ">= 0.80x" "$RATE >= 0.8 * $frate && $BAD == 0"
  stop "$GW_PID"
fi

# --- conversion --------------------------------------------------------------------------------
if want conversion; then
  log "== conversion: converter per job vs. bare ffmpeg"
  CONV_VQ=$(queue conv-video)
  CONV_MQ=$(queue conv-mp3)
  CONV_VDB=$(mdb conv_videos)
  port=$(free_port)
  converter_env "$port" "$CONV_VDB" "$(mdb conv_mp3s)" "$CONV_VQ" "$CONV_MQ"
  spawn converter "${CV_ENV[@]}"
  CV_PID=$SPAWNED_PID
  wait_ready "http://127.0.0.1:$port/readyz" >/dev/null
  # job_secs FILE: sets JOBS to the converter's seconds per job, one per repetition (REPS fresh
  # copies of FILE, converted one after the other)
  job_secs() {
    local ids out
    ids=$("$BIN/bench" put --uri "$MONGO_URI" --db "$CONV_VDB" --file "$1" --count "$REPS") || die "storing $1 failed"
    out=$("$BIN/bench" jobs --amqp "$AMQP" --video-queue "$CONV_VQ" --mp3-queue "$CONV_MQ" --username "$EMAIL" \
      --ids "$(paste -sd, <<<"$ids")") || die "conversion jobs failed; logs in $LOGS"
    mapfile -t JOBS < <(awk '$1 != "total" {printf "%.3f\n", $1}' <<<"$out")
    JOB_IDS=$(paste -sd, <<<"$ids")
  }
  for s in "${CONV_SECONDS[@]}"; do
    bare=()
    for ((r = 0; r < REPS; r++)); do bare+=("$(ffmpeg_secs "$MEDIA/video-$s.mkv" encode)"); done
    job_secs "$MEDIA/video-$s.mkv"
    raw "conversion ${s}s: ffmpeg ${bare[*]} s; converter jobs ${JOBS[*]} s"
    b=$(median "${bare[@]}")
    j=$(median "${JOBS[@]}")
    JOB_MEDIAN[$s]=$j
    BARE_MEDIAN[$s]=$b
    ratio=$(calc "$j / $b")
    row "convert ${s} s video: converter per job" "$j s" "$b s ffmpeg" "$ratio" "<= 1.10x" "$ratio <= 1.10"
    # Where a job's time goes: its steps one by one, outside the converter (one run each).
    vid=${JOB_IDS%%,*}
    out=$("$BIN/bench" download --uri "$MONGO_URI" --db "$CONV_VDB" --id "$vid" --mode range) || die "read failed"
    t_read=${out%% *}
    t0=$(now_ns)
    ffprobe -v error -print_format json -show_streams -show_format -- "$MEDIA/video-$s.mkv" >/dev/null
    t_probe=$(calc "($(now_ns) - $t0) / 1e9" 3)
    out=$("$BIN/bench" upload --uri "$MONGO_URI" --db "$(mdb conv_scratch)" --file "$WORK/bare.mp3") || die "store failed"
    t_store=${out%% *}
    raw "conversion ${s}s steps: read video from GridFS $(calc "$t_read" 3) s, ffprobe $t_probe s, ffmpeg $b s, store mp3 $(calc "$t_store" 3) s; sum $(calc "$t_read + $t_probe + $b + $t_store" 3) s vs job $j s"
    row "  steps: read+probe+ffmpeg+store" "$(calc "$t_read + $t_probe + $b + $t_store") s" "" "" "" ""
  done
  if [[ -z ${JOB_MEDIAN[$COPY_SECONDS]:-} ]]; then
    job_secs "$MEDIA/video-$COPY_SECONDS.mkv"
    JOB_MEDIAN[$COPY_SECONDS]=$(median "${JOBS[@]}")
  fi
  bare=()
  for ((r = 0; r < REPS; r++)); do bare+=("$(ffmpeg_secs "$MEDIA/mp3audio-$COPY_SECONDS.mkv" copy)"); done
  job_secs "$MEDIA/mp3audio-$COPY_SECONDS.mkv"
  raw "stream copy ${COPY_SECONDS}s: ffmpeg -c:a copy ${bare[*]} s; converter jobs ${JOBS[*]} s"
  j=$(median "${JOBS[@]}")
  ratio=$(calc "$j / ${JOB_MEDIAN[$COPY_SECONDS]}")
  row "mp3-audio ${COPY_SECONDS} s video: job (stream copy)" "$j s" "${JOB_MEDIAN[$COPY_SECONDS]} s re-encode" "$ratio" "<= 0.50x" "$ratio <= 0.5"
  row "mp3-audio: bare ffmpeg -c:a copy" "$(median "${bare[@]}") s" "" "" "" ""
  stop "$CV_PID"
fi

# --- throughput --------------------------------------------------------------------------------
if want throughput; then
  log "== throughput: $TP_JOBS videos queued at once"
  TP_VDB=$(mdb tp_videos)
  TP_IDS=$("$BIN/bench" put --uri "$MONGO_URI" --db "$TP_VDB" --file "$MEDIA/video-60.mkv" --count "$TP_JOBS") || die "storing videos failed"
  TP_IDS=$(paste -sd, <<<"$TP_IDS")
  declare -A TP_TIME TP_CPU TP_SYS
  tp_round() { # tp_round CONFIG REP -> TP_SECS, TP_UTIL (converters incl. ffmpeg), TP_SYSUTIL
    local cfg=$1 rep=$2 vq mq mdb_ n conc i pids=() ports=() c0=0 c1=0 s0 s1 out secs split
    vq=$(queue "tp-$cfg-$rep-video")
    mq=$(queue "tp-$cfg-$rep-mp3")
    mdb_=$(mdb "tp_${cfg}_${rep}_mp3s") # a fresh mp3 database: the same videos convert again
    case $cfg in
      one) n=1 conc="" ;;
      two1) n=2 conc=$((NPROC / 2 > 0 ? NPROC / 2 : 1)) ;;
      twoN) n=2 conc="" ;;
    esac
    for ((i = 0; i < n; i++)); do
      ports+=("$(free_port)")
      converter_env "${ports[-1]}" "$TP_VDB" "$mdb_" "$vq" "$mq" "$conc"
      : >"$LOGS/converter-tp-$i.log"
      SPAWN_NS=$(now_ns)
      # shellcheck disable=SC2086 # BENCH_SERVICE_ENV is a list of words on purpose
    env -i PATH="$PATH" HOME="$HOME" RUST_LOG=info "${CV_ENV[@]}" ${BENCH_SERVICE_ENV:-} "$(bin_of converter)" >"$LOGS/converter-tp-$i.log" 2>&1 &
      pids+=("$!")
      PIDS+=("$!")
    done
    for i in "${!pids[@]}"; do wait_ready "http://127.0.0.1:${ports[$i]}/readyz" >/dev/null; done
    for i in "${pids[@]}"; do c0=$((c0 + $(cpu_ticks "$i"))); done
    s0=$(sys_ticks)
    out=$("$BIN/bench" jobs --burst --amqp "$AMQP" --video-queue "$vq" --mp3-queue "$mq" --username "$EMAIL" --ids "$TP_IDS") ||
      die "throughput jobs failed; logs in $LOGS"
    secs=$(awk '$1 == "total" {print $2}' <<<"$out")
    for i in "${pids[@]}"; do c1=$((c1 + $(cpu_ticks "$i"))); done
    s1=$(sys_ticks)
    split=""
    for i in "${!pids[@]}"; do split+="$(grep -c 'mp3 stored' "$LOGS/converter-tp-$i.log") "; done
    for i in "${pids[@]}"; do stop "$i"; done
    TP_SECS=$secs
    TP_UTIL=$(calc "100 * ($c1 - $c0) / $CLK_TCK / ($secs * $NPROC)" 0)
    TP_SYSUTIL=$(awk -v a="$s0" -v b="$s1" 'BEGIN {split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2])}')
    raw "throughput $cfg rep $rep: ${secs}s, converters' CPU ${TP_UTIL}% of $NPROC cores, machine busy ${TP_SYSUTIL}%, jobs per process: $split"
  }
  for cfg in "${TP_CONFIGS[@]}"; do
    times=() utils=() sysutils=()
    for ((r = 0; r < TP_REPS; r++)); do
      tp_round "$cfg" "$r"
      times+=("$TP_SECS")
      utils+=("$TP_UTIL")
      sysutils+=("$TP_SYSUTIL")
    done
    TP_TIME[$cfg]=$(calc "$(median "${times[@]}")" 1)
    TP_CPU[$cfg]=$(median "${utils[@]}")
    TP_SYS[$cfg]=$(median "${sysutils[@]}")
  done
  if [[ -z ${BARE_MEDIAN[60]:-} ]]; then
    bare=()
    for ((r = 0; r < REPS; r++)); do bare+=("$(ffmpeg_secs "$MEDIA/video-60.mkv" encode)"); done
    BARE_MEDIAN[60]=$(median "${bare[@]}")
  fi
  ideal=$(calc "$TP_JOBS * ${BARE_MEDIAN[60]} / $NPROC" 1)
  row "$TP_JOBS x 60 s: 1 converter (concurrency $NPROC)" "${TP_TIME[one]} s, CPU ${TP_CPU[one]}%" "$ideal s ffmpeg/cores" "$(calc "${TP_TIME[one]} / $ideal")" "" ""
  row "  machine busy during it (all processes)" "${TP_SYS[one]}%" "" "" "" ""
  c=$((NPROC / 2 > 0 ? NPROC / 2 : 1))
  row "$TP_JOBS x 60 s: 2 converters x concurrency $c" "${TP_TIME[two1]} s, CPU ${TP_CPU[two1]}%" "${TP_TIME[one]} s 1 conv." "$(calc "${TP_TIME[two1]} / ${TP_TIME[one]}")" "<= 1.05x" "${TP_TIME[two1]} <= 1.05 * ${TP_TIME[one]}"
  if [[ -n ${TP_TIME[twoN]:-} ]]; then
    row "$TP_JOBS x 60 s: 2 converters x concurrency $NPROC" "${TP_TIME[twoN]} s, CPU ${TP_CPU[twoN]}%" "${TP_TIME[one]} s 1 conv." "$(calc "${TP_TIME[twoN]} / ${TP_TIME[one]}")" "<= 1.05x" "${TP_TIME[twoN]} <= 1.05 * ${TP_TIME[one]}"
  fi
fi

# --- report ------------------------------------------------------------------------------------
stop "$AUTH_PID"
{
  printf 'mp3converter benchmark (%s), %s\n' "$MODE" "$(date '+%F %T')"
  printf 'machine: %s cores (%s), %s MiB memory; load average at start %s, at end %s\n' \
    "$NPROC" "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" "$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)" \
    "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf 'MongoDB: %s; RabbitMQ and MariaDB local; medians of %s runs\n\n' "$MONGO_DESC" "$REPS"
  printf '%-48s %-30s %-24s %-7s %-16s %s\n' figure value baseline ratio target result
  printf '%s\n' "$(printf '%.0s-' {1..136})"
  while IFS=$'\t' read -r f v b ra ta re; do
    printf '%-48s %-30s %-24s %-7s %-16s %s\n' "$f" "$v" "$b" "$ra" "$ta" "$re"
  done <"$ROWS"
  printf '\nraw measurements:\n'
  sed 's/^/  /' "$RAW"
} | tee "$MP3C_DEV_DIR/bench-$MODE.txt"
exit $((FAILED ? 3 : 0))
