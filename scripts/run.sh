#!/usr/bin/env bash
# Quick start, part 1: install what is missing, build a release, and run the console.
#
# Installs (only if missing): gcc/pkg-config/curl (apt), the wasm32 Rust target,
# wasm-bindgen-cli at the version in Cargo.lock (cargo install), wasm-opt (npm binaryen,
# into .tools/). Then serves http://127.0.0.1:3000 with its data in ./tablesafe-data.
# Any `tablesafe serve` option can follow, e.g. `scripts/run.sh --listen 0.0.0.0:8080`.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_build_tools
build_release

# Defaults go through the environment so that flags given to this script win.
export TABLESAFE_LISTEN="${TABLESAFE_LISTEN:-127.0.0.1:3000}"
export TABLESAFE_DATA_DIR="${TABLESAFE_DATA_DIR:-$ROOT/tablesafe-data}"
listen="$TABLESAFE_LISTEN"; data="$TABLESAFE_DATA_DIR"
args=("$@")
for i in "${!args[@]}"; do
  case "${args[$i]}" in
    --listen=*) listen="${args[$i]#--listen=}" ;;
    --listen) listen="${args[$((i + 1))]:-$listen}" ;;
    --data-dir=*) data="${args[$i]#--data-dir=}" ;;
    --data-dir) data="${args[$((i + 1))]:-$data}" ;;
  esac
done
cat >&2 <<MSG

  tablesafe console: http://$listen
  Log in as "admin". On the very first start the password is generated and printed
  once in the log below (or set TABLESAFE_ADMIN_PASSWORD before the first start).
  Lost it? Stop the server and run: target/release/tablesafe reset-password --data-dir "$data"
  Data directory: $data   (Ctrl-C stops the server)

MSG
STEP=""  # from here on the server's own messages say what went wrong
exec "$ROOT/target/release/tablesafe" serve "$@"
