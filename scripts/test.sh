#!/usr/bin/env bash
# The one command that runs every test. This script installs and starts what the tests need
# (scripts/deps.sh; chromium, Playwright and axe-core for the web page's browser test;
# schemathesis; SecantusDB for the MongoDB fault test; cargo-deny), builds the binaries
# (end-to-end tests start them), then `xtask test` (crates/xtask/src/ci.rs) runs the deployment
# checks, cargo-deny, the tests in two phases and the containerised phase, and sets TEST_*.
# CI runs it through .ci/run.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage() {
  cat <<'EOF2'
usage: scripts/test.sh [-h|--help] [TEST-RUNNER ARGS...]
  Start the dependencies, build the binaries, run scripts/check-deploy.sh (skip with
  SKIP_DEPLOY_CHECKS=1) and every test with cargo nextest (cargo test when nextest is absent).
  Args after the options go to the runner, e.g. `scripts/test.sh metrics_` (a test-name filter; `-p` does not narrow the workspace run).
  Then the containerised phase (scripts/pods-test.sh; SKIP_CONTAINERS=1 skips it outside CI).
  TEST_STOP_DEPS=1 (the default when CI=true) stops, at the end, the dependencies this run started.
EOF2
}
case ${1:-} in -h | --help) usage && exit 0 ;; esac

MP3C_ME="test"
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
cd "$MP3C_ROOT" && mp3c_dirs && cargo_path
sudo_=()
((EUID == 0)) || sudo_=(sudo)

# What is on record before deps.sh runs: xtask test stops, with TEST_STOP_DEPS, the others.
MP3C_DEPS_BEFORE=$(cd -- "$MP3C_PID_DIR" && printf '%s ' *)
export MP3C_DEPS_BEFORE
bash scripts/deps.sh

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
  "${sudo_[@]}" apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive "${sudo_[@]}" apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
    chromium fonts-dejavu-core >/dev/null || die "apt-get install chromium failed"
fi
python3 -c 'import playwright, axe_playwright_python' 2>/dev/null ||
  python3 -m pip install --quiet "playwright==1.65.2" "axe-playwright-python==0.1.8"
# Supply chain checks (licenses, bans, sources of every crate); xtask test reports its absence.
if ! command -v cargo-deny >/dev/null; then
  log "installing cargo-deny (once per machine)"
  cargo install --locked cargo-deny >/dev/null 2>&1 || log "could not install cargo-deny"
fi

log "cargo build --workspace --bins"
cargo build --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/debug/xtask" test "$@"
