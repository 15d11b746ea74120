#!/usr/bin/env bash
# One command from a fresh machine to the whole suite running locally:
# dependencies (scripts/deps.sh), the auth schema (init.sql) and the development accounts
# (dev-seed.sql: auth_user/Auth123 and the demo user), a JWT secret kept in
# .dev/jwt_secret, a release build, and the four services in the background (logs in
# .dev/logs/<service>.log, pids in .dev/pids/). Services already running are restarted, so a
# re-run after a rebuild picks up the new binaries. Stop everything with scripts/dev-down.sh.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/dev-up.sh [--no-build] [--debug] [--prometheus] [-h|--help]
  Start mp3converter locally: deps, init.sql, build (release), auth :5000, gateway :8080,
  converter (health :8081), notification (health :8082), mail UI at http://127.0.0.1:1080.
  --no-build  use the binaries already built      --debug  use the debug profile
  --prometheus  also start a Prometheus on 127.0.0.1:9090 (env PROMETHEUS_PORT) scraping the
                four services' /metrics every 5 s, with the suite's alert rules
  Env: MONGODB_URI (use that server), RUST_LOG (default info), MP3C_DEV_DIR (default <repo>/.dev)
EOF
}

build=1
profile=release
with_prometheus=0
while (($#)); do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --no-build) build=0 ;;
    --debug) profile=debug ;;
    --prometheus) with_prometheus=1 ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
  shift
done

MP3C_ME=dev-up
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
cd "$MP3C_ROOT"
mp3c_dirs

bash "$MP3C_ROOT/scripts/deps.sh"

# --- schema and demo user ---------------------------------------------------------------------
# root over TCP when allowed, else through the socket (unix_socket auth as the OS root).
if mysql --protocol=tcp -h127.0.0.1 -P3306 -uroot -e 'SELECT 1' >/dev/null 2>&1; then
  cat "$MP3C_ROOT/init.sql" "$MP3C_ROOT/dev-seed.sql" | mysql --protocol=tcp -h127.0.0.1 -P3306 -uroot ||
    die "applying init.sql and dev-seed.sql as root over TCP failed"
elif ((EUID == 0)); then
  cat "$MP3C_ROOT/init.sql" "$MP3C_ROOT/dev-seed.sql" | mysql -uroot || die "applying init.sql and dev-seed.sql as root through the socket failed"
else
  cat "$MP3C_ROOT/init.sql" "$MP3C_ROOT/dev-seed.sql" | sudo mysql -uroot || die "applying init.sql and dev-seed.sql (sudo mysql) failed"
fi
log "applied init.sql and dev-seed.sql (database auth, user auth_user, demo user georgio@email.com)"

# --- secrets made once, kept across runs: auth's JWT secret, and the download-link key that the
# gateway and the notifier share ----------------------------------------------------------------
# make_secret FILE WHAT: 48 random bytes (base64) into FILE, readable by its owner only, unless
# FILE already holds one.
make_secret() {
  local file=$1 what=$2
  [[ -s $file ]] && return 0
  (
    umask 077
    head -c 48 /dev/urandom | base64 -w0 >"$file.tmp"
    mv -f -- "$file.tmp" "$file"
  )
  log "generated $what in $file"
}
jwt_file=$MP3C_DEV_DIR/jwt_secret
make_secret "$jwt_file" "a JWT secret"
link_file=$MP3C_DEV_DIR/download_link_secret
make_secret "$link_file" "a download-link key"
link_secret=$(<"$link_file")
# Signed links in mails and job JSON point at the local gateway, so they work from this machine.
public_url=http://127.0.0.1:8080

# --- build --------------------------------------------------------------------------------------
if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then PATH=$HOME/.cargo/bin:$PATH; fi
if ((build)); then
  log "cargo build --$profile --bins (waits if another build holds the lock)"
  if [[ $profile == release ]]; then cargo build --release --bins; else cargo build --bins; fi
fi
target_dir=${CARGO_TARGET_DIR:-$MP3C_ROOT/target}
[[ $target_dir == /* ]] || target_dir=$MP3C_ROOT/$target_dir
bin_dir=$target_dir/$profile
for bin in "${MP3C_SERVICES[@]}" xtask; do
  [[ -x $bin_dir/$bin ]] || die "binary $bin_dir/$bin not found (build it, or drop --no-build)"
done

# --- (re)start the services -----------------------------------------------------------------
# Stop every old instance first, so that ports are free and nothing talks to an old binary.
for svc in prometheus gateway converter notification auth; do
  stop_recorded "$svc" 30
done
for svc in "${MP3C_SERVICES[@]}"; do
  port=${MP3C_SERVICE_PORT[$svc]}
  if tcp_open 127.0.0.1 "$port"; then
    die "port $port (for $svc) is in use by a process dev-up did not start; find it with: ss -ltnp 'sport = :$port'"
  fi
done

# start_service NAME: start NAME's binary on its port with the environment `xtask service-env`
# prints for it (testkit::ServiceEnv, the one definition the tests and the benchmark use too:
# local servers, default queue and database names, init.sql's auth user, MONGODB_URI when set),
# exported in a subshell: secrets never appear on a command line.
start_service() {
  local svc=$1 env_lines vars=()
  env_lines=$("$bin_dir/xtask" service-env "$svc" --port "${MP3C_SERVICE_PORT[$svc]}" \
    --auth-port "${MP3C_SERVICE_PORT[auth]}" --public-url "$public_url" --jwt-secret-file "$jwt_file") ||
    die "xtask service-env $svc failed"
  mapfile -t vars <<<"$env_lines"
  (
    # shellcheck disable=SC2163 # "${vars[@]}" holds NAME=VALUE words, exported as such
    export RUST_LOG="${RUST_LOG:-info}" NO_COLOR="${NO_COLOR:-1}" "${vars[@]}"
    # The link key signs (gateway) and is put in mails (notification); the others never see it.
    case $svc in gateway | notification) export DOWNLOAD_LINK_SECRET="$link_secret" ;; esac
    start_bg "$svc" "$bin_dir/$svc" "$bin_dir/$svc"
  )
}

for svc in "${MP3C_SERVICES[@]}"; do
  start_service "$svc"
done

for svc in "${MP3C_SERVICES[@]}"; do
  port=${MP3C_SERVICE_PORT[$svc]}
  wait_until "$svc (http://127.0.0.1:$port/readyz)" 60 "$MP3C_LOG_DIR/$svc.log" "$svc" \
    http_ok "http://127.0.0.1:$port/readyz"
  log "$svc is ready (pid $(pid_of "$svc"), log $MP3C_LOG_DIR/$svc.log)"
done

# --- Prometheus beside the suite (optional) -------------------------------------------------
prometheus_note=""
if ((with_prometheus)); then
  prom_port=${PROMETHEUS_PORT:-9090}
  prom_dir=$MP3C_DEV_DIR/prometheus
  mkdir -p "$prom_dir/data"
  if tcp_open 127.0.0.1 "$prom_port"; then
    die "port $prom_port (for prometheus) is in use; set PROMETHEUS_PORT to another one"
  fi
  # The alert rules are the PrometheusRule's groups (scripts/check_alerts.py needs python3-yaml).
  rule_files=""
  if python3 "$MP3C_ROOT/scripts/check_alerts.py" "$prom_dir/rules" >/dev/null 2>&1; then
    rule_files="rule_files: [\"$prom_dir/rules/alerts.rules.yaml\"]"
  else
    log "alert rules not loaded (scripts/check_alerts.py needs python3-yaml)"
  fi
  # The labels the alerts and the dashboard group by, as the Prometheus Operator sets them.
  cat >"$prom_dir/prometheus.yml" <<YAML
global:
  scrape_interval: 5s
  evaluation_interval: 5s
$rule_files
scrape_configs:
  - job_name: mp3converter
    static_configs:
      - targets: ["127.0.0.1:5000"]
        labels: { namespace: mp3converter, container: auth }
      - targets: ["127.0.0.1:8080"]
        labels: { namespace: mp3converter, container: gateway }
      - targets: ["127.0.0.1:8081"]
        labels: { namespace: mp3converter, container: converter }
      - targets: ["127.0.0.1:8082"]
        labels: { namespace: mp3converter, container: notification }
YAML
  start_bg prometheus "$prom_dir/prometheus.yml" prometheus --config.file="$prom_dir/prometheus.yml" \
    --storage.tsdb.path="$prom_dir/data" --web.listen-address="127.0.0.1:$prom_port"
  wait_until "prometheus (http://127.0.0.1:$prom_port/-/ready)" 60 "$MP3C_LOG_DIR/prometheus.log" prometheus \
    http_ok "http://127.0.0.1:$prom_port/-/ready"
  prometheus_note="  prometheus    http://127.0.0.1:$prom_port   (targets: /targets, alerts: /alerts; try rate(http_requests_total[1m]))
"
fi

# --- a small test video -------------------------------------------------------------------
video=$MP3C_DEV_DIR/test.mkv
if [[ ! -s $video ]] && command -v ffmpeg >/dev/null; then
  if ffmpeg -hide_banner -loglevel error -y -nostdin \
    -f lavfi -i testsrc=duration=5:size=320x240:rate=25 \
    -f lavfi -i sine=frequency=440:duration=5 -shortest \
    -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac "$video.tmp.mkv"; then
    mv -f -- "$video.tmp.mkv" "$video"
  else
    log "could not make $video (ffmpeg failed); use any video with an audio track"
  fi
fi

cat <<EOF

mp3converter is up:
  auth          http://127.0.0.1:5000   log $MP3C_LOG_DIR/auth.log
  gateway       http://127.0.0.1:8080   log $MP3C_LOG_DIR/gateway.log
  converter     http://127.0.0.1:8081/readyz   log $MP3C_LOG_DIR/converter.log
  notification  http://127.0.0.1:8082/readyz   log $MP3C_LOG_DIR/notification.log
  mail          http://127.0.0.1:1080   (maildev: every mail the notification service sends)
  web page      $public_url/   (log in as georgio@email.com, password Admin123)
  metrics       http://127.0.0.1:5000/metrics  :8080/metrics  :8081/metrics  :8082/metrics
${prometheus_note}

Try the tutorial's flow:
  TOKEN=\$(curl -s -X POST http://127.0.0.1:8080/login -u georgio@email.com:Admin123)
  curl -X POST -F 'file=@$video' -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:8080/upload
  # a mail "mp3 file_id: <fid> is now ready!" arrives at http://127.0.0.1:1080
  curl --output out.mp3 -X GET -H "Authorization: Bearer \$TOKEN" "http://127.0.0.1:8080/download?fid=<fid>"

Follow a job (the same upload asking for JSON answers 202 with the job and its Location):
  JOB=\$(curl -s -X POST -H 'Accept: application/json' -F 'file=@$video' -F bitrate=192k \\
    -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:8080/upload | sed -n 's/.*"id":"\\([0-9a-f]*\\)".*/\\1/p')
  curl -N -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:8080/jobs/\$JOB/events   # live: queued, converting + progress, done
  curl -s -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:8080/jobs/\$JOB          # download_url: a signed link, no token needed
  curl -s -H "Authorization: Bearer \$TOKEN" "http://127.0.0.1:8080/jobs?limit=5"        # your jobs, newest first
  curl -X DELETE -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:8080/jobs/\$JOB    # removes the job, its video and mp3

Stop with scripts/dev-down.sh (--purge also deletes $MP3C_DEV_DIR).
EOF
