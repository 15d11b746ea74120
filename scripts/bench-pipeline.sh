#!/usr/bin/env bash
# Pipeline figures of the release build: time from upload to the "ready" email for a 60-second
# video (median of N runs), and the gateway's peak resident memory (VmHWM of a fresh process)
# while it streams a ~500 MB upload into GridFS.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/bench-pipeline.sh [-h|--help] [--runs N] [--upload-mb M]
  Starts the four release binaries against isolated queues/databases on the local servers
  (scripts/deps.sh), measures, prints a table, and stops everything it started.
  --runs N        upload-to-email runs for the 60 s video (default 3; the median is reported)
  --upload-mb M   size of the large upload in MB (default 500)
USAGE
}

RUNS=3
UPLOAD_MB=500
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --runs) RUNS=$2; shift 2 ;;
    --upload-mb) UPLOAD_MB=$2; shift 2 ;;
    *) usage >&2; exit 2 ;;
  esac
done

MP3C_ME=bench-pipeline
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
cd "$MP3C_ROOT"
bash scripts/deps.sh >/dev/null
cargo build --release --bins --quiet

ID=bp$(date +%s)$$
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  mysql --protocol=tcp -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $ID; DROP USER IF EXISTS '$ID'@'%', '$ID'@'localhost';" 2>/dev/null || true
  python3 - "$ID" <<'PY' 2>/dev/null || true
import sys, pymongo
c = pymongo.MongoClient("mongodb://127.0.0.1:27017", serverSelectionTimeoutMS=3000)
for db in (f"videos_{sys.argv[1]}", f"mp3s_{sys.argv[1]}"):
    c.drop_database(db)
PY
  for q in video mp3; do
    for s in "" .retry .dead; do rabbitmqctl -q delete_queue "$q-$ID$s" >/dev/null 2>&1 || true; done
  done
  rm -rf -- "$WORK"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

mysql --protocol=tcp -h127.0.0.1 -uroot <<SQL
CREATE DATABASE $ID;
CREATE USER '$ID'@'%' IDENTIFIED BY 'pw-$ID';
CREATE USER '$ID'@'localhost' IDENTIFIED BY 'pw-$ID';
GRANT SELECT, INSERT, UPDATE ON $ID.* TO '$ID'@'%';
GRANT SELECT, INSERT, UPDATE ON $ID.* TO '$ID'@'localhost';
USE $ID;
$(sed -n '/^CREATE TABLE/,/;/p' init.sql)
SQL

AUTH_PORT=$(free_port) GW_PORT=$(free_port)
COMMON=(AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f" MONGODB_URI="${MONGODB_URI:-mongodb://127.0.0.1:27017}"
  VIDEO_QUEUE="video-$ID" MP3_QUEUE="mp3-$ID" MONGODB_VIDEOS_DB="videos_$ID" MONGODB_MP3S_DB="mp3s_$ID" RUST_LOG=warn)
AUTH_ENV=(MYSQL_HOST=127.0.0.1 MYSQL_USER="$ID" MYSQL_PASSWORD="pw-$ID" MYSQL_DB="$ID")
JWT=$(head -c 48 /dev/urandom | base64 -w0)

spawn() { # spawn NAME VAR=VALUE...: start target/release/NAME with exactly that environment
  local name=$1
  shift
  env -i PATH="$PATH" "$@" "target/release/$name" >>"$WORK/$name.log" 2>&1 &
  PIDS+=("$!")
  LAST_PID=$!
}
ready() { # ready URL
  local i
  for ((i = 0; i < 100; i++)); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  die "$1 not ready; logs in $WORK"
}

spawn auth "${COMMON[@]}" "${AUTH_ENV[@]}" JWT_SECRET="$JWT" PORT="$AUTH_PORT"
spawn gateway "${COMMON[@]}" AUTH_SVC_ADDRESS="127.0.0.1:$AUTH_PORT" PORT="$GW_PORT"
GW_PID=$LAST_PID
spawn converter "${COMMON[@]}" HEALTH_PORT="$(free_port)"
spawn notification "${COMMON[@]}" HEALTH_PORT="$(free_port)" SMTP_HOST=127.0.0.1 SMTP_PORT=1025 SMTP_TLS=none \
  SMTP_AUTH=false GMAIL_ADDRESS=bench@localhost
ready "http://127.0.0.1:$AUTH_PORT/readyz"
ready "http://127.0.0.1:$GW_PORT/readyz"

USER_EMAIL="bench-$ID@example.com"
env -i PATH="$PATH" "${AUTH_ENV[@]}" AUTH_USER_PASSWORD=Password123 target/release/auth user add "$USER_EMAIL" >/dev/null
TOKEN=$(curl -fs -X POST -u "$USER_EMAIL:Password123" "http://127.0.0.1:$GW_PORT/login")
mails() { curl -fs http://127.0.0.1:1080/email | python3 -c 'import json,sys; print(sum(1 for m in json.load(sys.stdin) if any(a["address"] == sys.argv[1] for a in m["to"])))' "$USER_EMAIL"; }

ffmpeg -nostdin -loglevel error -y -f lavfi -i "testsrc2=size=640x360:rate=25:duration=60" \
  -f lavfi -i "sine=frequency=440:duration=60" -c:v mpeg4 -b:v 1M -c:a aac -b:a 128k -shortest "$WORK/v60.mkv"

# --- upload to email, 60 s video ----------------------------------------------------------------
latencies=()
for ((r = 1; r <= RUNS; r++)); do
  before=$(mails)
  t0=$(now_ms)
  curl -fs -o /dev/null -X POST -F "file=@$WORK/v60.mkv" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$GW_PORT/upload"
  until (($(mails) > before)); do
    (($(now_ms) - t0 < 120000)) || die "no mail within 120 s; logs in $WORK"
    sleep 0.05
  done
  latencies+=("$(awk -v ms=$(($(now_ms) - t0)) 'BEGIN {printf "%.2f", ms / 1000}')")
done

# --- gateway memory, large upload ----------------------------------------------------------------
loops=$((UPLOAD_MB * 1000 * 1000 / $(stat -c %s "$WORK/v60.mkv")))
ffmpeg -nostdin -loglevel error -y -stream_loop "$loops" -i "$WORK/v60.mkv" -c copy "$WORK/big.mkv"
size=$(stat -c %s "$WORK/big.mkv")
# A fresh gateway, so its high-water mark is this upload's.
kill "$GW_PID"
wait "$GW_PID" 2>/dev/null || true
spawn gateway "${COMMON[@]}" AUTH_SVC_ADDRESS="127.0.0.1:$AUTH_PORT" PORT="$GW_PORT"
GW_PID=$LAST_PID
ready "http://127.0.0.1:$GW_PORT/readyz"
idle_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$GW_PID/status")
t0=$(now_ms)
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -F "file=@$WORK/big.mkv" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$GW_PORT/upload")
secs=$(awk -v ms=$(($(now_ms) - t0)) 'BEGIN {printf "%.2f", ms / 1000}')
[[ $code == 200 ]] || die "large upload answered $code; logs in $WORK"
peak_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$GW_PID/status")

printf '\n%-46s %s\n' "machine" "$(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB"
printf '%-46s %s s (runs: %s)\n' "upload -> email, 60 s video (median of $RUNS)" "$(median "${latencies[@]}")" "${latencies[*]}"
printf '%-46s %.1f MiB\n' "gateway idle RSS (fresh process)" "$(awk -v k="$idle_kib" 'BEGIN {print k / 1024}')"
printf '%-46s %.1f MiB\n' "gateway peak RSS, $((size / 1000000)) MB upload" "$(awk -v k="$peak_kib" 'BEGIN {print k / 1024}')"
printf '%-46s %s s, %.0f MB/s\n' "that upload took" "$secs" "$(awk -v b="$size" -v s="$secs" 'BEGIN {print b / s / 1e6}')"
