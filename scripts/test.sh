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
# then the browser tests (Playwright in headless Chromium against a freshly built
# server on a free port with a temporary data directory).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_build_tools
ensure_postgres
ensure_remote_test_servers
ensure_chromium
ensure_playwright

# Build with the same settings cargo-leptos uses for its debug build, so the unit tests,
# clippy and `cargo leptos build` share compiled dependencies instead of building them
# three times.
export RUSTFLAGS="--cfg erase_components"
export LEPTOS_OUTPUT_NAME=tablesafe

say "format check"
cargo fmt --all --check

say "clippy (warnings are errors)"
cargo clippy --workspace --exclude frontend --all-targets --features app/ssr -- -D warnings
cargo clippy -p frontend --target wasm32-unknown-unknown -- -D warnings

say "the engine depends on no web or CLI crate"
if cargo tree -p engine -e normal --prefix none | grep -E '^(leptos|leptos_[a-z]+|axum|clap|wasm-bindgen|jsonwebtoken|indicatif|app|server) ' ; then
  echo "engine/ must not depend on the crates listed above" >&2
  exit 1
fi

say "unit and integration tests (SQLite files, real PostgreSQL, S3 and SFTP servers)"
cargo test --workspace --exclude frontend --features app/ssr

say "building the console for the browser tests"
cargo leptos build

say "browser tests (Playwright, headless Chromium)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
(cd end2end && TABLESAFE_E2E_PORT="$port" PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npx playwright test)

say "all tests passed"
