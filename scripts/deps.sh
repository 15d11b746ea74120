#!/usr/bin/env bash
# Make sure everything the services and their tests talk to is installed and answering:
#   ffmpeg + ffprobe       (apt)
#   prometheus + promtool  (apt: Debian's prometheus)
#   MariaDB  127.0.0.1:3306 and RabbitMQ 127.0.0.1:5672  (started if down)
#   MongoDB  127.0.0.1:27017: a real `mongod` if one is on PATH, else SecantusDB (PyPI), a
#            MongoDB-compatible server; or only checked when MONGODB_URI is set
#   maildev  SMTP 127.0.0.1:1025, web UI + REST API http://127.0.0.1:1080  (npm, into .dev/node)
# Idempotent and quick when all is up. What it starts is recorded in .dev/pids/ so that
# scripts/dev-down.sh stops exactly that; logs go to .dev/logs/. Exports nothing.
# Works run (`scripts/deps.sh`) or sourced (`source scripts/deps.sh`), from any directory.
# Env: MONGODB_URI (use that server instead of starting one), MP3C_DEV_DIR (state dir).
# shellcheck source-path=SCRIPTDIR

# The body runs in a subshell so that sourcing this file changes nothing in the caller's shell.
deps_main() (
  set -euo pipefail
  MP3C_ME=deps
  # shellcheck source=_lib.sh
  source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
  case ${1:-} in
    "") ;;
    -h | --help) sed -n '2,12s/^# \?//p' "${BASH_SOURCE[0]}" && exit 0 ;;
    *) echo "usage: scripts/deps.sh [-h|--help]" >&2 && exit 2 ;;
  esac

  local -r MAILDEV_VERSION=2.2.1        # 3.x moved the REST API from /email to /api/email
  local -r SECANTUSDB_VERSION=0.7.0b3
  local -r MONGO_PORT=27017 SMTP_PORT=1025 WEB_PORT=1080
  local -a summary=()

  mp3c_dirs
  local SUDO=""
  if ((EUID != 0)) && command -v sudo >/dev/null; then SUDO=sudo; fi

  # apt_install PKG...: install Debian packages, refreshing the package lists only when they
  # don't know the first package yet.
  apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    log "installing $* with apt-get (log: $MP3C_LOG_DIR/apt.log)"
    apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [0-9]' || logged apt $SUDO apt-get update
    logged apt $SUDO apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 "$@"
  }

  # --- ffmpeg / ffprobe ---------------------------------------------------------------------
  if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
    apt_install ffmpeg && hash -r
    command -v ffprobe >/dev/null || die "ffmpeg was installed but ffprobe is not on PATH"
  fi
  summary+=("ffmpeg      $(command -v ffmpeg), $(command -v ffprobe)")

  # --- Prometheus + promtool (the scrape test, the alert-rule checks, dev-up.sh --prometheus) ---
  if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    apt_install prometheus && hash -r
  fi
  # Where systemd runs, Debian's package also starts a Prometheus on :9090; nothing here uses
  # it: the tests and dev-up.sh --prometheus run their own, with their own configuration.
  summary+=("prometheus  $(command -v prometheus), $(command -v promtool)")

  # --- MariaDB ------------------------------------------------------------------------------
  mariadb_ping() { mysqladmin --protocol=tcp -h127.0.0.1 -P3306 --connect-timeout=2 ping >/dev/null 2>&1; }
  if mariadb_ping; then
    summary+=("mariadb     127.0.0.1:3306   up")
  else
    local mariadbd
    mariadbd=$(command -v mariadbd || command -v mysqld || true)
    [[ -x /usr/sbin/mariadbd ]] && mariadbd=/usr/sbin/mariadbd
    if [[ -z $mariadbd ]]; then
      apt_install mariadb-server mariadb-client
      mariadbd=/usr/sbin/mariadbd
    fi
    ! id mysql >/dev/null 2>&1 || $SUDO install -d -o mysql -g mysql /run/mysqld
    log "starting MariaDB ($mariadbd)"
    start_bg mariadb mariadbd "$mariadbd"
    wait_until "MariaDB on 127.0.0.1:3306" 60 "$MP3C_LOG_DIR/mariadb.log" mariadb mariadb_ping
    summary+=("mariadb     127.0.0.1:3306   started (pid $(pid_of mariadb))")
  fi

  # --- RabbitMQ -----------------------------------------------------------------------------
  if probe amqp 127.0.0.1 5672 2>/dev/null; then
    summary+=("rabbitmq    127.0.0.1:5672   up")
  else
    if ! command -v rabbitmq-server >/dev/null && [[ ! -x /usr/sbin/rabbitmq-server ]]; then
      apt_install rabbitmq-server
    fi
    local rlog=$MP3C_LOG_DIR/rabbitmq.log
    log "starting RabbitMQ (log: $rlog)"
    printf '\n===== %s starting: rabbitmq-server -detached\n' "$(date '+%F %T')" >>"$rlog"
    PATH=$PATH:/usr/sbin rabbitmq-server -detached </dev/null >>"$rlog" 2>&1 ||
      die "rabbitmq-server -detached failed; log: $rlog (and /var/log/rabbitmq/)"
    # -detached forks off the node; no pid to keep. dev-down stops it with rabbitmqctl.
    date '+%F %T' >"$MP3C_PID_DIR/rabbitmq.started"
    wait_until "RabbitMQ on 127.0.0.1:5672" 120 "$rlog" - probe amqp 127.0.0.1 5672
    rabbitmq-diagnostics -q ping >>"$rlog" 2>&1 || die "RabbitMQ answers AMQP but not rabbitmq-diagnostics ping; log: $rlog"
    summary+=("rabbitmq    127.0.0.1:5672   started")
  fi

  # --- MongoDB-compatible server ------------------------------------------------------------
  if [[ -n ${MONGODB_URI:-} ]]; then
    probe mongo-uri "$MONGODB_URI" ||
      die "MONGODB_URI is set but that server does not answer a ping (check the URI and the server)"
    summary+=("mongodb     \$MONGODB_URI     up (given; nothing started)")
  elif probe mongo 127.0.0.1 "$MONGO_PORT" 2>/dev/null; then
    local who="up"
    ! pid_of secantusd >/dev/null || who="up (SecantusDB, pid $(pid_of secantusd))"
    ! pid_of mongod >/dev/null || who="up (mongod, pid $(pid_of mongod))"
    summary+=("mongodb     127.0.0.1:$MONGO_PORT  $who")
  else
    tcp_open 127.0.0.1 "$MONGO_PORT" &&
      die "127.0.0.1:$MONGO_PORT is taken by something that does not answer as MongoDB"
    local name mlog
    if command -v mongod >/dev/null; then
      name=mongod
      mkdir -p "$MP3C_DEV_DIR/mongod-data"
      log "starting mongod"
      (cd "$MP3C_DEV_DIR" && start_bg mongod mongod mongod --dbpath "$MP3C_DEV_DIR/mongod-data" \
        --bind_ip 127.0.0.1 --port "$MONGO_PORT")
    else
      name=secantusd
      local py
      py=$(python3 -c 'import sys; print(sys.executable)') || die "python3 is needed for SecantusDB"
      if ! "$py" -c 'import secantus, pymongo' 2>/dev/null; then
        log "installing secantusdb==$SECANTUSDB_VERSION with pip (log: $MP3C_LOG_DIR/pip.log)"
        PIP_DISABLE_PIP_VERSION_CHECK=1 logged pip "$py" -m pip install --quiet --root-user-action=ignore \
          "secantusdb==$SECANTUSDB_VERSION"
      fi
      # Throwaway storage: SecantusDB keeps a copy of every GridFS chunk in its oplog, so each
      # start begins empty and the oplog keeps only a minute.
      rm -rf -- "$MP3C_DEV_DIR/secantus-data" && mkdir -p "$MP3C_DEV_DIR/secantus-data"
      log "starting SecantusDB (MongoDB-compatible) on 127.0.0.1:$MONGO_PORT"
      # Run from .dev/ so that no stray ./secantusd.toml is picked up.
      (cd "$MP3C_DEV_DIR" && start_bg secantusd secantus "$py" -m secantus \
        --host 127.0.0.1 --port "$MONGO_PORT" --storage-path "$MP3C_DEV_DIR/secantus-data" \
        --oplog-retention-seconds 60 --log-level WARNING)
    fi
    mlog=$MP3C_LOG_DIR/$name.log
    wait_until "$name on 127.0.0.1:$MONGO_PORT" 60 "$mlog" "$name" probe mongo 127.0.0.1 "$MONGO_PORT"
    summary+=("mongodb     127.0.0.1:$MONGO_PORT  started ($name, pid $(pid_of "$name"), log $mlog)")
  fi

  # --- maildev ------------------------------------------------------------------------------
  # Installed even when a maildev already answers: the fault tests start a second one.
  local maildev=$MP3C_DEV_DIR/node/node_modules/.bin/maildev
  if [[ ! -x $maildev ]]; then
    command -v npm >/dev/null || die "npm is needed to install maildev (apt-get install nodejs npm)"
    log "installing maildev@$MAILDEV_VERSION into $MP3C_DEV_DIR/node (log: $MP3C_LOG_DIR/npm.log)"
    mkdir -p "$MP3C_DEV_DIR/node"
    logged npm npm install --prefix "$MP3C_DEV_DIR/node" --no-audit --no-fund --loglevel=error "maildev@$MAILDEV_VERSION"
  fi
  maildev_up() { probe smtp 127.0.0.1 "$SMTP_PORT" && http_ok "http://127.0.0.1:$WEB_PORT/email"; }
  if maildev_up 2>/dev/null; then
    summary+=("maildev     smtp 127.0.0.1:$SMTP_PORT, http://127.0.0.1:$WEB_PORT  up")
  else
    local port
    for port in "$SMTP_PORT" "$WEB_PORT"; do
      tcp_open 127.0.0.1 "$port" &&
        die "127.0.0.1:$port is taken by something that is not maildev ($MAILDEV_VERSION, REST API at /email)"
    done
    log "starting maildev"
    (cd "$MP3C_DEV_DIR" && start_bg maildev maildev "$maildev" --smtp "$SMTP_PORT" --web "$WEB_PORT" \
      --ip 127.0.0.1 --web-ip 127.0.0.1)
    wait_until "maildev (smtp :$SMTP_PORT, web :$WEB_PORT)" 60 "$MP3C_LOG_DIR/maildev.log" maildev maildev_up
    summary+=("maildev     smtp 127.0.0.1:$SMTP_PORT, http://127.0.0.1:$WEB_PORT  started (pid $(pid_of maildev))")
  fi

  printf '[deps] %s\n' "${summary[@]}"
)
deps_main "$@"
