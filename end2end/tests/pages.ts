// Page objects: what a user sees and does, by role and label.
import { expect, type Page } from "@playwright/test";

export const ADMIN_PASSWORD = () => process.env.TABLESAFE_E2E_ADMIN_PASSWORD!;

/** Waits until the wasm bundle has hydrated the page (set by frontend/src/lib.rs), and
 * fails if the console's Content-Security-Policy blocked anything on it so far (Chromium
 * logs each blocked script, style or wasm compile as a console error naming the policy). */
export async function hydrated(page: Page) {
  await page.locator("body[data-hydrated]").waitFor();
  const blocked = (await page.consoleMessages())
    .map((m) => m.text())
    .filter((t) => t.includes("Content Security Policy"));
  expect(blocked, blocked.join("\n")).toEqual([]);
}

export class LoginPage {
  constructor(readonly page: Page) {}

  async goto() {
    await this.page.goto("/login");
    await hydrated(this.page);
  }

  form() {
    return this.page.getByRole("form", { name: "Log in" });
  }

  async logIn(user: string, password: string) {
    await this.page.getByLabel("User name").fill(user);
    await this.page.getByLabel("Password").fill(password);
    await this.page.getByRole("button", { name: "Log in" }).click();
  }

  error() {
    return this.page.getByRole("alert");
  }
}

export class Console {
  constructor(readonly page: Page) {}

  nav() {
    return this.page.getByRole("navigation", { name: "Main" });
  }

  heading() {
    return this.page.getByRole("heading", { level: 1 });
  }

  currentUser() {
    return this.page.getByTestId("current-user");
  }

  async logOut() {
    await this.page.getByRole("button", { name: "Log out" }).click();
  }

  async expectDashboard() {
    await expect(this.page).toHaveURL(/\/$/);
    await expect(this.heading()).toHaveText("Dashboard");
    await expect(this.currentUser()).toContainText("admin");
  }
}

export async function sessionCookie(page: Page) {
  const cookies = await page.context().cookies();
  return cookies.find((c) => c.name === "tablesafe_session");
}

export async function logInAsAdmin(page: Page) {
  const login = new LoginPage(page);
  await login.goto();
  await login.logIn("admin", ADMIN_PASSWORD());
  const console = new Console(page);
  await console.expectDashboard();
  await hydrated(page);
  return console;
}

import { execFileSync, spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";

/** A fresh temp directory for files a test needs (SQLite sources, repositories). */
export function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "tablesafe-e2e-files-"));
}

/** Runs SQL on a SQLite file with CPython's sqlite3 (an independent reader). */
export function sqlite(file: string, sql: string): string {
  return execFileSync("python3", [
    "-c",
    "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); r=c.executescript(sys.argv[2]) if ';' in sys.argv[2] else c.execute(sys.argv[2]); print(r.fetchall()); c.commit()",
    file,
    sql,
  ]).toString().trim();
}

/** Runs SQL on the test PostgreSQL (`db` replaces the database of its URL). */
export function psql(sql: string, db = "shop"): string {
  const url = process.env.TABLESAFE_E2E_PG!.replace(/\/shop$/, `/${db}`);
  return execFileSync("psql", ["-X", "-A", "-t", url, "-c", sql]).toString().trim();
}

/** A name no other test (or project) of this run uses. */
export function unique(prefix: string): string {
  return `${prefix}-${Math.random().toString(36).slice(2, 8)}`;
}

export async function logIn(page: Page, user: string, password: string) {
  const login = new LoginPage(page);
  await login.goto();
  await login.logIn(user, password);
  await expect(page).toHaveURL(/\/$/);
  await hydrated(page);
}

/** One request a webhook receiver got. */
export interface Delivery {
  event: string;
  signature: string;
  body: string;
  json: any;
}

/**
 * A webhook receiver on a free loopback port: records every POST and answers 200.
 * `signed(d, secret)` checks `x-tablesafe-signature` as a receiver would.
 */
export async function startWebhookReceiver() {
  const got: Delivery[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      let json: any = null;
      try {
        json = JSON.parse(body);
      } catch {}
      got.push({
        event: String(req.headers["x-tablesafe-event"] ?? ""),
        signature: String(req.headers["x-tablesafe-signature"] ?? ""),
        body,
        json,
      });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    got,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export function signed(d: Delivery, secret: string): boolean {
  const parts = Object.fromEntries(d.signature.split(",").map((p) => p.split("=", 2)));
  const mac = crypto.createHmac("sha256", secret).update(`${parts.t}.${d.body}`).digest("hex");
  return Boolean(parts.t) && mac === parts.v1;
}

/** aiosmtpd on a free loopback port, storing mail in a Maildir; `mail()` reads it. */
export async function startSmtpSink() {
  const port: number = await new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const dir = tempDir();
  const child = spawn("python3", ["-m", "aiosmtpd", "-n", "-l", `127.0.0.1:${port}`, "-c", "aiosmtpd.handlers.Mailbox", path.join(dir, "mail")], {
    stdio: "ignore",
  });
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, "127.0.0.1", () => {
        c.end();
        resolve(true);
      });
      c.on("error", () => resolve(false));
    });
    if (up) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    mail: (): string[] =>
      ["new", "cur"].flatMap((sub) => {
        const d = path.join(dir, "mail", sub);
        return fs.existsSync(d) ? fs.readdirSync(d).map((f) => fs.readFileSync(path.join(d, f), "utf8")) : [];
      }),
    stop: () => child.kill(),
  };
}

/** Fills a form on `where` (labels → values), submits it with `button` and waits for `testId`. */
export async function addThrough(page: Page, where: string, form: string, fields: [string, string][], button: string, testId: string) {
  await page.goto(where);
  await hydrated(page);
  const f = page.getByRole("form", { name: form });
  for (const [label, value] of fields) await f.getByLabel(label).fill(value);
  await f.getByRole("button", { name: button }).click();
  await expect(page.getByTestId(testId)).toBeVisible();
}

/**
 * Through the pages: a source for the SQLite file `db`, a target in `files/repo` and a
 * policy over them (all named from `prefix`), run once; the job must succeed. Returns
 * the policy's name. The page is left on the job.
 */
export async function backedUpPolicy(page: Page, files: string, db: string, prefix: string): Promise<string> {
  const src = unique(`${prefix}-src`);
  const disk = unique(`${prefix}-disk`);
  const policy = unique(prefix);
  await addThrough(page, "/sources", "Add a source", [["Name", src], ["Connection URL", `sqlite://${db}`]], "Add source", `source-${src}`);
  await addThrough(page, "/targets", "Add a target", [["Name", disk], ["Location", path.join(files, "repo")], ["Repository password", "a repository password"], ["Repeat password", "a repository password"]], "Add target", `target-${disk}`);
  await page.goto("/policies");
  await hydrated(page);
  const form = page.getByRole("form", { name: "Create a policy" });
  await form.getByLabel("Name").fill(policy);
  await form.getByLabel("Source").selectOption({ label: src });
  await form.getByLabel("Target", { exact: true }).selectOption({ label: disk });
  await form.getByRole("button", { name: "Create policy" }).click();
  await page.getByTestId(`policy-${policy}`).getByRole("button", { name: "Run now" }).click();
  await expect(page.getByTestId("job-status")).toHaveText("succeeded", { timeout: 30_000 });
  return policy;
}
