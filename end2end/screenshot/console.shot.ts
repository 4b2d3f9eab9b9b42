// Takes docs/src/images/console.png (see playwright.config.ts here for how to run it).
import { expect, test } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { ADMIN_PASSWORD, hydrated, sqlite, tempDir } from "../tests/pages";

const OUT = path.resolve(__dirname, "../../docs/src/images/console.png");

test("the dashboard of a console with a source, a policy and two backups", async ({ page }) => {
  const files = tempDir();
  const db = path.join(files, "shop.db");
  sqlite(
    db,
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT);" +
      "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER REFERENCES customers(id), total REAL);" +
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) " +
      "INSERT INTO customers SELECT i, 'customer ' || i, 'c' || i || '@example.com' FROM n;" +
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) " +
      "INSERT INTO orders SELECT i, 1 + i % 2000, (i % 97) * 1.5 FROM n;",
  );
  const repo = path.join(files, "repo");
  fs.mkdirSync(repo);

  await page.goto("/login");
  await hydrated(page);
  await page.getByLabel("User name").fill("admin");
  await page.getByLabel("Password").fill(ADMIN_PASSWORD());
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Dashboard");

  await page.goto("/sources");
  await hydrated(page);
  const sform = page.getByRole("form", { name: "Add a source" });
  await sform.getByLabel("Name").fill("shop");
  await sform.getByLabel("Connection URL").fill(`sqlite://${db}`);
  await sform.getByRole("button", { name: "Add source" }).click();
  await expect(page.getByTestId("source-shop")).toBeVisible();

  await page.goto("/targets");
  await hydrated(page);
  const tform = page.getByRole("form", { name: "Add a target" });
  await tform.getByLabel("Name").fill("local-disk");
  await tform.getByLabel("Location", { exact: false }).fill(repo);
  await tform.getByLabel("Repository password").fill("a screenshot repository password");
  await tform.getByLabel("Repeat password").fill("a screenshot repository password");
  await tform.getByRole("button", { name: "Add target" }).click();
  await expect(page.getByTestId("target-local-disk")).toBeVisible();

  await page.goto("/policies");
  await hydrated(page);
  const pform = page.getByRole("form", { name: "Create a policy" });
  await pform.getByLabel("Name").fill("shop-nightly");
  await pform.getByLabel("Source").selectOption({ label: "shop" });
  await pform.getByLabel("Target", { exact: true }).selectOption({ label: "local-disk" });
  await pform.getByLabel("Schedule").fill("daily at 02:00");
  await pform.getByRole("button", { name: "Create policy" }).click();
  const row = page.getByTestId("policy-shop-nightly");
  await expect(row).toBeVisible();

  // Two backups, the second after a change (an incremental one).
  for (const change of ["", "UPDATE orders SET total = total + 1 WHERE id % 50 = 0;"]) {
    if (change) sqlite(db, change);
    await page.goto("/policies");
    await hydrated(page);
    await page.getByTestId("policy-shop-nightly").getByRole("button", { name: "Run now" }).click();
    await expect(page).toHaveURL(/\/jobs\/\d+$/);
    await expect(page.getByTestId("job-status")).toHaveText("succeeded", { timeout: 30_000 });
  }

  await page.goto("/");
  await hydrated(page);
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Dashboard");
  await expect(page.getByText("shop", { exact: true }).first()).toBeVisible();
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  await page.screenshot({ path: OUT, clip: { x: 0, y: 0, width: 1280, height: 640 } });
});
