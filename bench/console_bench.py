#!/usr/bin/env python3
"""Console list calls under load (benchmark S8).

Starts `tablesafe serve` (release build) on a temp data dir and a free loopback port,
with its history in SQLite (the default) and then in a PostgreSQL of its own (initdb on
a temp dir), fills the history in SQL (one statement per table, generated rows: no API
call per row) with JOBS jobs, SNAPS snapshots and AUDIT audit entries (default 1 M,
1 M and 5 M) over 10 sources, 3 targets and 50 policies (schedules, late alerts,
continuous capture, copies), plus restore requests, drills and notification deliveries,
logs in, and for every list call the console's pages and `/api/v1` make runs `wrk`
(installed from apt if missing) with C open connections (default 50) for SECS seconds
(default 5). Prints requests/s and the p50/p90/p99 latency wrk measured. Goal S8: every
p99 <= 50 ms.

    bench/console_bench.py                       # both histories, S8 scale
    HISTORY=sqlite JOBS=100000 SNAPS=100000 AUDIT=100000 bench/console_bench.py
    ONLY=policies,dashboard SECS=3 bench/console_bench.py
    TS=/tmp/tablesafe-copy bench/console_bench.py   # time a copy of the binary
    RECORD=1 bench/console_bench.py              # also bench/record.py S8 (both histories)
"""
import http.client, json, os, shutil, signal, socket, sqlite3
import subprocess, sys, tempfile, time, urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = int(os.environ.get("JOBS", 1_000_000))
SNAPS = int(os.environ.get("SNAPS", 1_000_000))
AUDIT = int(os.environ.get("AUDIT", 5_000_000))
C = int(os.environ.get("C", 50))
SECS = int(os.environ.get("SECS", 5))
HISTORIES = os.environ.get("HISTORY", "sqlite,postgres").split(",")
ONLY = [s for s in os.environ.get("ONLY", "").split(",") if s]
BIN = os.environ.get("TS") or os.path.join(ROOT, "target", "release", "tablesafe")
PASSWORD = "bench admin password"
POLICIES, SOURCES, TARGETS = 50, 10, 3
# Smaller tables: one row per this many jobs.
SIDE = 50


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait(port, proc):
    for _ in range(1200):
        if proc.poll() is not None:
            sys.exit("tablesafe exited at start (see its log)")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("tablesafe did not start")


def fill_sql(engine, now):
    """The statements that fill a migrated, empty history (admin is user 1)."""
    if engine == "sqlite":
        def rows(n, cols, select):
            return f"{cols} WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT {select} FROM s"
        hexid = "printf('%064x', i)"
    else:
        def rows(n, cols, select):
            return f"{cols} SELECT {select} FROM generate_series(1::bigint, {n}::bigint) AS s(i)"
        hexid = "lpad(to_hex(i), 64, '0')"
    # A well-mixed number in 0..99 for row i (not in step with the policy, i % 50).
    mix = "((i * 7919 + i / 100) % 100)"
    pol = f"(i % {POLICIES} + 1)"
    src = f"((i % {POLICIES}) % {SOURCES} + 1)"
    tgt = f"((i % {POLICIES}) % {TARGETS} + 1)"
    out = []
    for u in range(2, 12):
        role = ["operator", "requester", "auditor"][u % 3]
        out.append(f"INSERT INTO users (username, password_hash, role, created_at) VALUES ('user{u}', 'x', '{role}', {now})")
    for s in range(1, SOURCES + 1):
        out.append(f"INSERT INTO sources (name, engine, display_url, sealed_url, created_at) VALUES ('source {s:02}', 'sqlite', 'sqlite:///srv/{s}.db', 'x', {now})")
    for t in range(1, TARGETS + 1):
        out.append(f"INSERT INTO targets (name, kind, location, sealed_password, created_at) VALUES ('target {t}', 'local', '/nonexistent/{t}', 'x', {now})")
    for p in range(1, POLICIES + 1):
        # Schedules (one run a day from now on: the scheduler starts nothing during the
        # bench), own late alerts, on demand; some with continuous capture.
        schedule = ["hourly", "daily", "", "0 3 * * *", "*/15 * * * *"][p % 5]
        rpo = ["NULL", "NULL", "120", "0", "NULL"][p % 5]
        capture = "60" if p % 7 == 0 else "NULL"
        out.append(
            "INSERT INTO policies (name, source_id, target_id, selection, schedule, timezone, enabled, created_at, next_run_at, rpo_minutes, capture_secs, retention) "
            f"VALUES ('policy {p:02}', {(p - 1) % SOURCES + 1}, {(p - 1) % TARGETS + 1}, '{{\"include\":[\"orders\"],\"exclude\":[],\"columns\":{{}}}}', "
            f"'{schedule}', 'UTC', {0 if p % 11 == 0 else 1}, {now - 400 * 86_400_000}, {now + 86_400_000 if schedule else 'NULL'}, {rpo}, {capture}, '')"
        )
        if p % 7 == 0:
            out.append(f"INSERT INTO captures (policy_id, covers_until_ms, updated_at) VALUES ({p}, {now - 5000}, {now})")
        if p % 4 == 0:
            out.append(f"INSERT INTO policy_copy_targets (policy_id, target_id) VALUES ({p}, {p % TARGETS + 1})")
    for s in range(1, SOURCES + 1, 2):
        out.append(f"INSERT INTO source_grants (source_id, user_id) VALUES ({s}, 3)")
    # Jobs: mostly backups of the policies, every 30 s over a year; 90 % succeeded.
    kind = f"CASE WHEN {mix} < 85 THEN 'backup' WHEN {mix} < 92 THEN 'verify' WHEN {mix} < 95 THEN 'restore' WHEN {mix} < 99 THEN 'prune' ELSE 'drill' END"
    status = f"CASE WHEN (i * 31) % 100 < 90 THEN 'succeeded' WHEN (i * 31) % 100 < 98 THEN 'failed' ELSE 'cancelled' END"
    created = f"({now} - ({JOBS} - i) * 30000)"
    out.append(rows(
        JOBS,
        "INSERT INTO jobs (kind, status, policy_id, source_id, target_id, params, title, created_by, created_at, started_at, finished_at, rows_done, bytes_done, error)",
        f"{kind}, {status}, CASE WHEN {mix} < 85 OR {mix} >= 95 THEN {pol} END, {src}, {tgt}, '{{}}', 'Backup of source to target', "
        f"CASE WHEN i % 10 = 0 THEN 1 END, {created}, {created} + 1000, {created} + 1000 + (i % 5000), 1000, 100000, "
        f"CASE WHEN (i * 31) % 100 >= 90 THEN 'connection refused' END",
    ))
    # Snapshots: one per policy run, every 30 s; a copy for 1 in 20.
    out.append(rows(
        SNAPS,
        "INSERT INTO snapshots (target_id, snapshot_id, policy_id, source_id, job_id, time_ms, table_count, row_count, bytes, bytes_stored, duration_ms, details, verified_at, verify_ok, copy_of)",
        f"CASE WHEN i % 20 = 0 THEN ({tgt} % {TARGETS}) + 1 ELSE {tgt} END, {hexid}, {pol}, {src}, i, {now} - ({SNAPS} - i) * 30000, 3, 1000, 100000, 5000, 5000, "
        f"'[{{\"name\":\"orders\",\"rows\":1000,\"bytes\":100000}}]', CASE WHEN i % 3 = 0 THEN {now} END, CASE WHEN i % 3 = 0 THEN 1 END, "
        f"CASE WHEN i % 20 = 0 THEN i - 1 END",
    ))
    # Audit entries are hash-chained; the bench only reads them, so any chain will do.
    action = f"CASE WHEN {mix} < 40 THEN 'policy.list' WHEN {mix} < 70 THEN 'login' WHEN {mix} < 85 THEN 'policy.run' WHEN {mix} < 95 THEN 'restore.start' ELSE 'user.create' END"
    outcome = f"CASE WHEN (i * 13) % 100 < 95 THEN 'ok' WHEN (i * 13) % 100 < 98 THEN 'denied' ELSE 'failed' END"
    out.append(rows(
        AUDIT,
        "INSERT INTO audit_log (at, user_id, username, address, action, target, outcome, detail, prev_hash, hash)",
        f"{now} - ({AUDIT} - i) * 6000, i % 11 + 1, CASE WHEN i % 11 = 0 THEN 'admin' ELSE 'user' || (i % 11 + 1) END, '127.0.0.1', {action}, "
        f"'policy #' || {pol}, {outcome}, '', 'p' || i, 'h' || i",
    ))
    n = max(JOBS // SIDE, 1)
    out.append(rows(
        n,
        "INSERT INTO restore_requests (status, source_id, dest_source_id, snapshot, params, version_hash, reason, title, approvals_required, requested_by, created_at, updated_at, expires_at, decided_by, decided_at)",
        f"CASE WHEN i % 10 = 0 THEN 'requested' WHEN i % 10 < 7 THEN 'approved' WHEN i % 10 < 9 THEN 'rejected' ELSE 'cancelled' END, {src}, {src}, i, '{{\"snapshot\":' || i || ',\"dest_source_id\":1,\"tables\":[\"orders\"],\"mode\":\"create\"}}', 'v' || i, 'incident', "
        f"'Restore orders', 1, CASE WHEN i % 2 = 0 THEN 1 ELSE 3 END, {now} - ({n} - i) * 600000, {now} - ({n} - i) * 600000, {now} + 86400000, NULL, NULL",
    ))
    out.append(rows(
        n,
        "INSERT INTO drills (policy_id, policy_name, job_id, target_id, snapshot_id, snapshot_time, started_at, duration_ms, table_count, row_count, passed, report)",
        f"{pol}, 'policy', i, {tgt}, {hexid}, {now} - ({n} - i) * 600000, {now} - ({n} - i) * 600000, 3000, 3, 1000, CASE WHEN i % 10 = 0 THEN 0 ELSE 1 END, '{{}}'",
    ))
    out.append(f"INSERT INTO notify_channels (name, kind, summary, sealed_config, events, created_at) VALUES ('ops hook', 'webhook', 'https://hooks.example/x', 'x', 'backup.failed', {now})")
    out.append(rows(
        n,
        "INSERT INTO notify_outbox (channel_id, event, payload, status, attempts, next_attempt_at, created_at, delivered_at, last_error)",
        f"1, 'backup.failed', '{{}}', CASE WHEN i % 30 = 0 THEN 'failed' ELSE 'delivered' END, 1, {now} - ({n} - i) * 600000, {now} - ({n} - i) * 600000, "
        f"CASE WHEN i % 30 = 0 THEN NULL ELSE {now} - ({n} - i) * 600000 END, CASE WHEN i % 30 = 0 THEN 'HTTP 500' END",
    ))
    return out


def fill_sqlite(db, now):
    c = sqlite3.connect(db)
    c.execute("BEGIN")
    for stmt in fill_sql("sqlite", now):
        c.execute(stmt)
    c.commit()
    c.execute("ANALYZE")
    c.close()


def fill_postgres(url, now):
    sql = "BEGIN;\n" + ";\n".join(fill_sql("postgres", now)) + ";\nCOMMIT;\nVACUUM ANALYZE;\n"
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url], input=sql, text=True, check=True)


class Postgres:
    """A PostgreSQL of the bench's own on a temp dir and a free loopback port."""

    def __init__(self, work):
        pgbin = sorted(os.listdir("/usr/lib/postgresql"), key=lambda v: [int(x) for x in v.split(".")])[-1]
        self.bin = f"/usr/lib/postgresql/{pgbin}/bin"
        self.dir = os.path.join(work, "pg")
        self.port = free_port()
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        if os.getuid() == 0:
            shutil.chown(work, "postgres")
        subprocess.run(self.as_pg + [f"{self.bin}/initdb", "-D", self.dir, "-U", "postgres", "--auth=trust"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(self.as_pg + [f"{self.bin}/pg_ctl", "-D", self.dir, "-l", os.path.join(work, "pg.log"), "-w", "-o",
                                     f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={work} "
                                     "-c fsync=off -c max_connections=200 -c shared_buffers=256MB", "start"],
                       check=True, stdout=subprocess.DEVNULL)
        base = f"postgres://postgres@127.0.0.1:{self.port}"
        subprocess.run(["psql", "-X", "-q", base + "/postgres", "-c", "CREATE DATABASE history"], check=True)
        self.url = base + "/history"

    def stop(self):
        subprocess.run(self.as_pg + [f"{self.bin}/pg_ctl", "-D", self.dir, "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def calls():
    """(name, method, path, body kind, arguments): every list call of the console's pages
    and of /api/v1 ("v1" calls use the API token)."""
    mid = JOBS // 2
    return [
        ("policies", "POST", "policies/list", "form", {}),
        ("jobs", "POST", "jobs/list", "form", {}),
        ("jobs failed", "POST", "jobs/list", "form", {"status": "failed"}),
        ("jobs page mid", "POST", "jobs/list", "form", {"before": str(mid)}),
        ("jobs failed mid", "POST", "jobs/list", "form", {"status": "failed", "before": str(mid)}),
        ("snapshots", "POST", "snapshots/list", "json", {"policy_id": 0, "source_id": 0, "before": None}),
        ("snapshots policy", "POST", "snapshots/list", "json", {"policy_id": 7, "source_id": 0, "before": None}),
        ("snapshots source", "POST", "snapshots/list", "json", {"policy_id": 0, "source_id": 3, "before": None}),
        ("snapshots page mid", "POST", "snapshots/list", "json", {"policy_id": 0, "source_id": 0, "before": [int(time.time() * 1000) - SNAPS // 2 * 30000, SNAPS // 2]}),
        ("audit", "POST", "audit/list", "form", {"user": "", "action": "", "outcome": ""}),
        ("audit filtered", "POST", "audit/list", "form", {"user": "adm", "action": "policy.", "outcome": "ok"}),
        ("audit rare", "POST", "audit/list", "form", {"user": "", "action": "user.", "outcome": "failed"}),
        ("audit none", "POST", "audit/list", "form", {"user": "nobody", "action": "", "outcome": ""}),
        ("audit page mid", "POST", "audit/list", "form", {"user": "", "action": "", "outcome": "", "before": str(AUDIT // 2)}),
        ("dashboard", "POST", "dashboard_data", "form", {}),
        ("sources", "POST", "sources/list", "form", {}),
        ("targets", "POST", "targets/list", "form", {}),
        ("requests", "POST", "requests/list", "form", {"state": "", "mine": "false"}),
        ("requests pending", "POST", "requests/list", "form", {"state": "requested", "mine": "false"}),
        ("requests badge", "POST", "requests/pending_for_me", "form", {}),
        ("drills", "POST", "drills/list", "form", {}),
        ("drill plans", "POST", "drills/plans", "form", {}),
        ("drills proven", "POST", "drills/proven", "form", {}),
        ("channels", "POST", "notify/channels", "form", {}),
        ("deliveries", "POST", "notify/deliveries", "form", {"status": "", "channel": "0"}),
        ("deliveries failed", "POST", "notify/deliveries", "form", {"status": "failed", "channel": "0"}),
        ("users", "POST", "users/list", "form", {}),
        ("tokens", "POST", "tokens/list", "form", {}),
        ("v1 policies", "GET", "v1/policies", "v1", None),
        ("v1 jobs", "GET", "v1/jobs?status=failed", "v1", None),
        ("v1 snapshots", "GET", "v1/snapshots?policy_id=7", "v1", None),
    ]


def post(port, cookie, path, fields):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://127.0.0.1:{port}"}
    if cookie:
        headers["Cookie"] = cookie
    conn.request("POST", path, urllib.parse.urlencode(fields), headers)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        sys.exit(f"{path}: HTTP {resp.status}: {body[:300]!r}")
    return resp, body


def run_calls(port, work, label):
    resp, _ = post(port, None, "/api/login", {"username": "admin", "password": PASSWORD})
    cookie = resp.getheader("Set-Cookie").split(";")[0]
    _, token = post(port, cookie, "/api/tokens/create", {"name": "bench", "role": "", "days": "30"})
    token = json.loads(token)
    results = []
    for name, method, path, kind, args in calls():
        if ONLY and not any(o in name for o in ONLY):
            continue
        headers = {}
        body = None
        if kind == "v1":
            headers["Authorization"] = f"Bearer {token}"
        else:
            if kind == "json":
                body, headers["Content-Type"] = json.dumps(args), "application/json"
            else:
                body = urllib.parse.urlencode(args)
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Cookie"] = cookie
            headers["Origin"] = f"http://127.0.0.1:{port}"
        # One call first: it must answer 200 (a bench of error pages measures nothing).
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request(method, f"/api/{path}", body, headers)
        r = conn.getresponse()
        first = r.read()
        if r.status != 200:
            sys.exit(f"{name}: HTTP {r.status}: {first[:300]!r}")
        script = os.path.join(work, "call.lua")
        with open(script, "w") as f:
            f.write(f'wrk.method = "{method}"\n')
            if body is not None:
                f.write(f"wrk.body = {json.dumps(body)}\n")
            for k, v in headers.items():
                f.write(f'wrk.headers["{k}"] = {json.dumps(v)}\n')
            f.write('done = function(summary, latency, requests)\n'
                    '  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99)))\n'
                    'end\n')
        out = subprocess.run(["wrk", "-t2", f"-c{C}", f"-d{SECS}s", "--timeout", "30s", "-s", script, f"http://127.0.0.1:{port}/api/{path}"],
                             capture_output=True, text=True, check=True).stdout
        line = next(l for l in out.splitlines() if l.startswith("RESULT"))
        reqs, errs, dur_us, p50, p90, p99 = map(int, line.split()[1:])
        if errs:
            sys.exit(f"{name}: {errs} failed requests\n{out}")
        rps = reqs / (dur_us / 1e6)
        results.append((name, rps, p50 / 1000, p90 / 1000, p99 / 1000, len(first)))
        print(f"{label:8} {name:20} {rps:7.0f} {p50 / 1000:8.1f} {p90 / 1000:8.1f} {p99 / 1000:8.1f} {len(first):8}", flush=True)
    return results


def bench(history, work):
    env = dict(os.environ, TABLESAFE_ADMIN_PASSWORD=PASSWORD, TABLESAFE_LOG="warn")
    env.pop("TABLESAFE_DATABASE_URL", None)
    data = os.path.join(work, f"data-{history}")
    port = free_port()
    args = [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data]
    pg = None
    log = open(os.path.join(work, f"serve-{history}.log"), "w")
    server = None
    try:
        if history == "postgres":
            pg = Postgres(work)
            env["TABLESAFE_DATABASE_URL"] = pg.url
        # The first start migrates; the history is filled while the server is down.
        server = subprocess.Popen(args, env=env, stdout=log, stderr=log)
        wait(port, server)
        server.send_signal(signal.SIGTERM)
        server.wait()
        t = time.time()
        now = int(time.time() * 1000)
        if pg:
            fill_postgres(pg.url, now)
        else:
            fill_sqlite(os.path.join(data, "history.db"), now)
        print(f"{history}: filled the history with {JOBS} jobs, {SNAPS} snapshots, {AUDIT} audit entries in {time.time() - t:.1f} s", file=sys.stderr, flush=True)
        server = subprocess.Popen(args, env=env, stdout=log, stderr=log)
        wait(port, server)
        return run_calls(port, work, history)
    finally:
        if server and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait()
        if pg:
            pg.stop()


def main():
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release", "-p", "server"], cwd=ROOT, check=True)
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="tablesafe-console-bench-")
    print(f"tablesafe console bench: {JOBS} jobs, {SNAPS} snapshots, {AUDIT} audit entries; wrk with {C} connections for {SECS} s per call; {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}")
    print(f"{'history':8} {'call':20} {'req/s':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'bytes':>8}")
    all_results = {}
    try:
        for history in HISTORIES:
            all_results[history] = bench(history, work)
    finally:
        if os.environ.get("KEEP"):
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    worst = max((r[4], h, r[0]) for h, rs in all_results.items() for r in rs)
    print(f"worst p99: {worst[0]:.1f} ms ({worst[1]}, {worst[2]})  [goal <= 50 ms]; load after: {os.getloadavg()[0]:.2f}")
    if os.environ.get("RECORD"):
        cmd = [sys.executable, os.path.join(ROOT, "bench", "record.py"), "S8", "--workload",
               f"console history with {JOBS} jobs, {SNAPS} snapshots, {AUDIT} audit entries; {C} clients (wrk), {SECS} s per call"]
        for h, rs in all_results.items():
            for name, rps, _p50, _p90, p99, _ in rs:
                cmd += ["--measure", f"{h} {name} p99_ms", f"{p99:.1f}", "50", "1.0"]
            cmd += ["--extra", f"{h}_min_requests_per_s={min(r[1] for r in rs):.0f}"]
        cmd += ["--note", f"p99 of each list call vs the 50 ms goal (ratio <= 1 meets it); load average at the end {os.getloadavg()[0]:.2f}"]
        subprocess.run(cmd, check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
