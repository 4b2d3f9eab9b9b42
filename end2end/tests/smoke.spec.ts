// Smoke: the shortest path a new user takes, run against any console — the one
// Playwright starts, the installed package, or one behind a reverse proxy, possibly
// under a path prefix (TABLESAFE_E2E_BASE_URL ending in "/tablesafe/"). An admin logs
// in, adds a SQLite source, a local target and a policy, runs a backup, watches the live
// job page finish and finds the snapshot in Backups.
//
// Every URL here is RELATIVE ("login", not "/login") so it resolves under the base URL's
// prefix, and after every navigation the page must still be under that prefix: a link,
// redirect or form that forgot the prefix would leave it (and land on the proxy's 404).
import { expect, test, type Page } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { ADMIN_PASSWORD, hydrated, sqlite, tempDir, unique } from "./pages";

/** The base URL's path, always ending in "/" ("/" without a prefix). */
function prefix(baseURL: string | undefined): string {
  const p = new URL(baseURL ?? "http://x/").pathname;
  return p.endsWith("/") ? p : p + "/";
}

/** Asserts the page is at `rest` (a regex source, relative to the prefix) under the prefix. */
async function expectAt(page: Page, base: string, rest: string) {
  const escaped = base.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  await expect(page).toHaveURL(new RegExp(`^https?://[^/]+${escaped}${rest}(\\?.*)?$`));
}

test("through any front door: log in, back up a SQLite database, watch the job, see the snapshot", async ({ page, baseURL }) => {
  const base = prefix(baseURL);
  // The console may run as another user (the package's `tablesafe`): it must read the
  // database and write the repository.
  const files = tempDir();
  fs.chmodSync(files, 0o755);
  const db = path.join(files, "smoke.db");
  sqlite(db, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL); INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three');");
  fs.chmodSync(db, 0o644);
  const repo = path.join(files, "repo");
  fs.mkdirSync(repo);
  fs.chmodSync(repo, 0o777);
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));

  // A protected page sends you to the login page, under the prefix.
  await page.goto("./");
  await expectAt(page, base, "login");
  await hydrated(page);
  await page.getByLabel("User name").fill("admin");
  await page.getByLabel("Password").fill(ADMIN_PASSWORD());
  await page.getByRole("button", { name: "Log in" }).click();
  await expectAt(page, base, "");
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Dashboard");
  await hydrated(page);
  const cookie = (await page.context().cookies()).find((c) => c.name === "tablesafe_session");
  expect(cookie, "a session cookie is set").toBeTruthy();

  // Moving by the menu stays under the prefix.
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Sources", exact: true }).click();
  await expectAt(page, base, "sources");
  await hydrated(page);

  const src = unique("smoke-src");
  const sform = page.getByRole("form", { name: "Add a source" });
  await sform.getByLabel("Name").fill(src);
  await sform.getByLabel("Connection URL").fill(`sqlite://${db}`);
  await sform.getByRole("button", { name: "Add source" }).click();
  await expect(page.getByTestId(`source-${src}`)).toBeVisible();
  await expectAt(page, base, "sources");

  const disk = unique("smoke-disk");
  await page.goto("targets");
  await expectAt(page, base, "targets");
  await hydrated(page);
  const tform = page.getByRole("form", { name: "Add a target" });
  await tform.getByLabel("Name").fill(disk);
  await tform.getByLabel("Location", { exact: false }).fill(repo);
  await tform.getByLabel("Repository password").fill("a smoke repository password");
  await tform.getByLabel("Repeat password").fill("a smoke repository password");
  await tform.getByRole("button", { name: "Add target" }).click();
  await expect(page.getByTestId(`target-${disk}`)).toBeVisible();

  const policy = unique("smoke");
  await page.goto("policies");
  await expectAt(page, base, "policies");
  await hydrated(page);
  const pform = page.getByRole("form", { name: "Create a policy" });
  await pform.getByLabel("Name").fill(policy);
  await pform.getByLabel("Source").selectOption({ label: src });
  await pform.getByLabel("Target", { exact: true }).selectOption({ label: disk });
  await pform.getByRole("button", { name: "Create policy" }).click();
  const row = page.getByTestId(`policy-${policy}`);
  await expect(row).toBeVisible();

  // Run now opens the live job page, which follows the job to its end without a reload.
  await row.getByRole("button", { name: "Run now" }).click();
  await expectAt(page, base, "jobs/\\d+");
  await expect(page.getByTestId("job-status")).toHaveText("succeeded", { timeout: 30_000 });
  await expect(page.getByRole("progressbar")).toHaveAttribute("aria-valuenow", "100");
  const short = (await page.getByTestId("job-snapshot").getByTestId("snapshot-short").textContent())!.trim();
  expect(short).not.toBe("");

  // The job's link to Backups, where the snapshot is listed.
  await page.getByTestId("job-snapshot").getByRole("link", { name: "see it in Backups" }).click();
  await expectAt(page, base, "backups");
  await hydrated(page);
  const snap = page.getByTestId("snapshots").getByRole("row").filter({ hasText: policy });
  await expect(snap.getByTestId("snapshot-short")).toHaveText(short);

  // A full reload of a deep page under the prefix still renders and hydrates.
  await page.reload();
  await hydrated(page);
  await expectAt(page, base, "backups");
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Backups");

  // Logging out goes back to the login page, under the prefix, and the session is gone.
  await page.getByRole("button", { name: "Log out" }).click();
  await expectAt(page, base, "login");
  expect((await page.context().cookies()).find((c) => c.name === "tablesafe_session"), "the cookie is gone").toBeUndefined();
  expect(errors, errors.join("\n")).toEqual([]);
});
