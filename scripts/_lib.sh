# shellcheck shell=bash
# Helpers for scripts/deps.sh (starting daemons) and the other scripts (log, die). Sourced.
# State lives in $MP3C_DEV_DIR (default <repo>/.dev, gitignored), shared with crates/xtask
# (src/procs.rs), which stops what is recorded here:
#   pids/<name>.pid    pid of a process we started (and only those)
#   pids/<name>.match  a string its /proc/<pid>/cmdline must contain (a recycled pid is not ours)
#   logs/<name>.log    its stdout and stderr
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  echo "usage: source scripts/_lib.sh   (helpers for the other scripts; not a command)" >&2
  exit 2
fi

MP3C_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
MP3C_DEV_DIR=${MP3C_DEV_DIR:-$MP3C_ROOT/.dev}
MP3C_PID_DIR=$MP3C_DEV_DIR/pids
MP3C_LOG_DIR=$MP3C_DEV_DIR/logs
MP3C_ME=${MP3C_ME:-$(basename -- "$0" .sh)} # the prefix of every message

log() { printf '[%s] %s\n' "$MP3C_ME" "$*" >&2; }
die() {
  printf '[%s] error: %s\n' "$MP3C_ME" "$*" >&2
  exit 1
}
mp3c_dirs() { mkdir -p -- "$MP3C_PID_DIR" "$MP3C_LOG_DIR"; }
cargo_path() { command -v cargo >/dev/null || [[ ! -x $HOME/.cargo/bin/cargo ]] || PATH=$HOME/.cargo/bin:$PATH; }

# logged NAME CMD [ARGS...]: run CMD with its output appended to logs/NAME.log; when it fails,
# show the end of that log and die.
logged() {
  local logfile=$MP3C_LOG_DIR/$1.log
  shift
  "$@" >>"$logfile" 2>&1 </dev/null || { show_log_tail "$logfile" && die "$* failed; log: $logfile"; }
}

# pid_of NAME: print the recorded pid of NAME if that process is alive (not a zombie) and ours.
pid_of() {
  local pidfile=$MP3C_PID_DIR/$1.pid pid match
  [[ -s $pidfile ]] && pid=$(<"$pidfile") && [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  [[ $(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null) != Z ]] || return 1
  if [[ -s $MP3C_PID_DIR/$1.match ]]; then
    match=$(<"$MP3C_PID_DIR/$1.match")
    [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == *"$match"* ]] || return 1
  fi
  printf '%s\n' "$pid"
}

# start_bg NAME MATCH CMD [ARGS...]: run CMD detached (own session, stdin /dev/null, output
# appended to logs/NAME.log) and record its pid (the wrapper execs CMD: the pid is CMD's own).
start_bg() {
  local name=$1 match=$2 pidfile=$MP3C_PID_DIR/$1.pid i
  shift 2
  mp3c_dirs
  rm -f -- "$pidfile"
  printf '%s\n' "$match" >"$MP3C_PID_DIR/$name.match"
  printf '\n===== %s starting: %s\n' "$(date '+%F %T')" "$*" >>"$MP3C_LOG_DIR/$name.log"
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
  setsid bash -c 'printf "%s\n" "$$" >"$0.tmp" && mv -f "$0.tmp" "$0" && exec "$@"' \
    "$pidfile" "$@" </dev/null >>"$MP3C_LOG_DIR/$name.log" 2>&1 &
  for ((i = 0; i < 100; i++)); do
    [[ -s $pidfile ]] && return 0
    sleep 0.05
  done
  die "could not start $name (no pid recorded); see $MP3C_LOG_DIR/$name.log"
}

# tcp_open HOST PORT: does something accept connections there (1 s limit)?
tcp_open() {
  # shellcheck disable=SC2016 # $0 and $1 belong to the inner shell
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# answer HOST PORT SEND N: send SEND (printf %b escapes) and print the first N bytes of the
# answer in hex (N = len: a 4-byte little-endian length, then the rest of that message).
answer() {
  # shellcheck disable=SC2016 # $0.. belong to the inner shell
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "%b" "$2" >&3 || exit 1
    n=$3; [[ $n != len ]] || n=$(($(head -c 4 <&3 | od -An -tu4) - 4))
    head -c "$n" <&3 | od -An -v -tx1 | tr -d " \n"' "$@" 2>/dev/null
}
# probe KIND ARGS...: does the server answer as it should (its protocol, not only TCP)?
#   probe mongo HOST PORT    OP_MSG {ping: 1, $db: "admin"} -> ok: 1 (a double or an int32)
#   probe mongo-uri URI      the same through pymongo when installed (auth, TLS, SRV), else the
#                            raw ping on the URI's first host
#   probe amqp HOST PORT     the AMQP 0-9-1 protocol header -> a method frame on channel 0
#   probe smtp HOST PORT     a "220" greeting
probe() {
  local ping='\x33\0\0\0\x01\0\0\0\0\0\0\0\xdd\x07\0\0\0\0\0\0\0\x1e\0\0\0\x10ping\0\x01\0\0\0\x02\x24db\0\x06\0\0\0admin\0\0'
  local host
  case $1 in
    mongo) answer "$2" "$3" "$ping" len | grep -Eq '016f6b00000000000000f03f|106f6b0001000000' ;;
    amqp) [[ $(answer "$2" "$3" 'AMQP\0\0\x09\x01' 7) == 010000* ]] ;;
    smtp) [[ $(answer "$2" "$3" '' 3) == 323230 ]] ;;
    mongo-uri)
      if python3 -c 'import pymongo' 2>/dev/null; then
        python3 -c 'import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=3000, connectTimeoutMS=2000)
sys.exit(c.admin.command("ping").get("ok") != 1)' "$2" 2>/dev/null
      else
        host=${2#*://} && host=${host%%[/?]*} && host=${host##*@} && host=${host%%,*}
        [[ $host == *:* ]] || host=$host:27017
        probe mongo "${host%:*}" "${host##*:}"
      fi
      ;;
  esac
}

# http_ok URL: does URL answer 2xx within 2 s?
http_ok() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

# wait_until WHAT TIMEOUT LOGFILE PIDNAME CMD [ARGS...]: poll CMD every 0.25 s until it succeeds.
# Fails after TIMEOUT seconds, or at once if the process recorded as PIDNAME (may be "-") has
# died, printing the end of LOGFILE.
wait_until() {
  local what=$1 timeout=$2 logfile=$3 pidname=$4 deadline=$((SECONDS + $2))
  shift 4
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
  [[ -s $1 ]] || return 0
  printf '%s\n' "----- last 30 lines of $1 -----" >&2
  tail -n 30 -- "$1" >&2
  printf '%s\n' "-----" >&2
}
