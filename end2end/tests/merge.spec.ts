// Story: rows deleted and changed by mistake are brought back for a key range only:
// the restore wizard previews what an upsert would insert and update, then runs it.
import { expect, test } from "@playwright/test";
import * as path from "node:path";
import { ADMIN_PASSWORD, backedUpPolicy, hydrated, logIn, sqlite, tempDir } from "./pages";

test("a key-range upsert is previewed with its diff and run in the browser", async ({ page }) => {
  const files = tempDir();
  const db = path.join(files, "shop.db");
  sqlite(
    db,
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT);" +
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) INSERT INTO orders SELECT i, 'paid' FROM n;",
  );
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));

  await logIn(page, "admin", ADMIN_PASSWORD());
  const policy = await backedUpPolicy(page, files, db, "merged");

  // The mistake: orders 5–6 deleted, 7 and 15 changed.
  sqlite(db, "DELETE FROM orders WHERE id IN (5, 6); UPDATE orders SET status = 'lost' WHERE id IN (7, 15);");

  await page.goto("/backups");
  await hydrated(page);
  await page.getByTestId("snapshots").getByRole("row").filter({ hasText: policy }).getByRole("link", { name: "Restore" }).click();
  await expect(page).toHaveURL(/\/restores\?snapshot=\d+$/);
  await hydrated(page);
  await page.getByLabel("orders (20 rows)").check();
  await page.getByLabel(/suffix/).fill("");
  await page.getByLabel(/Upsert into existing tables/).check();
  await page.getByLabel(/Only rows where/).fill("id >= 1\nid <= 10");
  await page.getByRole("button", { name: "Preview" }).click();
  const plan = page.getByTestId("restore-plan");
  await expect(plan).toContainText("upsert");
  await expect(plan.getByTestId("plan-rows")).toHaveText("2 inserted, 1 updated, 7 unchanged");
  expect(sqlite(db, "SELECT count(*) FROM orders")).toBe("[(18,)]");

  await page.getByLabel(/Type the names of the tables/).fill("orders");
  await page.getByRole("button", { name: "Run restore" }).click();
  await expect(page).toHaveURL(/\/jobs\/\d+$/);
  await expect(page.getByTestId("job-status")).toHaveText("succeeded", { timeout: 30_000 });
  await expect(page.getByTestId("restored")).toContainText("orders: 2 inserted, 1 updated, 7 unchanged, 0 deleted");
  expect(sqlite(db, "SELECT count(*), sum(status = 'lost') FROM orders")).toBe("[(20, 1)]");
  expect(sqlite(db, "SELECT status FROM orders WHERE id = 15")).toBe("[('lost',)]");
  expect(errors).toEqual([]);
});
