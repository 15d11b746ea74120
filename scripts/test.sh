#!/usr/bin/env bash
# The one command that runs every test: dependencies (scripts/deps.sh), a debug build of the
# binaries (end-to-end tests start them), the deployment checks (scripts/check-deploy.sh, when
# present), then `cargo nextest run --workspace --no-fail-fast` (or `cargo test` without
# nextest). Extra arguments go to the test runner. CI runs it through .ci/run.
#
# Test environment exported (each keeps a value already set by the caller):
#   TEST_MYSQL_URL    mysql://root@127.0.0.1:3306 (or a password-less mp3c_test user when root is
#                     refused over TCP; made through the socket)
#   TEST_AMQP_URL     amqp://guest:guest@127.0.0.1:5672/%2f
#   TEST_MONGODB_URI  $MONGODB_URI, else mongodb://127.0.0.1:27017
#   TEST_SMTP_HOST    127.0.0.1         TEST_SMTP_PORT  1025
#   TEST_MAILDEV_URL  http://127.0.0.1:1080   (maildev REST API: GET /email, DELETE /email/all)
# Last, the containerised phase (scripts/pods-test.sh): the images built from docker/Dockerfile
# run the manifests with podman and the tutorial flow passes against them.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/test.sh [-h|--help] [TEST-RUNNER ARGS...]
  Start the dependencies, build the binaries, run scripts/check-deploy.sh (skip with
  SKIP_DEPLOY_CHECKS=1) and every test with cargo nextest (cargo test when nextest is absent).
  Args after the options go to the runner, e.g. `scripts/test.sh -p auth` or `scripts/test.sh fault_`.
  Then the containerised phase (scripts/pods-test.sh; SKIP_CONTAINERS=1 skips it outside CI).
  TEST_STOP_DEPS=1 (the default when CI=true) stops, at the end, the dependencies this run started.
EOF
}

case "${1:-}" in
  -h | --help)
    usage
    exit 0
    ;;
esac

MP3C_ME="test"
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
cd "$MP3C_ROOT"
mp3c_dirs
if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then PATH=$HOME/.cargo/bin:$PATH; fi

# --- dependencies -----------------------------------------------------------------------------
stop_deps=${TEST_STOP_DEPS:-}
if [[ -z $stop_deps ]]; then
  if [[ ${CI:-} == true || ${CI:-} == 1 ]]; then stop_deps=1; else stop_deps=0; fi
fi
deps_before=$(recorded_deps)
bash "$MP3C_ROOT/scripts/deps.sh"
if ((stop_deps)); then
  started_now=()
  while IFS= read -r dep; do
    grep -qxF -- "$dep" <<<"$deps_before" || started_now+=("$dep")
  done < <(recorded_deps)
  if ((${#started_now[@]})); then
    # Quietly: the test runner's summary should stay the last lines of the output.
    # shellcheck disable=SC2317 # called by the trap
    stop_started_deps() {
      local dep
      for dep in "${started_now[@]}"; do stop_dep "$dep" >/dev/null 2>&1 || true; done
    }
    trap stop_started_deps EXIT
  fi
fi

# --- test environment ---------------------------------------------------------------------------
if [[ -z ${TEST_MYSQL_URL:-} ]]; then
  if mysql --protocol=tcp -h127.0.0.1 -P3306 -uroot -e 'SELECT 1' >/dev/null 2>&1; then
    TEST_MYSQL_URL=mysql://root@127.0.0.1:3306
  else
    log "MariaDB refuses root over TCP; creating the password-less user mp3c_test through the socket"
    sudo_=()
    ((EUID == 0)) || sudo_=(sudo)
    "${sudo_[@]}" mysql -uroot <<'SQL' || die "could not create mp3c_test through the MariaDB socket"
CREATE USER IF NOT EXISTS 'mp3c_test'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'mp3c_test'@'localhost';
GRANT ALL PRIVILEGES ON *.* TO 'mp3c_test'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'mp3c_test'@'localhost' WITH GRANT OPTION;
SQL
    mysql --protocol=tcp -h127.0.0.1 -P3306 -ump3c_test -e 'SELECT 1' >/dev/null ||
      die "mp3c_test cannot log in over TCP either"
    TEST_MYSQL_URL=mysql://mp3c_test@127.0.0.1:3306
  fi
fi
export TEST_MYSQL_URL
export TEST_AMQP_URL=${TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export TEST_MONGODB_URI=${TEST_MONGODB_URI:-${MONGODB_URI:-mongodb://127.0.0.1:27017}}
export TEST_SMTP_HOST=${TEST_SMTP_HOST:-127.0.0.1}
export TEST_SMTP_PORT=${TEST_SMTP_PORT:-1025}
export TEST_MAILDEV_URL=${TEST_MAILDEV_URL:-http://127.0.0.1:1080}
log "TEST_MYSQL_URL=$TEST_MYSQL_URL TEST_AMQP_URL=$TEST_AMQP_URL TEST_MONGODB_URI=<set>" \
  "TEST_SMTP_HOST=$TEST_SMTP_HOST TEST_SMTP_PORT=$TEST_SMTP_PORT TEST_MAILDEV_URL=$TEST_MAILDEV_URL"

# Each test makes its own MySQL database and user (auth_t_*); drop those of earlier runs.
mysql_url_user=${TEST_MYSQL_URL#mysql://}
mysql_url_user=${mysql_url_user%%@*}
mysql --protocol=tcp -h127.0.0.1 -P3306 -u"$mysql_url_user" -N -e "
  SELECT CONCAT('DROP DATABASE \`', schema_name, '\`;') FROM information_schema.schemata WHERE schema_name LIKE 'auth\\_t\\_%';
  SELECT CONCAT('DROP USER \'', user, '\'@\'', host, '\';') FROM mysql.user WHERE user LIKE 'auth\\_t\\_%';" |
  mysql --protocol=tcp -h127.0.0.1 -P3306 -u"$mysql_url_user" || log "could not drop old test databases (continuing)"

# --- build ------------------------------------------------------------------------------------
log "cargo build --workspace --bins"
cargo build --workspace --bins

# --- deployment checks (before the tests, so the runner's summary closes the output) -------------
deploy_status=0
if [[ -f $MP3C_ROOT/scripts/check-deploy.sh && ${SKIP_DEPLOY_CHECKS:-0} != 1 ]]; then
  log "scripts/check-deploy.sh"
  bash "$MP3C_ROOT/scripts/check-deploy.sh" || deploy_status=$?
  if ((deploy_status)); then
    log "DEPLOY CHECKS FAILED (exit $deploy_status); running the tests anyway"
  fi
fi

# --- supply chain: licenses, bans and sources of every crate (cargo-deny) -------------------------
# The RustSec advisory database is a GitHub repository, unreachable from this project's machines;
# set DENY_ADVISORIES=1 where it is reachable to check advisories too.
deny_status=0
if ! command -v cargo-deny >/dev/null; then
  log "installing cargo-deny (once per machine)"
  cargo install --locked cargo-deny >/dev/null 2>&1 || deny_status=$?
fi
if ((deny_status == 0)); then
  deny_checks=(licenses bans sources)
  [[ ${DENY_ADVISORIES:-0} == 1 ]] && deny_checks+=(advisories)
  log "cargo deny check ${deny_checks[*]}"
  cargo deny --log-level error check "${deny_checks[@]}" || deny_status=$?
fi

# --- tests ------------------------------------------------------------------------------------
# schemathesis fuzzes the live services from their OpenAPI documents.
command -v schemathesis >/dev/null || python3 -m pip install --quiet schemathesis
# The MongoDB fault test stops and restarts a server of its own: SecantusDB, even where the
# shared server is a real mongod or MONGODB_URI.
python3 -c 'import secantus' 2>/dev/null || python3 -m pip install --quiet "secantusdb==0.7.0b3"
# The web page's browser test (crates/testkit/tests/web.rs): Debian's chromium, since Playwright
# can't download its own browser here, Playwright and axe-core (bundled by axe-playwright-python)
# from PyPI. Playwright's own driver ships inside its wheel.
if ! command -v chromium >/dev/null; then
  log "installing chromium with apt-get (the web page's browser test)"
  sudo_=()
  ((EUID == 0)) || sudo_=(sudo)
  "${sudo_[@]}" apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive "${sudo_[@]}" apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
    chromium fonts-dejavu-core >/dev/null || die "apt-get install chromium failed"
fi
python3 -c 'import playwright, axe_playwright_python' 2>/dev/null ||
  python3 -m pip install --quiet "playwright==1.65.2" "axe-playwright-python==0.1.8"
# Two phases: everything else in parallel, then the fault tests (names starting `fault_`) one at
# a time, since they stop and restart the shared broker, database and mail servers.
test_status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast -E 'not test(/fault_/)' "$@" || test_status=$?
  cargo nextest run --workspace --no-fail-fast -E 'test(/fault_/)' --test-threads 1 --no-tests=pass "$@" || test_status=$?
else
  log "cargo-nextest not found; using cargo test"
  cargo test --workspace --no-fail-fast -- --skip fault_ "$@" || test_status=$?
  cargo test --workspace --no-fail-fast -- fault_ --test-threads 1 "$@" || test_status=$?
fi

# --- containerised phase: the four images from docker/Dockerfile, the manifests in podman ---------
# Last, after the fault tests have restarted the shared servers: scripts/pods-test.sh builds the
# images (scripts/images.sh; a warm cache makes it seconds), runs manifests/ with podman kube
# play (scripts/pods-up.sh) and the tutorial flow against the containerised gateway. CI never
# skips it; SKIP_CONTAINERS=1 skips it on a developer's machine.
pods_status=0
if [[ ${SKIP_CONTAINERS:-0} == 1 && ${CI:-} != true && ${CI:-} != 1 ]]; then
  log "SKIP_CONTAINERS=1: containerised phase skipped"
else
  log "containerised phase: scripts/pods-test.sh"
  bash "$MP3C_ROOT/scripts/pods-test.sh" || pods_status=$?
  ((pods_status == 0)) || log "CONTAINERISED PHASE FAILED (exit $pods_status)"
fi

if ((pods_status)); then
  log "scripts/pods-test.sh failed (exit $pods_status)"
  exit "$pods_status"
fi
if ((deny_status)); then
  log "cargo deny failed (exit $deny_status)"
  exit "$deny_status"
fi
if ((deploy_status)); then
  log "scripts/check-deploy.sh failed (exit $deploy_status)"
  exit "$deploy_status"
fi
exit "$test_status"
