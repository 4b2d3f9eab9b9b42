#!/usr/bin/env python3
"""Console list pages under load.

Starts `tablesafe serve` (release build) on a temp data dir and a free loopback port,
fills its SQLite history with N jobs, N snapshots and N audit entries (default 100,000
each), logs in, and for each list server function the pages use runs `wrk` (installed
from apt if missing) with C open connections (default 50) for SECS seconds (default 5).
Prints requests/s and the p50/p90/p99 latency wrk measured. Goal: p99 <= 50 ms.

    bench/console_bench.py
    N=20000 C=20 SECS=3 bench/console_bench.py
"""
import http.client, json, os, random, shutil, signal, socket, sqlite3
import subprocess, sys, tempfile, time, urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = int(os.environ.get("N", 100_000))
C = int(os.environ.get("C", 50))
SECS = int(os.environ.get("SECS", 5))
BIN = os.path.join(ROOT, "target", "release", "tablesafe")
PASSWORD = "bench admin password"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait(port):
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("tablesafe did not start")


def fill(db):
    c = sqlite3.connect(db)
    now = int(time.time() * 1000)
    c.execute("INSERT INTO sources (name, engine, display_url, sealed_url, created_at) VALUES ('shop', 'sqlite', 'sqlite:///x.db', 'x', ?)", (now,))
    c.execute("INSERT INTO targets (name, kind, location, sealed_password, created_at) VALUES ('disk', 'local', '/nonexistent', 'x', ?)", (now,))
    for p in range(20):
        c.execute("INSERT INTO policies (name, source_id, target_id, selection, created_at) VALUES (?, 1, 1, '{}', ?)", (f"policy {p}", now))
    statuses = ["succeeded"] * 90 + ["failed"] * 8 + ["cancelled"] * 2
    c.executemany(
        "INSERT INTO jobs (kind, status, policy_id, source_id, target_id, params, title, created_by, created_at, started_at, finished_at, rows_done, bytes_done) "
        "VALUES ('backup', ?, ?, 1, 1, '{}', 'Backup: policy', 1, ?, ?, ?, 1000, 100000)",
        ((random.choice(statuses), i % 20 + 1, now - (N - i) * 60_000, now - (N - i) * 60_000, now - (N - i) * 60_000 + 5000) for i in range(N)),
    )
    c.executemany(
        "INSERT INTO snapshots (target_id, snapshot_id, policy_id, source_id, job_id, time_ms, table_count, row_count, bytes, bytes_stored, duration_ms, details) "
        "VALUES (1, ?, ?, 1, ?, ?, 3, 1000, 100000, 5000, 5000, '[]')",
        ((f"{i:064x}", i % 20 + 1, i + 1, now - (N - i) * 60_000) for i in range(N)),
    )
    # Audit entries are hash-chained; the bench only reads them, so any chain will do.
    c.executemany(
        "INSERT INTO audit_log (at, user_id, username, address, action, target, outcome, detail, prev_hash, hash) VALUES (?, 1, 'admin', '127.0.0.1', 'policy.run', 'policy #1', 'ok', '', ?, ?)",
        ((now - (N - i) * 1000, f"p{i}", f"h{i}") for i in range(N)),
    )
    c.commit()
    c.close()


def main():
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release", "-p", "server"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="tablesafe-console-bench-")
    port = free_port()
    env = dict(os.environ, TABLESAFE_ADMIN_PASSWORD=PASSWORD, TABLESAFE_LOG="warn")
    log = open(os.path.join(work, "serve.log"), "w")
    server = None
    try:
        # First start migrates; then the history is filled while the server is down.
        args = [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(work, "data")]
        server = subprocess.Popen(args, env=env, stdout=log, stderr=log)
        wait(port)
        server.send_signal(signal.SIGTERM)
        server.wait()
        t = time.time()
        fill(os.path.join(work, "data", "history.db"))
        print(f"filled the history with {N} jobs, {N} snapshots, {N} audit entries in {time.time() - t:.1f} s", file=sys.stderr)
        server = subprocess.Popen(args, env=env, stdout=log, stderr=log)
        wait(port)

        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("POST", "/api/login", urllib.parse.urlencode({"username": "admin", "password": PASSWORD}),
                     {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://127.0.0.1:{port}"})
        resp = conn.getresponse()
        resp.read()
        cookie = resp.getheader("Set-Cookie").split(";")[0]

        calls = [
            ("jobs/list (newest)", "form", "jobs/list", {}),
            ("jobs/list (failed only)", "form", "jobs/list", {"status": "failed"}),
            ("jobs/list (page 1000)", "form", "jobs/list", {"before": str(N // 2)}),
            ("snapshots/list (newest)", "json", "snapshots/list", {"policy_id": 0, "source_id": 0, "before": None}),
            ("snapshots/list (one policy)", "json", "snapshots/list", {"policy_id": 7, "source_id": 0, "before": None}),
            ("audit/list (newest)", "form", "audit/list", {"user": "", "action": "", "outcome": ""}),
            ("audit/list (filtered)", "form", "audit/list", {"user": "adm", "action": "policy.", "outcome": "ok"}),
            ("dashboard_data", "form", "dashboard_data", {}),
            ("policies/list", "form", "policies/list", {}),
        ]
        if not shutil.which("wrk"):
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
        print(f"\ntablesafe console bench: {N} jobs, {N} snapshots, {N} audit entries; wrk with {C} connections for {SECS} s per call; {os.cpu_count()} cores")
        print(f"{'call':30} {'req/s':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
        worst = 0.0
        for name, kind, endpoint, args in calls:
            if kind == "json":
                body, ctype = json.dumps(args), "application/json"
            else:
                body, ctype = urllib.parse.urlencode(args), "application/x-www-form-urlencoded"
            script = os.path.join(work, "call.lua")
            with open(script, "w") as f:
                f.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                        f'wrk.headers["Content-Type"] = "{ctype}"\nwrk.headers["Cookie"] = "{cookie}"\n'
                        f'wrk.headers["Origin"] = "http://127.0.0.1:{port}"\n'
                        'done = function(summary, latency, requests)\n'
                        '  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99)))\n'
                        'end\n')
            out = subprocess.run(["wrk", "-t2", f"-c{C}", f"-d{SECS}s", "-s", script, f"http://127.0.0.1:{port}/api/{endpoint}"],
                                 capture_output=True, text=True, check=True).stdout
            line = next(l for l in out.splitlines() if l.startswith("RESULT"))
            reqs, errs, dur_us, p50, p90, p99 = map(int, line.split()[1:])
            if errs:
                sys.exit(f"{name}: {errs} failed requests\n{out}")
            worst = max(worst, p99 / 1000)
            print(f"{name:30} {reqs / (dur_us / 1e6):7.0f} {p50 / 1000:8.1f} {p90 / 1000:8.1f} {p99 / 1000:8.1f}")
        print(f"worst p99: {worst:.1f} ms  [goal <= 50 ms]")
    finally:
        if server and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
