# Shared by scripts/run.sh and scripts/test.sh: install only what is missing, and say so.
# Everything here is idempotent; a second run installs nothing.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"                     # npm-installed build tools (wasm-opt), gitignored
CARGO_LEPTOS_VERSION="0.3.10"            # 0.3.11 needs Rust 1.96

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

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
  say "installing Debian packages: ${missing[*]}"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_rust() {
  if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust 1.95 or newer with rustup (https://rustup.rs)" >&2
    exit 1
  fi
  if ! rustup target list --installed | grep -q '^wasm32-unknown-unknown$'; then
    say "adding the Rust target wasm32-unknown-unknown (for the console's browser bundle)"
    rustup target add wasm32-unknown-unknown
  fi
}

ensure_build_tools() {
  apt_install gcc pkg-config curl ca-certificates
  ensure_rust
  if [ "$(cargo leptos --version 2>/dev/null | awk '{print $2}')" != "$CARGO_LEPTOS_VERSION" ]; then
    say "installing cargo-leptos $CARGO_LEPTOS_VERSION (builds server + wasm; takes ~15 minutes once)"
    cargo install cargo-leptos --locked --version "$CARGO_LEPTOS_VERSION"
  fi
  # wasm-bindgen's CLI must match the library version in Cargo.lock exactly. cargo-leptos
  # would download it from GitHub, which this kind of machine cannot reach.
  local wbg
  wbg="$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' "$ROOT/Cargo.lock")"
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wbg" ]; then
    say "installing wasm-bindgen-cli $wbg (matches Cargo.lock)"
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
    say "installing wasm-opt (npm binaryen) into .tools/"
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
  # The harness runs initdb itself; the packaged cluster is not needed.
}

ensure_chromium() {
  apt_install chromium
}

ensure_playwright() {
  ensure_node
  if [ ! -d "$ROOT/end2end/node_modules/@playwright/test" ]; then
    say "installing Playwright's test runner into end2end/node_modules (it drives Debian's Chromium)"
    (cd "$ROOT/end2end" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
  fi
}

# The remote targets' tests run real servers on loopback: OpenSSH's sshd (SFTP) and
# moto's standalone S3 server (PyPI).
ensure_remote_test_servers() {
  apt_install openssh-server openssh-client python3-pip
  if ! python3 -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1; then
    say "installing moto[server] (an S3-compatible server for the tests) with pip"
    python3 -m pip install --quiet 'moto[server]>=5,<6' 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages 'moto[server]>=5,<6'
  fi
}
