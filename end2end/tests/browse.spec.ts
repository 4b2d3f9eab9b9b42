// Story: a user opens a backup in the browser without restoring it, pages through a
// table, filters it, looks up a row by key and downloads the filtered rows as CSV.
import { expect, test } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { ADMIN_PASSWORD, backedUpPolicy, hydrated, logIn, sqlite, tempDir } from "./pages";

test("a backup is browsed, filtered and downloaded in the browser", async ({ page }) => {
  const files = tempDir();
  const db = path.join(files, "crm.db");
  sqlite(
    db,
    "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, city TEXT);" +
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 130) " +
      "INSERT INTO people SELECT i, 'person ' || i, CASE i % 3 WHEN 0 THEN 'Oslo' WHEN 1 THEN 'Lima' ELSE NULL END FROM n;",
  );
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));

  await logIn(page, "admin", ADMIN_PASSWORD());
  const policy = await backedUpPolicy(page, files, db, "browsed");

  // From the backup history to the first page of the table.
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Backups" }).click();
  await hydrated(page);
  await page.getByTestId("snapshots").getByRole("row").filter({ hasText: policy }).getByTestId("browse").click();
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Browse a backup");
  await expect(page.getByTestId("browse-snapshot")).toContainText("table people holds 130 rows");
  const rows = page.getByTestId("rows").locator("tbody tr");
  await expect(rows).toHaveCount(50);
  await expect(rows.nth(1)).toContainText("person 2");
  await expect(rows.nth(1).locator("td.null")).toHaveText("NULL");
  await expect(page.getByTestId("showing")).toContainText("Rows 1–50");

  // The next page, then a filter.
  await page.getByTestId("next").click();
  await expect(page.getByTestId("showing")).toContainText("Rows 51–100");
  await expect(rows.first()).toContainText("person 51");
  await hydrated(page);
  const choose = page.getByRole("form", { name: "Choose rows" });
  // The filters are folded away until opened (or while one is active).
  await choose.getByText("Filters", { exact: true }).click();
  await choose.getByLabel("Filter 1 column").selectOption("city");
  await choose.getByLabel("Filter 1 operator").selectOption("eq");
  await choose.getByLabel("Filter 1 value").fill("Oslo");
  await choose.getByLabel("Filter 2 column").selectOption("id");
  await choose.getByLabel("Filter 2 operator").selectOption("gt");
  await choose.getByLabel("Filter 2 value").fill("100");
  await choose.getByRole("button", { name: "Show rows" }).click();
  await expect(page.getByTestId("showing")).toContainText("Rows 1–10");
  await expect(rows).toHaveCount(10);
  await expect(rows.first()).toContainText("person 102");

  // The filtered rows download as CSV.
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByTestId("download-table-csv").click(),
  ]);
  expect(download.suggestedFilename()).toMatch(/^people-[0-9a-f]{12}\.csv$/);
  const saved = path.join(files, "people.csv");
  await download.saveAs(saved);
  const lines = fs.readFileSync(saved, "utf8").trimEnd().split("\r\n");
  expect(lines[0]).toBe('"id","name","city"');
  expect(lines.slice(1)).toEqual(
    [102, 105, 108, 111, 114, 117, 120, 123, 126, 129].map((i) => `${i},person ${i},Oslo`),
  );

  // A key lookup.
  await hydrated(page);
  await choose.getByLabel("Filter 1 column").selectOption("");
  await choose.getByLabel("Filter 2 column").selectOption("");
  await choose.getByLabel("Key (id)").fill("77");
  await choose.getByRole("button", { name: "Show rows" }).click();
  await expect(rows).toHaveCount(1);
  await expect(rows.first()).toContainText("person 77");
  expect(errors).toEqual([]);
});
