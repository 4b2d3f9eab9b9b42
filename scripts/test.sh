#!/usr/bin/env bash
# Quick start, part 2: install what the tests need and run every test.
#
# Installs (only if missing): everything scripts/run.sh needs for a debug build, plus
# PostgreSQL 15 (apt; the tests start their own servers on temp dirs), OpenSSH's server
# (apt) and moto[server] (pip) for the SFTP and S3 target tests, Chromium (apt),
# and Playwright's test runner (npm, into end2end/node_modules; it uses Debian's
# Chromium, no browser download).
#
# Runs: formatting and clippy (warnings are errors), the engine's dependency rule, unit
# and integration tests of every crate (against real SQLite files, real PostgreSQL, and
# real S3 and SFTP servers on loopback),
# then the release build exactly as scripts/run.sh makes it (same function), and the
# browser tests (Playwright in headless Chromium) against that release server on a free
# port with a temporary data directory: a change that breaks scripts/run.sh fails here.
# Then the same release binary behind a real nginx (scripts/check_proxy.sh: at the root
# with nginx's default Host rewrite, and under a path prefix), and the release artefacts
# as a new user meets them (scripts/dist.sh, scripts/check_packages.sh: the tarball's
# binary alone, the .deb installed, started as its unit would, and removed). The user
# guide is built with mdBook and its links checked (scripts/check_docs.sh) before that.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_build_tools
ensure_postgres
ensure_mariadb
ensure_remote_test_servers
ensure_chromium
ensure_playwright
ensure_man_tools
ensure_nginx

# Every build takes `--cfg erase_components` from .cargo/config.toml (as cargo-leptos
# does for debug builds), so tests, clippy and the builds share compiled dependencies.
export LEPTOS_OUTPUT_NAME=tablesafe

step "format check" "Run 'cargo fmt --all' and commit the result."
cargo fmt --all --check

step "clippy (warnings are errors)" "Fix the warnings clippy printed above."
cargo clippy --workspace --exclude frontend --all-targets --features app/ssr -- -D warnings
cargo clippy -p frontend --target wasm32-unknown-unknown -- -D warnings

step "the engine depends on no web or CLI crate" "Move the web or CLI code out of engine/."
if cargo tree -p engine -e normal --prefix none | grep -E '^(leptos|leptos_[a-z]+|axum|clap|wasm-bindgen|jsonwebtoken|indicatif|app|server) ' ; then
  echo "engine/ must not depend on the crates listed above" >&2
  exit 1
fi

step "unit and integration tests (SQLite files, real PostgreSQL, S3 and SFTP servers)" \
  "The failing test and its message are above; 'cargo test --workspace --exclude frontend --features app/ssr NAME' runs it alone."
cargo test --workspace --exclude frontend --features app/ssr

step "the user guide builds and its links hold" "The broken link or mdbook's error is above."
scripts/check_docs.sh

step "the benchmark chart and table match bench/results" "Run 'python3 bench/chart.py' and commit what it writes."
python3 bench/chart_test.py
python3 bench/chart.py --check

build_release

step "browser tests (Playwright, headless Chromium) against the release build" \
  "The failing test is named above; its trace is under end2end/test-results/."
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
(cd end2end && TABLESAFE_BIN="$ROOT/target/release/tablesafe" TABLESAFE_E2E_PORT="$port" \
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npx playwright test)

step "behind nginx (root, prefix passed through, prefix stripped)" "check_proxy.sh's failing round is named above."
scripts/check_proxy.sh "$ROOT/target/release/tablesafe" "$ROOT/target/site"

step "release artefacts (tarball alone, .deb installed and removed)" "check_packages.sh's failing check is named above."
TABLESAFE_DIST_BIN="$ROOT/target/release/tablesafe" scripts/dist.sh
scripts/check_packages.sh "$ROOT/dist" "$ROOT/target/site"

STEP=""
say "all tests passed"
