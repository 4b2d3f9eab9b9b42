# Shared by scripts/run.sh and scripts/test.sh: install only what is missing, and say so.
# Everything here is idempotent; a second run installs nothing.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"                     # npm-installed build tools (wasm-opt), gitignored

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# What the script is doing now, and what to do if that fails: when the script exits
# with an error, its last line names the step and the remedy, whatever printed above.
STEP=""
HINT=""
step() {
  STEP="$1"
  HINT="${2:-}"
  say "$1 [$(date -u +%H:%M:%S), ${SECONDS}s in]"
}
on_exit() {
  local rc=$?
  [ "$rc" -eq 0 ] || [ -z "$STEP" ] && return 0
  if [ "$rc" -eq 130 ] || [ "$rc" -eq 143 ]; then
    printf '\n\033[1;31mtablesafe: interrupted while %s.\033[0m\n' "$STEP" >&2
  else
    printf '\n\033[1;31mtablesafe: failed while %s (exit %s). %s\033[0m\n' "$STEP" "$rc" "$HINT" >&2
  fi
}
trap on_exit EXIT

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
# apt_install PACKAGE... : installs the Debian packages that are not installed yet.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "installing Debian packages: ${missing[*]}" \
    "Install them yourself (apt-get install ${missing[*]}) or check that apt can reach its mirrors, then run the script again."
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_rust() {
  if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust 1.95 or newer with rustup (https://rustup.rs)" >&2
    exit 1
  fi
  if ! rustup target list --installed | grep -q '^wasm32-unknown-unknown$'; then
    step "adding the Rust target wasm32-unknown-unknown (for the console's browser bundle)" \
      "Run 'rustup target add wasm32-unknown-unknown' yourself to see why, then run the script again."
    rustup target add wasm32-unknown-unknown
  fi
}

ensure_build_tools() {
  apt_install gcc pkg-config curl ca-certificates
  ensure_rust
  # wasm-bindgen's CLI must match the library version in Cargo.lock exactly (it is the
  # one tool the browser bundle needs beyond cargo; build_release below does the rest
  # of what cargo-leptos would, so a fresh machine does not spend ~17 minutes
  # compiling cargo-leptos).
  local wbg
  wbg="$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' "$ROOT/Cargo.lock")"
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wbg" ]; then
    step "installing wasm-bindgen-cli $wbg (matches Cargo.lock; a few minutes once)" \
      "It needs access to crates.io; 'cargo install wasm-bindgen-cli --version $wbg' shows the error alone."
    cargo install wasm-bindgen-cli --version "$wbg"
  fi
}

ensure_node() {
  if ! command -v npm >/dev/null; then
    apt_install nodejs npm
  fi
}

# wasm-opt from npm's binaryen (Debian's binaryen 108 produces wasm that fails hydration);
# only release builds run it.
ensure_wasm_opt() {
  ensure_node
  if [ ! -x "$TOOLS/node_modules/.bin/wasm-opt" ]; then
    step "installing wasm-opt (npm binaryen) into .tools/" \
      "It needs Node.js with npm and access to the npm registry; run 'npm install binaryen@132.0.0' in .tools/ to see the error alone."
    mkdir -p "$TOOLS"
    (cd "$TOOLS" && npm install --no-audit --no-fund --silent binaryen@132.0.0 >/dev/null)
  fi
  export PATH="$TOOLS/node_modules/.bin:$PATH"
  export LEPTOS_WASM_OPT_FEATURES="-O1,--enable-bulk-memory,--enable-nontrapping-float-to-int"
}

ensure_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql
  fi
  # PostGIS, for the test that restores an application's whole schema (a geometry
  # table with its extension); openssl makes the test CA of the TLS tests; the sqlite3
  # shell's .dump is what SQLite restores are compared with.
  local v
  v="$(ls /usr/lib/postgresql | sort -n | tail -1)"
  apt_install "postgresql-$v-postgis-3" openssl sqlite3
  # The harness runs initdb itself; the packaged cluster is not needed.
}

# MariaDB's server and client: the MySQL tests start their own server in a temp dir.
ensure_mariadb() {
  apt_install mariadb-server mariadb-client
}

# mydumper/myloader: the parallel anchors of the MariaDB benchmark (bench/mysql_bench.sh).
ensure_mydumper() {
  ensure_mariadb
  apt_install mydumper
}

ensure_chromium() {
  apt_install chromium
}

ensure_playwright() {
  ensure_node
  if [ ! -d "$ROOT/end2end/node_modules/@playwright/test" ]; then
    step "installing Playwright's test runner into end2end/node_modules (it drives Debian's Chromium)" \
      "It needs npm and access to the npm registry; run 'npm ci' in end2end/ to see the error alone."
    (cd "$ROOT/end2end" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
  fi
}

# The remote targets' tests run real servers on loopback: OpenSSH's sshd (SFTP) and
# moto's standalone S3 server (PyPI); the notification tests an SMTP server (aiosmtpd,
# PyPI).
ensure_remote_test_servers() {
  apt_install openssh-server openssh-client python3-pip
  if ! python3 -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1; then
    step "installing moto[server] (an S3-compatible server for the tests) with pip" \
      "It needs pip and access to PyPI: try 'python3 -m pip install \"moto[server]>=5,<6\"' yourself."
    python3 -m pip install --quiet 'moto[server]>=5,<6' 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages 'moto[server]>=5,<6'
  fi
  if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    step "installing aiosmtpd (an SMTP server the notification tests send mail to) with pip" \
      "It needs pip and access to PyPI: try 'python3 -m pip install \"aiosmtpd>=1.4,<2\"' yourself."
    python3 -m pip install --quiet 'aiosmtpd>=1.4,<2' 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages 'aiosmtpd>=1.4,<2'
  fi
}

# mdBook builds the user guide (docs/; scripts/check_docs.sh). Pinned, and without its
# default features (watch, serve, search): `build` needs none of them, and the install
# took 2 min 20 s here (2 cores, beside other builds) instead of also compiling a web server.
MDBOOK_VERSION=0.5.4
ensure_mdbook() {
  if [ "$(mdbook --version 2>/dev/null)" != "mdbook v$MDBOOK_VERSION" ]; then
    step "installing mdbook $MDBOOK_VERSION (builds the user guide; about 2-3 minutes once)" \
      "It needs access to crates.io; 'cargo install mdbook --locked --version $MDBOOK_VERSION --no-default-features' shows the error alone."
    local t0=$SECONDS
    cargo install mdbook --locked --version "$MDBOOK_VERSION" --no-default-features
    say "mdbook installed in $((SECONDS - t0)) s"
  fi
}

# groff reads the manual pages `tablesafe man` writes (server/tests/it/config.rs checks
# them with it); minimal images leave it out.
ensure_man_tools() {
  apt_install groff-base
}

# nginx, the reverse proxy scripts/check_proxy.sh puts in front of the console. Only the
# binary is wanted: the check starts its own nginx on a loopback port from a temporary
# config, so the package's service is neither started (policy-rc.d answers 101 while
# the package installs) nor left enabled for the next boot.
ensure_nginx() {
  dpkg-query -W -f='${Status}' nginx 2>/dev/null | grep -q "install ok installed" && return 0
  local policy=/usr/sbin/policy-rc.d ours=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    ours=1
  fi
  apt_install nginx
  [ -n "$ours" ] && as_root rm -f "$policy"
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
  return 0
}

# The release build a user runs: the browser bundle, then the server with the bundle
# embedded in it (server/build.rs reads TABLESAFE_EMBED_SITE), so target/release/tablesafe
# alone serves the whole console. Shared by scripts/run.sh, scripts/test.sh and
# scripts/dist.sh so that CI builds exactly what users run. Its flags come from
# .cargo/config.toml (`--cfg erase_components`, chosen for the smaller bundle: see the
# README's "Browser bundle"), not from a RUSTFLAGS the caller may have. These are the
# steps `cargo leptos build --release` takes with the settings in Cargo.toml's
# [workspace.metadata.leptos]; cargo-leptos remains usable for development (`cargo
# leptos watch`) but is not needed to build or test.
build_release() {
  ensure_wasm_opt
  # Precompressed copies of the bundle (served with Content-Encoding: br / gzip).
  apt_install brotli gzip
  # One build at a time per checkout: two at once (two terminals, a test run beside a
  # run.sh) would both rebuild target/pkg.new and break each other's bundle.
  mkdir -p "$ROOT/target"
  local lock_fd
  exec {lock_fd}>"$ROOT/target/.build_release.lock"
  flock "$lock_fd"
  # The bundle is made in target/pkg.new (outside the site the server embeds), then
  # copied into target/site/pkg.
  local site="$ROOT/target/site" pkg="$ROOT/target/site/pkg" new="$ROOT/target/pkg.new"
  local wasm="$ROOT/target/wasm32-unknown-unknown/wasm-release/frontend.wasm"
  step "building the console's browser bundle (wasm, wasm-bindgen, wasm-opt; ~4 minutes the first time)" \
    "The error is above; 'cargo build -p frontend --lib --target wasm32-unknown-unknown --profile wasm-release' repeats the compile alone."
  # LEPTOS_OUTPUT_NAME at compile time makes the pages load /pkg/tablesafe.wasm.
  env -u RUSTFLAGS LEPTOS_OUTPUT_NAME=tablesafe \
    cargo build -p frontend --lib --target wasm32-unknown-unknown --profile wasm-release
  rm -rf "$new"
  mkdir -p "$new"
  wasm-bindgen "$wasm" --target web --no-typescript --out-dir "$new" --out-name tablesafe
  # shellcheck disable=SC2086 # the feature list is one flag per word
  wasm-opt ${LEPTOS_WASM_OPT_FEATURES//,/ } "$new/tablesafe_bg.wasm" -o "$new/tablesafe.wasm"
  rm "$new/tablesafe_bg.wasm"
  cp "$ROOT/style/main.css" "$new/tablesafe.css"
  local f
  for f in "$new"/tablesafe.{js,wasm,css}; do
    gzip -9 -n -c "$f" >"$f.gz"
    brotli -q 11 -c "$f" >"$f.br"
  done
  # Replace only the files that changed: an unchanged file keeps its time, so the
  # server that embeds them is not compiled again for nothing.
  mkdir -p "$pkg"
  for f in "$new"/*; do
    cmp -s "$f" "$pkg/${f##*/}" || cp "$f" "$pkg/${f##*/}"
  done
  for f in "$pkg"/*; do
    [ -e "$new/${f##*/}" ] || rm -f "$f"
  done
  rm -rf "$new"
  for f in "$ROOT/public"/*; do
    cmp -s "$f" "$site/${f##*/}" || cp "$f" "$site/${f##*/}"
  done
  step "building tablesafe (release server with the bundle embedded; ~6 minutes the first time)" \
    "The compiler's error is above; 'TABLESAFE_EMBED_SITE=target/site cargo build --release -p server' repeats the build alone."
  # `tablesafe --version` names the commit ("+dirty": built with uncommitted changes).
  local commit="${TABLESAFE_BUILD_COMMIT:-}"
  if [ -z "$commit" ] && commit="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null)"; then
    git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || commit="$commit+dirty"
  fi
  env -u RUSTFLAGS LEPTOS_OUTPUT_NAME=tablesafe TABLESAFE_EMBED_SITE="$site" \
    TABLESAFE_BUILD_COMMIT="${commit:-unknown}" \
    cargo build --release -p server --bin tablesafe
  step "checking the release build" \
    "The build ended without the server or the browser bundle; read the output above."
  for f in target/release/tablesafe target/site/pkg/tablesafe.wasm target/site/pkg/tablesafe.js target/site/pkg/tablesafe.css; do
    if [ ! -s "$ROOT/$f" ]; then
      echo "missing $f after the build" >&2
      return 1
    fi
  done
  exec {lock_fd}>&-
}
