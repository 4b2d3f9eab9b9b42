// Story: a database with a view and a trigger is restored from the wizard; the preview
// says which schema objects come along and names those that stay behind, and why.
import { expect, test } from "@playwright/test";
import * as path from "node:path";
import { ADMIN_PASSWORD, backedUpPolicy, hydrated, logIn, sqlite, tempDir } from "./pages";

test("the restore preview names the views and triggers it makes and those it leaves", async ({ page }) => {
  const files = tempDir();
  const db = path.join(files, "app.db");
  sqlite(
    db,
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);" +
      "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER, total REAL);" +
      "CREATE VIEW totals AS SELECT c.name, sum(o.total) AS total FROM customers c JOIN orders o ON o.customer = c.id GROUP BY c.name;" +
      "CREATE TRIGGER orders_check BEFORE INSERT ON orders WHEN new.total < 0 BEGIN SELECT RAISE(ABORT, 'negative'); END;" +
      "INSERT INTO customers VALUES (1, 'Ann'); INSERT INTO orders VALUES (1, 1, 10);",
  );
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));

  await logIn(page, "admin", ADMIN_PASSWORD());
  const policy = await backedUpPolicy(page, files, db, "schema");
  await page.goto("/backups");
  await hydrated(page);
  await page.getByTestId("snapshots").getByRole("row").filter({ hasText: policy }).getByRole("link", { name: "Restore" }).click();
  await hydrated(page);
  await page.getByLabel("customers (1 rows)").check();
  await page.getByLabel("orders (1 rows)").check();
  // Restored next to the originals under a suffix: the view and the trigger are
  // written for the original names, so they stay behind, and the preview says so.
  await page.getByRole("button", { name: "Preview" }).click();
  await expect(page.getByTestId("restore-plan")).toContainText("orders");
  const left = page.getByTestId("plan-objects-left");
  await expect(left).toContainText("Not restored: view totals not restored: customers is restored under another name");
  await expect(left).toContainText("trigger orders_check not restored: orders is restored under another name");
  await expect(page.getByTestId("plan-objects")).toHaveCount(0);
  expect(errors).toEqual([]);
});
