#!/usr/bin/env bash
# The console behind a real nginx (from apt), as users put it there, with the browser
# smoke test (end2end/tests/smoke.spec.ts: log in, a backup, the live job page, the
# snapshot) run through nginx's port each time:
#  1. nginx's default `location / { proxy_pass http://127.0.0.1:PORT; }`, which rewrites
#     Host, and no --public-url (logging in used to be refused as cross-site);
#  2. under a path prefix, the proxy passing the path through:
#     `location /tablesafe/ { proxy_pass http://127.0.0.1:PORT; }` with
#     --public-url http://127.0.0.1:NGINX_PORT/tablesafe/;
#  3. the same prefix with a proxy that strips it: `proxy_pass http://127.0.0.1:PORT/;`.
# Each round also checks with curl that a foreign page's POST is still refused (403,
# JSON), that the REST API answers through the proxy, and (rounds 2 and 3) that the
# browser asked nginx for nothing outside the prefix (its access log has no 404).
#
# Usage: scripts/check_proxy.sh BIN SITE_DIR
#   BIN: the tablesafe binary (target/release/tablesafe); SITE_DIR: its browser files
#   (target/site). Each round has its own data directory, console port and nginx (own
#   config, pid file, logs and temp paths under a temporary directory, loopback only);
#   every process is stopped by its PID when the script ends.
source "$(dirname "$0")/lib.sh"

if [ $# -ne 2 ]; then
  echo "usage: $0 BIN SITE_DIR (e.g. $0 target/release/tablesafe target/site)" >&2
  exit 2
fi
bin="$(realpath "$1")"
site="$(realpath "$2")"
[ -x "$bin" ] || { echo "$bin is not an executable tablesafe binary: run build_release first" >&2; exit 1; }
[ -f "$site/pkg/tablesafe.js" ] || { echo "$site has no pkg/tablesafe.js: run build_release first" >&2; exit 1; }

ensure_nginx
ensure_playwright
ensure_chromium
apt_install curl python3
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
t_start=$SECONDS

work="$(mktemp -d /tmp/tablesafe-proxy-XXXXXX)"
pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  local rc=$?
  stop_all
  rm -rf "$work"
  (exit "$rc") || on_exit
}
trap cleanup EXIT

fail() {
  echo "check_proxy: $*" >&2
  exit 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ok URL PID LOG: polls URL until it answers 2xx; fails with LOG if PID exits first.
wait_ok() {
  local url="$1" pid="$2" log="$3" i
  for i in $(seq 1 600); do
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$log" >&2
      fail "the process serving $url exited"
    fi
    sleep 0.1
  done
  cat "$log" >&2
  fail "$url did not answer within 60 s"
}

password="proxy $(python3 -c 'import secrets; print(secrets.token_hex(8))')"

# start_console DIR [serve flags...]: a console on a free loopback port; sets $console_port.
start_console() {
  local dir="$1"
  shift
  mkdir -p "$dir"
  console_port="$(free_port)"
  TABLESAFE_ADMIN_PASSWORD="$password" TABLESAFE_LOG=info NO_COLOR=1 \
    "$bin" serve --listen "127.0.0.1:$console_port" --data-dir "$dir/data" \
    --site-root "$site" "$@" >"$dir/console.log" 2>&1 &
  pids+=($!)
  wait_ok "http://127.0.0.1:$console_port/healthz" "$!" "$dir/console.log"
}

# start_nginx DIR PORT LOCATION_BLOCK HEALTH_URL: nginx in the foreground (its PID is
# the master's), everything it writes under DIR.
start_nginx() {
  local dir="$1" port="$2" location="$3" health="$4"
  mkdir -p "$dir/logs" "$dir/tmp"
  local user=""
  # As root the workers would switch to `nobody`, who cannot read DIR.
  [ "$(id -u)" = 0 ] && user="user root;"
  cat >"$dir/nginx.conf" <<EOF
$user
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 256; }
http {
  access_log $dir/logs/access.log;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  server {
    listen 127.0.0.1:$port;
    $location
  }
}
EOF
  "$nginx_bin" -t -q -c "$dir/nginx.conf" -p "$dir" -e "$dir/logs/error.log" \
    || fail "nginx refused its config $dir/nginx.conf"
  "$nginx_bin" -c "$dir/nginx.conf" -p "$dir" -e "$dir/logs/error.log" >"$dir/logs/stdout.log" 2>&1 &
  pids+=($!)
  wait_ok "$health" "$!" "$dir/logs/error.log"
}

# smoke BASE_URL ROUND: the browser smoke test through BASE_URL (ending in "/").
smoke() {
  local base="$1" round="$2"
  say "smoke test through nginx: $base"
  (cd "$ROOT/end2end" && TABLESAFE_E2E_BASE_URL="$base" TABLESAFE_E2E_ADMIN_PASSWORD="$password" \
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npx playwright test tests/smoke.spec.ts --output "$work/pw-$round") \
    || fail "round $round: the smoke test failed through nginx at $base (the console's log: $work/$round/console.log is removed at exit; rerun with the same flags to look)"
}

# curl_check ROUND NAME EXPECTED_STATUS URL [curl args...]: the status and a JSON
# {"error": …} body (an answer from the console, not an nginx error page).
curl_check() {
  local round="$1" name="$2" expected="$3" url="$4"
  shift 4
  local body="$work/$round/curl.out" status
  status="$(curl -sS -o "$body" -w '%{http_code}' "$@" "$url")"
  [ "$status" = "$expected" ] || fail "round $round, $name: $url answered $status, expected $expected: $(head -c 300 "$body")"
  grep -q '"error"' "$body" || fail "round $round, $name: $url answered without a JSON error: $(head -c 300 "$body")"
}

# checks ROUND BASE_URL: what curl can see through the proxy.
checks() {
  local round="$1" base="$2"
  # A foreign page's login attempt is refused, with what to do.
  curl_check "$round" "a cross-site POST" 403 "${base}api/login" -X POST \
    -H 'Origin: http://evil.example' -H 'Sec-Fetch-Site: cross-site' \
    -H 'Content-Type: application/x-www-form-urlencoded' --data 'username=admin&password=x'
  # One without Sec-Fetch-Site whose Origin nothing vouches for is told to set --public-url.
  if [ "$round" = root ]; then
    curl_check "$round" "a POST from an unknown origin" 403 "${base}api/login" -X POST \
      -H 'Origin: http://evil.example' \
      -H 'Content-Type: application/x-www-form-urlencoded' --data 'username=admin&password=x'
    grep -q -- '--public-url' "$work/$round/curl.out" || fail "round $round: the refusal does not say to set --public-url: $(cat "$work/$round/curl.out")"
  fi
  # The REST API answers through the proxy (401 without a token, in its error shape).
  curl_check "$round" "the REST API" 401 "${base}api/v1/policies"
  # A page without a session is sent to the login page under the prefix.
  local location
  location="$(curl -sS -o /dev/null -w '%{redirect_url}' "${base}jobs")"
  [ "$location" = "${base}login" ] || fail "round $round: ${base}jobs redirected to '$location', expected ${base}login"
}

# no_404 ROUND: the browser asked nginx for nothing it could not serve (a link, asset or
# server function outside the prefix would be a 404 from nginx itself).
no_404() {
  local round="$1" log="$work/$round/nginx/logs/access.log"
  [ -s "$log" ] || fail "round $round: nginx logged no requests in $log"
  if awk '$9 == 404' "$log" | grep -q .; then
    awk '$9 == 404' "$log" >&2
    fail "round $round: requests above got 404 through nginx (outside the prefix?)"
  fi
  say "round $round: $(wc -l <"$log") requests through nginx, none outside the prefix"
}

# 1. nginx's default: Host rewritten to the upstream's, no --public-url.
step "round 1: nginx's default proxy_pass (Host rewritten), no --public-url" \
  "The smoke test's output above says which step failed through the proxy."
round=root
start_console "$work/$round"
nginx_port="$(free_port)"
start_nginx "$work/$round/nginx" "$nginx_port" \
  "location / { proxy_pass http://127.0.0.1:$console_port; }" \
  "http://127.0.0.1:$nginx_port/healthz"
checks "$round" "http://127.0.0.1:$nginx_port/"
smoke "http://127.0.0.1:$nginx_port/" "$round"
stop_all

# 2. and 3. Under /tablesafe/, the path passed through and stripped.
for round in prefix-passed prefix-stripped; do
  if [ "$round" = prefix-passed ]; then
    upstream_path=""
  else
    upstream_path="/"
  fi
  step "round $round: under /tablesafe/ behind nginx (proxy_pass http://127.0.0.1:PORT$upstream_path)" \
    "The smoke test's output above says which step failed through the proxy."
  nginx_port="$(free_port)"
  public="http://127.0.0.1:$nginx_port/tablesafe/"
  start_console "$work/$round" --public-url "$public"
  start_nginx "$work/$round/nginx" "$nginx_port" \
    "location /tablesafe/ { proxy_pass http://127.0.0.1:$console_port$upstream_path; }" \
    "${public}healthz"
  # The console is still reachable directly, without the prefix (health checks,
  # an admin on the host).
  curl -fsS -o /dev/null "http://127.0.0.1:$console_port/healthz" || fail "round $round: /healthz without the prefix"
  # The browser's files under the prefix.
  curl -fsS -o /dev/null "${public}pkg/tablesafe.js" || fail "round $round: ${public}pkg/tablesafe.js"
  page="$(curl -fsS "${public}login")"
  grep -q 'href="/tablesafe/pkg/tablesafe.css"' <<<"$page" || fail "round $round: the login page does not load the stylesheet under the prefix"
  checks "$round" "$public"
  smoke "$public" "$round"
  no_404 "$round"
  stop_all
done

say "check_proxy: the console works behind nginx at the root and under /tablesafe/ (path passed and stripped) in $((SECONDS - t_start)) s"
