#!/usr/bin/env bash
# The release artefacts, tested as a new user meets them (scripts/dist.sh makes them):
#  (a) the tarball: unpacked into an empty directory, its binary alone (no target/site,
#      no Rust, no Node) serves the console; the browser files it serves are the bytes
#      of the build's target/site; Playwright's smoke test logs in and runs a backup.
#  (b) the .deb: dpkg -i; the user, files, modes and the unit (systemd-analyze); the
#      server started as the unit would start it, as the `tablesafe` user; its first
#      generated password found in its log, as the README says; reset-password as the
#      README says; the smoke test; dpkg -r keeps the data, dpkg --purge the data too;
#      then everything is removed so that the next run starts clean.
#  (c) Dockerfile and compose.yaml, where a container engine runs.
#
# Usage (as root: it installs a package and creates a system user):
#   scripts/check_packages.sh [DIST_DIR [SITE_DIR]]
# DIST_DIR holds tablesafe-*-x86_64-linux.tar.gz and tablesafe_*_amd64.deb (default
# dist/); SITE_DIR is the site the binary was built from (default target/site).
source "$(dirname "$0")/lib.sh"

if [ "$(id -u)" != 0 ]; then
  echo "check_packages.sh installs the .deb and creates the system user 'tablesafe': run it as root (CI does), e.g. sudo $0 $*" >&2
  exit 1
fi
dist="$(cd "${1:-$ROOT/dist}" && pwd)"
site="$(cd "${2:-$ROOT/target/site}" && pwd)"
shopt -s nullglob
tarballs=("$dist"/tablesafe-*-x86_64-linux.tar.gz)
debs=("$dist"/tablesafe_*_amd64.deb)
shopt -u nullglob
if [ ${#tarballs[@]} -ne 1 ] || [ ${#debs[@]} -ne 1 ]; then
  echo "$dist must hold exactly one tablesafe-*-x86_64-linux.tar.gz and one tablesafe_*_amd64.deb: run scripts/dist.sh first" >&2
  exit 1
fi
tarball="${tarballs[0]}"
deb="${debs[0]}"

ensure_playwright
ensure_chromium
apt_install curl brotli python3 systemd adduser
t_start=$SECONDS

work="$(mktemp -d /tmp/tablesafe-packages-XXXXXX)"
chmod 0755 "$work"
server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
cleanup() {
  local rc=$?
  stop_server
  rm -rf "$work"
  (exit "$rc") || on_exit
}
trap cleanup EXIT

fail() {
  echo "check_packages: $*" >&2
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Polls /healthz until it answers (or the server exits, or 60 s pass).
wait_healthy() { # PORT LOG
  local deadline=$((SECONDS + 60))
  until curl -sf -o /dev/null "http://127.0.0.1:$1/healthz"; do
    kill -0 "$server_pid" 2>/dev/null || { cat "$2" >&2; fail "the server exited before answering /healthz (its log is above)"; }
    [ $SECONDS -lt $deadline ] || { cat "$2" >&2; fail "no answer on /healthz within 60 s (its log is above)"; }
    sleep 0.05
  done
}

# Logs in as admin through the login server function (as the login form does); true
# when a session cookie comes back. The password goes to curl in a file, never in argv.
logs_in() { # PORT PASSWORD
  local f="$work/pw.form"
  printf '%s' "$2" >"$f"
  curl -s -o /dev/null -D - -X POST -H "Origin: http://127.0.0.1:$1" \
    --data-urlencode username=admin --data-urlencode "password@$f" \
    "http://127.0.0.1:$1/api/login" | grep -qi '^set-cookie: tablesafe_session='
}

# The browser's smoke test against a running console.
smoke() { # PORT PASSWORD
  local spec=tests/smoke.spec.ts args=()
  if [ ! -f "$ROOT/end2end/$spec" ]; then
    spec=tests/login.spec.ts
    args=(-g "admin logs in")
  fi
  (cd "$ROOT/end2end" && TABLESAFE_E2E_BASE_URL="http://127.0.0.1:$1/" TABLESAFE_E2E_ADMIN_PASSWORD="$2" \
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npx playwright test "$spec" "${args[@]}" --project desktop \
    --output "$work/pw-$1")
}

# ---------------------------------------------------------------------------------
step "(a) the tarball ${tarball##*/}: unpacked alone, serving the console" \
  "The binary in the tarball does not serve the whole console by itself; scripts/dist.sh builds it with the browser files embedded (server/build.rs)."
unpack="$work/unpacked"
mkdir "$unpack"
t0=$(date +%s.%N)
tar -xzf "$tarball" -C "$unpack"
dir=("$unpack"/tablesafe-*)
[ -x "${dir[0]}/tablesafe" ] || fail "no executable tablesafe in ${tarball##*/}"
for f in tablesafe.service tablesafe.toml LICENSE README.md man/tablesafe.1 completions/tablesafe.bash completions/_tablesafe completions/tablesafe.fish; do
  [ -s "${dir[0]}/$f" ] || fail "${tarball##*/} lacks $f"
done
port=$(free_port)
password="pkg-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')"
log="$work/tarball.log"
# From inside the unpacked directory, with nothing telling it where browser files are.
(cd "${dir[0]}" && exec env -u TABLESAFE_SITE_ROOT -u LEPTOS_SITE_ROOT -u TABLESAFE_CONFIG \
  TABLESAFE_ADMIN_PASSWORD="$password" NO_COLOR=1 \
  ./tablesafe serve --listen "127.0.0.1:$port" --data-dir "$work/tarball-data") >"$log" 2>&1 &
server_pid=$!
wait_healthy "$port" "$log"
curl -sf "http://127.0.0.1:$port/login" | grep -q 'pkg/tablesafe.js' || fail "/login is not the console's login page"
t1=$(date +%s.%N)
startup=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
grep -q "browser files are missing" "$log" && fail "the embedded binary warned that its browser files are missing"
for f in pkg/tablesafe.wasm pkg/tablesafe.js pkg/tablesafe.css favicon.svg; do
  curl -sf -o "$work/got" "http://127.0.0.1:$port/$f" || fail "GET /$f failed"
  cmp -s "$work/got" "$site/$f" || fail "GET /$f did not return the bytes of $site/$f"
done
headers="$(curl -sfI "http://127.0.0.1:$port/pkg/tablesafe.wasm")"
grep -qi '^content-type: application/wasm' <<<"$headers" || fail "HEAD /pkg/tablesafe.wasm: not application/wasm: $headers"
etag="$(grep -i '^etag:' <<<"$headers" | cut -d' ' -f2 | tr -d '\r')"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "http://127.0.0.1:$port/pkg/tablesafe.wasm")" = 304 ] \
  || fail "a revalidation with the ETag was not answered 304"
curl -sf -H 'Accept-Encoding: br' -D "$work/br.h" -o "$work/got.br" "http://127.0.0.1:$port/pkg/tablesafe.wasm"
grep -qi '^content-encoding: br' "$work/br.h" || fail "the wasm was not sent brotli-compressed to a browser that accepts br"
brotli -d -c "$work/got.br" | cmp -s - "$site/pkg/tablesafe.wasm" || fail "the brotli wasm does not decompress to the bundle"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/pkg/nothing.js")" = 404 ] || fail "a missing file was not 404"
say "tarball: from unpacking to a served login page in ${startup} s; the embedded files are the build's"
smoke "$port" "$password"
stop_server

# ---------------------------------------------------------------------------------
step "(b) the Debian package ${deb##*/}: install, run as the unit would, remove" \
  "Read the failed check above; the package's sources are in packaging/ (scripts/dist.sh builds it)."
# Never touch a real installation: only a package or data this script left behind.
marker=/var/lib/tablesafe/.check_packages
if [ ! -e "$marker" ] && { dpkg-query -W -f='${Status}' tablesafe 2>/dev/null | grep -q "ok installed" \
  || [ -e /var/lib/tablesafe ] || [ -e /etc/tablesafe ]; }; then
  fail "this machine has tablesafe installed or data in /var/lib/tablesafe; the package test would change them. Run it on a CI machine, or remove them (dpkg --purge tablesafe; rm -rf /var/lib/tablesafe)"
fi
# dpkg refuses at once while apt or another dpkg runs: wait for the lock instead.
dpkg_locked() { # dpkg ARGS...
  local deadline=$((SECONDS + 300)) out
  until out="$(dpkg "$@" 2>&1)"; do
    if grep -q "lock" <<<"$out" && [ $SECONDS -lt $deadline ]; then
      sleep 1
      continue
    fi
    echo "$out" >&2
    return 1
  done
  echo "$out"
}
purge_all() {
  dpkg_locked --purge tablesafe >/dev/null 2>&1 || true
  rm -rf /var/lib/tablesafe
  if getent passwd tablesafe >/dev/null; then userdel tablesafe; fi
  if getent group tablesafe >/dev/null; then groupdel tablesafe; fi
}
[ -e "$marker" ] && purge_all # a previous run that stopped half-way
t0=$(date +%s.%N)
dpkg_locked -i "$deb"
install -m 0600 /dev/null "$marker"
# Where systemd runs, postinst has started the unit (on the config's port 3000): stop
# it; the test starts the server itself on a free port, as the unit would.
if [ -d /run/systemd/system ]; then
  systemctl stop tablesafe.service || true
fi

getent passwd tablesafe >/dev/null || fail "no user tablesafe after dpkg -i"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd tablesafe)
[ "$uid" -lt 1000 ] || fail "tablesafe is not a system user (uid $uid)"
[ "$shell" = /usr/sbin/nologin ] || fail "tablesafe's shell is $shell, not /usr/sbin/nologin"
[ "$home" = /var/lib/tablesafe ] || fail "tablesafe's home is $home"
expect_mode() { # PATH MODE OWNER:GROUP
  local got
  got="$(stat -c '%a %U:%G' "$1")" || fail "$1 is missing"
  [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}
expect_mode /usr/bin/tablesafe 755 root:root
expect_mode /etc/tablesafe/tablesafe.toml 640 root:tablesafe
expect_mode /var/lib/tablesafe 700 tablesafe:tablesafe
expect_mode /lib/systemd/system/tablesafe.service 644 root:root
for f in /usr/share/man/man1/tablesafe.1.gz /usr/share/bash-completion/completions/tablesafe \
  /usr/share/doc/tablesafe/copyright; do
  [ -s "$f" ] || fail "the package did not install $f"
done
dpkg-query -W -f='${Conffiles}' tablesafe | grep -q ' /etc/tablesafe/tablesafe.toml ' \
  || fail "/etc/tablesafe/tablesafe.toml is not a conffile (an upgrade would overwrite the admin's settings)"
/usr/bin/tablesafe --version | grep -Eq '^tablesafe [0-9][^ ]* \(commit [^ ,]+, built [0-9]{4}-' \
  || fail "tablesafe --version does not name version, commit and build date: $(/usr/bin/tablesafe --version)"

unit=/lib/systemd/system/tablesafe.service
out="$(systemd-analyze verify --man=no "$unit" 2>&1)" || fail "systemd-analyze verify refused the unit: $out"
[ -z "$out" ] || fail "systemd-analyze verify warned about the unit: $out"
exposure="$(systemd-analyze security --offline=true "$unit" 2>&1 | sed -n 's/.*Overall exposure level for tablesafe.service: \([0-9.]*\).*/\1/p')"
[ -n "$exposure" ] || fail "systemd-analyze security gave no exposure level"
python3 -c "import sys; sys.exit(0 if $exposure <= 2.0 else 1)" \
  || fail "the unit's exposure level is $exposure (systemd-analyze security $unit): harden it back to 2.0 or less"
say "unit: verified, exposure level $exposure"

# Start it as the unit does: its User=, WorkingDirectory=, UMask=, a clean environment
# with its Environment= lines, its ExecStart= (read from the installed unit, so this
# follows the unit). Only the port differs: TABLESAFE_LISTEN beats the config file's.
unit_value() { sed -n "s/^$1=//p" "$unit"; }
user="$(unit_value User)"
mapfile -t unit_env < <(unit_value Environment)
read -r -a exec_start <<<"$(unit_value ExecStart)"
[ "$user" = tablesafe ] && [ "${exec_start[0]}" = /usr/bin/tablesafe ] || fail "unexpected unit: User=$user ExecStart=${exec_start[*]}"
port=$(free_port)
log="$work/deb.log"
(cd "$(unit_value WorkingDirectory)" && umask "$(unit_value UMask)" && exec setpriv --reuid "$user" --regid "$user" --init-groups -- \
  env -i PATH=/usr/bin:/bin HOME=/var/lib/tablesafe USER="$user" LOGNAME="$user" NO_COLOR=1 \
  "${unit_env[@]}" TABLESAFE_LISTEN="127.0.0.1:$port" "${exec_start[@]}") >"$log" 2>&1 &
server_pid=$!
wait_healthy "$port" "$log"
t1=$(date +%s.%N)
startup=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
# The README: the first start's generated password is in the log (journalctl -u tablesafe).
generated="$(sed -n 's/.*generated password: \([^ ]*\).*/\1/p' "$log")"
if [ -z "$generated" ] && [ -d /run/systemd/system ]; then # the unit's first start made it
  generated="$(journalctl -u tablesafe --no-pager | sed -n 's/.*generated password: \([^ ]*\).*/\1/p')"
fi
[ -n "$generated" ] || { cat "$log" >&2; fail "the first start did not log a generated admin password"; }
curl -sf "http://127.0.0.1:$port/login" | grep -q 'pkg/tablesafe.js' || fail "no login page from the installed server"
say ".deb: from dpkg -i to a served login page in ${startup} s"
logs_in "$port" "$generated" || fail "the generated password from the log does not log in"
# The README's other way: set a password yourself, as the tablesafe user.
password="deb-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')"
TABLESAFE_NEW_PASSWORD="$password" runuser -u tablesafe -- /usr/bin/tablesafe reset-password --data-dir /var/lib/tablesafe >/dev/null \
  || fail "sudo -u tablesafe tablesafe reset-password --data-dir /var/lib/tablesafe failed"
logs_in "$port" "$password" || fail "the password set by reset-password does not log in"
! logs_in "$port" "$generated" || fail "the generated password still logs in after reset-password"
smoke "$port" "$password"
stop_server
[ "$(stat -c %U /var/lib/tablesafe/history.db)" = tablesafe ] || fail "the history database is not the tablesafe user's"

dpkg_locked -r tablesafe >/dev/null
[ ! -e /usr/bin/tablesafe ] || fail "dpkg -r left /usr/bin/tablesafe"
for f in history.db server.key; do
  [ -s "/var/lib/tablesafe/$f" ] || fail "dpkg -r removed /var/lib/tablesafe/$f (the data must stay)"
done
[ -f /etc/tablesafe/tablesafe.toml ] || fail "dpkg -r removed the config file (only --purge may)"
dpkg_locked --purge tablesafe >/dev/null
[ ! -e /etc/tablesafe ] || fail "dpkg --purge left /etc/tablesafe"
[ -s /var/lib/tablesafe/history.db ] || fail "dpkg --purge removed the data (it must say how, not do it)"
purge_all
say ".deb: installed, served, removed (data kept), purged"

# ---------------------------------------------------------------------------------
step "(c) Dockerfile and compose.yaml" "Read the docker error above."
if ! docker info >/dev/null 2>&1; then
  say "docker: no container engine runs here; Dockerfile and compose.yaml not tested"
else
  image="tablesafe-check:$$"
  docker build -t "$image" "$ROOT"
  port=$(free_port)
  password="docker-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')"
  cid="$(TABLESAFE_ADMIN_PASSWORD="$password" docker run -d -e TABLESAFE_ADMIN_PASSWORD -p "127.0.0.1:$port:3000" "$image")"
  deadline=$((SECONDS + 120))
  until [ "$(docker inspect -f '{{.State.Health.Status}}' "$cid")" = healthy ]; do
    [ $SECONDS -lt $deadline ] || { docker logs "$cid" >&2; docker rm -f "$cid" >/dev/null; fail "the container did not become healthy (HEALTHCHECK) in 120 s"; }
    sleep 1
  done
  [ "$(docker exec "$cid" id -u)" != 0 ] || { docker rm -f "$cid" >/dev/null; fail "the container runs as root"; }
  (cd "$ROOT/end2end" && TABLESAFE_E2E_BASE_URL="http://127.0.0.1:$port/" TABLESAFE_E2E_ADMIN_PASSWORD="$password" \
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npx playwright test tests/login.spec.ts -g "admin logs in" --project desktop \
    --output "$work/pw-docker") || { docker rm -f "$cid" >/dev/null; fail "login through the container failed"; }
  docker rm -f "$cid" >/dev/null
  docker rmi "$image" >/dev/null
  # compose.yaml: valid, and its services come up healthy with the PostgreSQL history.
  env_file="$work/compose.env"
  printf 'POSTGRES_PASSWORD=%s\nTABLESAFE_ADMIN_PASSWORD=%s\n' "pg-$$-$RANDOM" "$password" >"$env_file"
  project="tablesafe-check-$$"
  compose=(docker compose -p "$project" -f "$ROOT/compose.yaml" --env-file "$env_file")
  "${compose[@]}" config -q
  TABLESAFE_PORT="$port" "${compose[@]}" up -d --build --wait \
    || { "${compose[@]}" logs >&2; "${compose[@]}" down -v; fail "compose.yaml did not come up healthy"; }
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { "${compose[@]}" down -v; fail "compose: no /healthz"; }
  "${compose[@]}" down -v
  say "docker: image and compose.yaml tested"
fi

say "packages checked in $((SECONDS - t_start)) s"
