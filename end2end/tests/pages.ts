// Page objects: what a user sees and does, by role and label.
import { expect, type Page } from "@playwright/test";

export const ADMIN_PASSWORD = () => process.env.TABLESAFE_E2E_ADMIN_PASSWORD!;

/** Waits until the wasm bundle has hydrated the page (set by frontend/src/lib.rs). */
export async function hydrated(page: Page) {
  await page.locator("body[data-hydrated]").waitFor();
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

import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
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
