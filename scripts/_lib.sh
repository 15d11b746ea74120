# shellcheck shell=bash
# Helpers shared by scripts/deps.sh, dev-up.sh, dev-down.sh and test.sh. Sourced, never run.
#
# State lives in one repo-relative directory (gitignored): $MP3C_DEV_DIR, default <repo>/.dev
#   pids/<name>.pid    pid of a process one of our scripts started (and only those)
#   pids/<name>.match  a string its /proc/<pid>/cmdline must contain, so that a recycled pid is
#                      never mistaken for ours
#   logs/<name>.log    its stdout and stderr
# Setting no shell options here: the sourcing script decides (they all use `set -euo pipefail`).

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  echo "usage: source scripts/_lib.sh   (helpers for the other scripts; not a command)" >&2
  exit 2
fi

MP3C_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
MP3C_DEV_DIR=${MP3C_DEV_DIR:-$MP3C_ROOT/.dev}
MP3C_PID_DIR=$MP3C_DEV_DIR/pids
MP3C_LOG_DIR=$MP3C_DEV_DIR/logs

# Prefix of every message: the name of the script that is running.
MP3C_ME=${MP3C_ME:-$(basename -- "$0" .sh)}

log() { printf '[%s] %s\n' "$MP3C_ME" "$*" >&2; }
die() {
  printf '[%s] error: %s\n' "$MP3C_ME" "$*" >&2
  exit 1
}

mp3c_dirs() { mkdir -p -- "$MP3C_PID_DIR" "$MP3C_LOG_DIR"; }

# pid_of NAME: print the recorded pid of NAME if that process is alive and still ours.
pid_of() {
  local name=$1 pidfile=$MP3C_PID_DIR/$1.pid pid match cmdline
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  # A zombie (exited, not yet reaped) is not running.
  [[ $(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null) != Z ]] || return 1
  if [[ -s $MP3C_PID_DIR/$name.match ]]; then
    match=$(<"$MP3C_PID_DIR/$name.match")
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$match"* ]] || return 1
  fi
  printf '%s\n' "$pid"
}

# start_bg NAME MATCH CMD [ARGS...]: run CMD detached (own session, stdin /dev/null, output
# appended to logs/NAME.log) and record its pid. The wrapper execs CMD, so the recorded pid is
# CMD's own.
start_bg() {
  local name=$1 match=$2 logfile pidfile i
  shift 2
  mp3c_dirs
  logfile=$MP3C_LOG_DIR/$name.log
  pidfile=$MP3C_PID_DIR/$name.pid
  rm -f -- "$pidfile"
  printf '%s\n' "$match" >"$MP3C_PID_DIR/$name.match"
  printf '\n===== %s starting: %s\n' "$(date '+%F %T')" "$*" >>"$logfile"
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
  setsid bash -c 'printf "%s\n" "$$" >"$0.tmp" && mv -f "$0.tmp" "$0" && exec "$@"' \
    "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
  for ((i = 0; i < 100; i++)); do
    [[ -s $pidfile ]] && return 0
    sleep 0.05
  done
  die "could not start $name (no pid recorded); see $logfile"
}

# stop_recorded NAME [TIMEOUT_SECONDS]: SIGTERM the recorded process, SIGKILL it after the
# timeout, forget it. Returns 0 when nothing of ours is left running.
stop_recorded() {
  local name=$1 timeout=${2:-20} pid i
  if pid=$(pid_of "$name"); then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
      pid_of "$name" >/dev/null || break
      sleep 0.1
    done
    if pid_of "$name" >/dev/null; then
      log "$name did not stop within ${timeout}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f -- "$MP3C_PID_DIR/$name.pid" "$MP3C_PID_DIR/$name.match"
}

# tcp_open HOST PORT: does something accept connections there (1 s limit)?
tcp_open() {
  # shellcheck disable=SC2016 # $0 and $1 belong to the inner shell
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# probe KIND ARGS...: protocol-level checks, answered by a tiny Python client (no mongo shell,
# no driver needed). Exit 0 when the server answers as it should.
#   probe mongo HOST PORT     OP_MSG {ping: 1} -> ok: 1
#   probe mongo-uri URI       same through pymongo when installed (auth, TLS, SRV), else the
#                             raw ping on the URI's first host
#   probe amqp HOST PORT      AMQP 0-9-1 protocol header -> connection.start frame
#   probe smtp HOST PORT      a "220" greeting
probe() {
  python3 - "$@" <<'PY'
import socket, struct, sys
from urllib.parse import urlsplit

def conn(host, port):
    s = socket.create_connection((host, int(port)), timeout=2)
    s.settimeout(2)
    return s

def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf

def mongo_ping(host, port):
    def cstr(v):
        return v.encode() + b"\0"
    body = (b"\x10" + cstr("ping") + struct.pack("<i", 1)
            + b"\x02" + cstr("$db") + struct.pack("<i", len("admin") + 1) + cstr("admin"))
    doc = struct.pack("<i", len(body) + 5) + body + b"\0"
    payload = struct.pack("<I", 0) + b"\0" + doc           # flagBits, section kind 0, document
    msg = struct.pack("<iiii", 16 + len(payload), 1, 0, 2013) + payload   # OP_MSG
    with conn(host, port) as s:
        s.sendall(msg)
        length, = struct.unpack("<i", recv_exact(s, 4))
        reply = recv_exact(s, length - 4)
    # The reply document holds `ok` as a double (or int32) equal to 1.
    return (b"\x01ok\0" + struct.pack("<d", 1.0) in reply
            or b"\x10ok\0" + struct.pack("<i", 1) in reply)

def mongo_uri(uri):
    try:
        import pymongo
    except ImportError:
        hosts = urlsplit(uri).netloc.rsplit("@", 1)[-1]
        first = urlsplit("//" + hosts.split(",")[0])
        return mongo_ping(first.hostname or "127.0.0.1", first.port or 27017)
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000, connectTimeoutMS=2000)
    try:
        return client.admin.command("ping").get("ok") == 1
    finally:
        client.close()

def amqp(host, port):
    with conn(host, port) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        head = recv_exact(s, 7)
    return head[0] == 1 and head[1:3] == b"\0\0"            # method frame on channel 0

def smtp(host, port):
    with conn(host, port) as s:
        return s.recv(512).startswith(b"220")

kind, args = sys.argv[1], sys.argv[2:]
checks = {"mongo": mongo_ping, "mongo-uri": mongo_uri, "amqp": amqp, "smtp": smtp}
try:
    ok = checks[kind](*args)
except Exception as e:  # any failure means "not answering"
    print(f"{kind} {' '.join(args)}: {e}", file=sys.stderr)
    ok = False
sys.exit(0 if ok else 1)
PY
}

# http_ok URL: does URL answer 2xx within 2 s?
http_ok() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

# wait_until DESCRIPTION TIMEOUT_SECONDS LOGFILE PIDNAME CMD [ARGS...]: poll CMD every 0.25 s
# until it succeeds. Fails (exit 1) after the timeout, or at once if the process recorded as
# PIDNAME (may be "-") has died, printing the end of LOGFILE.
wait_until() {
  local what=$1 timeout=$2 logfile=$3 pidname=$4 deadline
  shift 4
  deadline=$((SECONDS + timeout))
  while ! "$@" 2>/dev/null; do
    if [[ $pidname != - ]] && ! pid_of "$pidname" >/dev/null; then
      show_log_tail "$logfile"
      die "$what: the process exited before it answered; log: $logfile"
    fi
    if ((SECONDS >= deadline)); then
      show_log_tail "$logfile"
      die "$what did not answer within ${timeout}s; log: $logfile"
    fi
    sleep 0.25
  done
}

show_log_tail() {
  local logfile=$1
  if [[ -s $logfile ]]; then
    printf '%s\n' "----- last 30 lines of $logfile -----" >&2
    tail -n 30 -- "$logfile" >&2
    printf '%s\n' "-----" >&2
  fi
}

# Names of the dependencies scripts/deps.sh may start, in the order dev-down stops them.
MP3C_DEPS=(maildev secantusd mongod rabbitmq mariadb)
# The services dev-up starts, with their health ports (HTTP port for auth and gateway).
# shellcheck disable=SC2034 # used by the scripts that source this file
MP3C_SERVICES=(auth gateway converter notification)
# shellcheck disable=SC2034
declare -A MP3C_SERVICE_PORT=([auth]=5000 [gateway]=8080 [converter]=8081 [notification]=8082)

# stop_dep NAME: stop a dependency if deps.sh started it (RabbitMQ has no pid of ours: it was
# started with -detached, so it is stopped with rabbitmqctl).
stop_dep() {
  local name=$1
  if [[ $name == rabbitmq ]]; then
    if [[ -e $MP3C_PID_DIR/rabbitmq.started ]]; then
      log "stopping rabbitmq (started by deps.sh)"
      PATH=$PATH:/usr/sbin rabbitmqctl shutdown >/dev/null 2>&1 ||
        log "rabbitmqctl shutdown failed (already stopped?)"
      rm -f -- "$MP3C_PID_DIR/rabbitmq.started"
    fi
    return 0
  fi
  # MariaDB and mongod may take a while to flush and stop cleanly.
  stop_recorded "$name" 60
}

# recorded_deps: the dependencies deps.sh started and still has on record, one per line.
recorded_deps() {
  local name
  for name in "${MP3C_DEPS[@]}"; do
    if [[ -e $MP3C_PID_DIR/$name.pid || -e $MP3C_PID_DIR/$name.started ]]; then
      printf '%s\n' "$name"
    fi
  done
}
