// A real PostgreSQL for the browser tests: initdb on a temp dir (as the postgres user
// when running as root), a free loopback port, password authentication, and a `shop`
// database with a table. Its URL (with the password) goes to the tests in
// TABLESAFE_E2E_PG; the returned function stops it by its data directory and removes it.
import { execFileSync, execSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export default async function globalSetup() {
  const bin = execSync("ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1").toString().trim();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tablesafe-e2e-pg-"));
  const root = process.getuid?.() === 0;
  const asPg = (cmd: string, args: string[]) =>
    root ? execFileSync("runuser", ["-u", "postgres", "--", cmd, ...args], { stdio: "pipe" }) : execFileSync(cmd, args, { stdio: "pipe" });
  if (root) execFileSync("chown", ["postgres", dir]);
  const password = "e2e-pg-" + Math.random().toString(36).slice(2);
  fs.writeFileSync(path.join(dir, "pw"), password);
  if (root) execFileSync("chown", ["postgres", path.join(dir, "pw")]);
  asPg(path.join(bin, "initdb"), ["-D", path.join(dir, "pg"), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", `--pwfile=${path.join(dir, "pw")}`]);
  const port = await freePort();
  asPg(path.join(bin, "pg_ctl"), [
    "-D", path.join(dir, "pg"), "-l", path.join(dir, "pg.log"), "-w",
    "-o", `-c listen_addresses=127.0.0.1 -c port=${port} -c unix_socket_directories=${dir} -c fsync=off -c wal_level=logical`,
    "start",
  ]);
  const url = `postgres://postgres:${password}@127.0.0.1:${port}`;
  const psql = (db: string, sql: string) => execFileSync("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", `${url}/${db}`, "-c", sql], { stdio: "pipe" });
  psql("postgres", "CREATE DATABASE shop");
  psql("shop", "CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, total numeric(10,2)); " +
    "INSERT INTO orders (customer, total) SELECT 'customer ' || g, g * 1.5 FROM generate_series(1, 500) g;");
  process.env.TABLESAFE_E2E_PG = `${url}/shop`;
  process.env.TABLESAFE_E2E_PG_PASSWORD = password;
  return async () => {
    try {
      asPg(path.join(bin, "pg_ctl"), ["-D", path.join(dir, "pg"), "-m", "immediate", "stop"]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
}
