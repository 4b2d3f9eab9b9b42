// Story (issue 26, point 9): a user on a phone reads every list without scrolling
// sideways, sees each row's name and its main action; Browse shows rows at once, says how
// many there are, jumps to a page or a key and follows the table select; a snapshot is
// called by the same short id on every page.
import { expect, test, type Locator, type Page } from "@playwright/test";
import * as path from "node:path";
import { ADMIN_PASSWORD, backedUpPolicy, hydrated, logIn, sqlite, tempDir, unique } from "./pages";

/** A source with two tables: `people` (130 rows, keyed by id) and `orders` (3 rows). */
function twoTables(files: string): string {
  const db = path.join(files, "shop.db");
  sqlite(
    db,
    "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, city TEXT);" +
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 130) " +
      "INSERT INTO people SELECT i, 'person ' || i, CASE i % 3 WHEN 0 THEN 'Oslo' ELSE 'Lima' END FROM n;" +
      "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT);" +
      "INSERT INTO orders VALUES (1, 'order-apple'), (2, 'order-pear'), (3, 'order-plum');",
  );
  return db;
}

/** The page has nothing to scroll sideways. */
async function expectNoSidewaysScroll(page: Page, where: string) {
  const [scroll, client] = await page.evaluate(() => {
    const e = document.scrollingElement!;
    return [e.scrollWidth, e.clientWidth];
  });
  expect(scroll, `${where} is ${scroll}px wide on a ${client}px screen`).toBeLessThanOrEqual(client);
}

/** Brought into view vertically, `el` lies wholly inside the screen's width. */
async function expectWithinScreenWidth(page: Page, el: Locator, what: string) {
  await el.scrollIntoViewIfNeeded();
  await expect(el).toBeVisible();
  const box = (await el.boundingBox())!;
  const width = page.viewportSize()!.width;
  expect(box.x, `${what} starts off screen`).toBeGreaterThanOrEqual(0);
  expect(box.x + box.width, `${what} ends at ${box.x + box.width}px on a ${width}px screen`).toBeLessThanOrEqual(width);
  // Readable, not squeezed into a narrow column a few letters wide.
  expect(box.height, `${what} is broken over several lines (${box.width}px wide)`).toBeLessThan(44);
}

test("Browse shows rows at once, the total, jumps to a page or key, and follows the table select", async ({ page }) => {
  const files = tempDir();
  const db = twoTables(files);
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
  await logIn(page, "admin", ADMIN_PASSWORD());
  const policy = await backedUpPolicy(page, files, db, "browse2");

  await page.goto("/backups");
  await hydrated(page);
  await page.getByTestId("snapshots").getByRole("row").filter({ hasText: policy }).getByTestId("browse").click();
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Browse a backup");
  await hydrated(page);
  const choose = page.getByRole("form", { name: "Choose rows" });
  const rows = page.getByTestId("rows").locator("tbody tr");
  const total = page.getByTestId("total");

  // Rows on the first screen, with the filters folded away; the total from the backup.
  await choose.getByLabel("Table").selectOption("people");
  await expect(total).toHaveText("130 rows in people · page 1 of 3");
  await expect(rows.first()).toContainText("person 1");
  await expect(rows.first()).toBeInViewport();
  await expect(choose.getByLabel("Filter 1 column")).toBeHidden();

  // Jump to the last page by its number.
  const jump = page.getByRole("form", { name: "Go to a page" });
  await jump.getByLabel("Page (of 3)").fill("3");
  await jump.getByRole("button", { name: "Go" }).click();
  await expect(page.getByTestId("showing")).toContainText("Rows 101–130");
  await expect(rows.first()).toContainText("person 101");
  await expect(total).toHaveText("130 rows in people · page 3 of 3");

  // Jump to a row by its key.
  await hydrated(page);
  await choose.getByLabel("Key (id)").fill("77");
  await choose.getByRole("button", { name: "Show rows" }).click();
  await expect(rows).toHaveCount(1);
  await expect(rows.first()).toContainText("person 77");
  await expect(total).toHaveText("1 of the table's 130 rows match.");

  // A filter: the filters stay open while one is active.
  await hydrated(page);
  await choose.getByLabel("Key (id)").fill("");
  await choose.getByText("Filters", { exact: true }).click();
  await choose.getByLabel("Filter 1 column").selectOption("city");
  await choose.getByLabel("Filter 1 value").fill("Oslo");
  await choose.getByRole("button", { name: "Show rows" }).click();
  await expect(total).toHaveText("43 of the table's 130 rows match.");
  await expect(choose.getByLabel("Filter 1 column")).toBeVisible();
  await expect(choose.getByLabel("Filter 1 column")).toHaveValue("city");

  // Switching the table shows the other table's rows, from the start, unfiltered.
  await hydrated(page);
  await choose.getByLabel("Table").selectOption("orders");
  await expect(total).toHaveText("3 rows in orders · page 1 of 1");
  await expect(rows).toHaveCount(3);
  await expect(rows.nth(1)).toContainText("order-pear");
  await expect(page.getByTestId("rows")).not.toContainText("person");
  await expect(choose.getByLabel("Filter 1 column")).toBeHidden();
  expect(errors).toEqual([]);
});

test("on a phone every list fits the screen and shows each row's name and main action", async ({ page }, info) => {
  test.skip(info.project.name !== "phone", "a phone's width");
  const files = tempDir();
  const db = twoTables(files);
  await logIn(page, "admin", ADMIN_PASSWORD());
  const policy = await backedUpPolicy(page, files, db, "narrow");

  // A channel with a long address, so the channels list has a wide row.
  const ch = unique("ops");
  await page.goto("/notifications");
  await hydrated(page);
  const cform = page.getByRole("form", { name: "Channel" });
  await cform.getByLabel("Name").fill(ch);
  await cform.getByLabel("URL").fill(`http://127.0.0.1:9/a/rather/long/path/to/a/webhook/receiver/${"x".repeat(60)}`);
  await cform.getByLabel(/Signing secret/).fill("a webhook secret of some length");
  await cform.getByLabel("Backup failed", { exact: true }).check();
  await cform.getByRole("button", { name: "Add channel" }).click();
  await expect(page.getByTestId("channel-saved")).toBeVisible();

  // Each list: its page, the row, the row's name and its main action.
  const byText = (t: string) => (r: Locator) => r.getByText(t, { exact: true }).first();
  const button = (name: string) => (r: Locator) => r.getByRole("button", { name, exact: true });
  const lists: [string, (p: Page) => Locator, (row: Locator) => Locator, (row: Locator) => Locator][] = [
    ["/jobs", (p) => p.getByTestId("jobs").getByRole("row").filter({ hasText: `Backup: ${policy}` }).first(),
      (r) => r.getByRole("link", { name: `Backup: ${policy}` }), (r) => r.getByRole("link").first()],
    ["/backups", (p) => p.getByTestId("snapshots").getByRole("row").filter({ hasText: policy }).first(),
      byText(policy), (r) => r.getByRole("link", { name: "Restore" })],
    ["/sources", (p) => p.locator('[data-testid^="source-narrow-src-"]').first(),
      (r) => r.getByRole("link", { name: /^narrow-src-/ }), button("Edit")],
    ["/targets", (p) => p.locator('[data-testid^="target-narrow-disk-"]').first(),
      (r) => r.getByText(/^narrow-disk-/).first(), button("Edit")],
    ["/policies", (p) => p.getByTestId(`policy-${policy}`), byText(policy), button("Run now")],
    ["/notifications", (p) => p.getByTestId(`channel-${ch}`), byText(ch), button("Send test")],
    ["/drills", (p) => p.getByTestId(`drill-${policy}`), byText(policy), button("Run drill now")],
    ["/users", (p) => p.getByTestId("user-admin"), byText("admin"), button("Change role")],
    ["/audit", (p) => p.getByTestId("audit").getByRole("row").filter({ hasText: "policy.run" }).first(),
      byText("policy.run"), byText("admin")],
  ];
  for (const [where, rowOf, nameOf, actionOf] of lists) {
    await page.goto(where);
    await hydrated(page);
    const row = rowOf(page);
    await expect(row, where).toBeVisible();
    await expectNoSidewaysScroll(page, where);
    await expectWithinScreenWidth(page, nameOf(row), `${where}: the row's name`);
    await expectWithinScreenWidth(page, actionOf(row), `${where}: the main action`);
  }
  // Requests may be empty here; the page still fits.
  await page.goto("/requests");
  await hydrated(page);
  await expectNoSidewaysScroll(page, "/requests");
});

test("a snapshot has the same short id on the job, in Backups and in the restore wizard", async ({ page }) => {
  const files = tempDir();
  const db = twoTables(files);
  await logIn(page, "admin", ADMIN_PASSWORD());
  const policy = await backedUpPolicy(page, files, db, "named");

  // The job that made it.
  const short = (await page.getByTestId("job-snapshot").getByTestId("snapshot-short").textContent())!.trim();
  expect(short).toMatch(/^[0-9a-f]{12}$/);

  // Backups.
  await page.goto("/backups");
  await hydrated(page);
  const row = page.getByTestId("snapshots").getByRole("row").filter({ hasText: policy });
  await expect(row.getByTestId("snapshot-short")).toHaveText(short);

  // The restore wizard, opened from that row.
  await row.getByRole("link", { name: "Restore" }).click();
  await hydrated(page);
  const chosen = page.getByLabel("Snapshot", { exact: true }).locator("option:checked");
  await expect(chosen).toContainText(short);
  await expect(chosen).toContainText(policy);
});
