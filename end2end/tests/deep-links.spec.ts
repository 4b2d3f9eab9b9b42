// Every page works when its address is opened directly — a reload, a bookmark, a link
// opened in a new tab — not only when reached by clicking: the server renders it and
// the browser hydrates the same tree, with no console error (a hydration mismatch
// panics the wasm, and then nothing on the page reacts).
import { expect, test } from "@playwright/test";
import * as path from "path";
import { ADMIN_PASSWORD, backedUpPolicy, hydrated, logIn, sqlite, tempDir } from "./pages";

test("every page opens cold from its deep link", async ({ page }) => {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`${page.url()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
  await logIn(page, "admin", ADMIN_PASSWORD());
  const files = tempDir();
  const db = path.join(files, "deep.db");
  sqlite(db, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann');");
  await backedUpPolicy(page, files, db, "deep");
  const job = new URL(page.url()).pathname;
  await page.goto("/backups");
  await hydrated(page);
  const restore = await page.getByRole("link", { name: "Restore", exact: true }).first().getAttribute("href");
  const snapshot = restore!.split("=").pop();
  for (const address of [
    `/restores?snapshot=${snapshot}`,
    `/backups/${snapshot}`,
    job,
    "/jobs?status=failed",
    "/audit?user=admin&action=login",
    "/requests?state=&mine=on",
    "/backups?policy=0&source=0",
    "/drills",
    "/policies",
  ]) {
    await page.goto(address);
    await hydrated(page);
    await expect(page.getByRole("heading", { level: 1 }), address).toBeVisible();
    await page.waitForTimeout(300);
  }
  // The wizard opened at a snapshot lists its tables, reacts, and the menu still works.
  await page.goto(`/restores?snapshot=${snapshot}`);
  await hydrated(page);
  await expect(page.getByTestId("restore-tables")).toContainText("customers");
  // The one rule for new table names, as you type.
  await page.getByLabel(/add this suffix/).fill("<img src=x onerror=alert(1)>");
  await expect(page.getByTestId("error-suffix")).toContainText("letters, digits and _");
  await page.getByLabel(/add this suffix/).fill("_copy");
  await expect(page.getByTestId("error-suffix")).toHaveText("");
  await page.goto(job);
  await hydrated(page);
  await expect(page.getByTestId("job-status")).toHaveText("succeeded");
  expect(errors, errors.join("\n")).toEqual([]);
});

test("one long value does not make the audit log wider than the screen", async ({ page, request }) => {
  // A failed login with a long user name, one word: the audit log records it.
  const long = "x".repeat(120) + "y".repeat(8);
  const origin = `http://127.0.0.1:${process.env.TABLESAFE_E2E_PORT}`;
  const r = await request.post("/api/login", { headers: { Origin: origin }, form: { username: long, password: "wrong" } });
  expect(r.status()).toBe(401);
  await logIn(page, "admin", ADMIN_PASSWORD());
  await page.goto("/audit?action=login");
  await hydrated(page);
  await expect(page.getByTestId("audit")).toBeVisible();
  const [page_width, screen] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  expect(page_width).toBeLessThanOrEqual(screen + 1);
});
