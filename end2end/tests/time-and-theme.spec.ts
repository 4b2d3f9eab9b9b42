// Times, zones, dashboard signals and the dark theme (issue 26, points 7 and 10).
// A reader in Kolkata (+05:30) sees job and snapshot times on their own clock, with the
// UTC time on hover and a machine-readable <time datetime>; a policy's next run is on
// the policy's own (named) clock. The dashboard colours a source by its latest backup
// and flags one never backed up; a system set to dark gets a dark, readable console.
import { expect, test, type Locator, type Page } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { ADMIN_PASSWORD, addThrough, hydrated, logIn, sqlite, tempDir, unique } from "./pages";

/** A SQLite database with one table and a row, in a fresh directory. */
function shopDb(): { files: string; db: string } {
  const files = tempDir();
  const db = path.join(files, "shop.db");
  sqlite(db, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann');");
  return { files, db };
}

/** A source on `db`, a target in `files/repo` and a policy over them (with `schedule`
 * in `zone` when given); returns the names. */
async function setUp(page: Page, files: string, db: string, prefix: string, schedule = "", zone = "UTC") {
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
  if (schedule) {
    await form.getByLabel("Schedule").fill(schedule);
    await form.getByLabel("Time zone").fill(zone);
  }
  await form.getByRole("button", { name: "Create policy" }).click();
  await expect(page.getByTestId(`policy-${policy}`)).toBeVisible();
  return { src, disk, policy };
}

async function runNow(page: Page, policy: string, outcome: "succeeded" | "failed") {
  await page.goto("/policies");
  await hydrated(page);
  await page.getByTestId(`policy-${policy}`).getByRole("button", { name: "Run now" }).click();
  await expect(page.getByTestId("job-status")).toHaveText(outcome, { timeout: 30_000 });
}

/** Checks a shown <time>: its text is the instant in its datetime read on a clock
 * `offsetMinutes` ahead of UTC and ends with `zone`; its title (the hover) is the UTC time. */
async function expectShownIn(time: Locator, offsetMinutes: number, zone: string) {
  const datetime = (await time.getAttribute("datetime"))!;
  expect(datetime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  const instant = new Date(datetime);
  const wall = new Date(instant.getTime() + offsetMinutes * 60_000).toISOString().slice(0, 19).replace("T", " ");
  await expect(time).toHaveText(`${wall} ${zone}`);
  await expect(time).toHaveAttribute("title", `${datetime.slice(0, 19).replace("T", " ")} UTC`);
}

test.describe("a reader in Kolkata", () => {
  test.use({ timezoneId: "Asia/Kolkata" });

  test("sees job and snapshot times on their own clock, UTC on hover, a policy's next run in its zone", async ({ page }) => {
    await logIn(page, "admin", ADMIN_PASSWORD());
    const { files, db } = shopDb();
    // Daily at 02:30 in New York: 07:30 UTC in December (EST, -05:00).
    const { policy } = await setUp(page, files, db, "tz", "daily at 02:30", "America/New_York");
    await runNow(page, policy, "succeeded");

    // The job page: "created <time>" on the reader's clock (+05:30).
    await expectShownIn(page.locator("p", { hasText: "started by" }).locator("time"), 330, "UTC+05:30");
    // The job list, and the snapshot in Backups.
    await page.goto("/jobs");
    await hydrated(page);
    await expectShownIn(page.locator("table.list tbody tr").first().locator("time").first(), 330, "UTC+05:30");
    await page.goto("/backups");
    await hydrated(page);
    const snapshot = page.locator("table.list tbody tr", { hasText: policy }).locator("time").first();
    await expectShownIn(snapshot, 330, "UTC+05:30");

    // The policy's next run: on New York's clock, named; the hover gives UTC.
    await page.goto("/policies");
    await hydrated(page);
    const next = page.getByTestId(`policy-${policy}`).getByTestId("next-run").locator("time");
    await expect(next).toContainText("02:30:00 America/New_York");
    await expect(next).toHaveAttribute("title", /07:30:00 UTC$/);
  });
});

test.describe("a system set to dark", () => {
  test.use({ colorScheme: "dark" });

  test("gets a dark page with light, readable text", async ({ page }) => {
    await logIn(page, "admin", ADMIN_PASSWORD());
    const colours = await page.evaluate(() => {
      const rgb = (c: string) => (c.match(/\d+(\.\d+)?/g) ?? []).slice(0, 3).map(Number);
      const lum = ([r, g, b]: number[]) => {
        const f = (v: number) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
      };
      const ratio = (a: number, b: number) => (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      const bg = lum(rgb(getComputedStyle(document.documentElement).backgroundColor));
      const panel = lum(rgb(getComputedStyle(document.querySelector(".topbar")!).backgroundColor));
      const h1 = lum(rgb(getComputedStyle(document.querySelector("h1")!).color));
      const link = lum(rgb(getComputedStyle(document.querySelector(".sidebar a:not([aria-current])")!).color));
      return { bg, h1Contrast: ratio(h1, bg), linkContrast: ratio(link, panel) };
    });
    expect(colours.bg).toBeLessThan(0.05);
    expect(colours.h1Contrast).toBeGreaterThan(7);
    expect(colours.linkContrast).toBeGreaterThan(4.5);
  });
});

test("the dashboard colours a source by its latest backup and flags one never backed up", async ({ page }) => {
  await logIn(page, "admin", ADMIN_PASSWORD());
  const idle = shopDb();
  const lonely = unique("never");
  await addThrough(page, "/sources", "Add a source", [["Name", lonely], ["Connection URL", `sqlite://${idle.db}`]], "Add source", `source-${lonely}`);
  const { files, db } = shopDb();
  const { src, policy } = await setUp(page, files, db, "health");

  const card = (name: string) => page.getByTestId(`health-${name}`);
  const dashboard = async () => {
    await page.goto("/");
    await hydrated(page);
  };
  await dashboard();
  await expect(card(lonely)).toHaveAttribute("data-state", "never");
  await expect(card(lonely).getByTestId("health-badge")).toHaveText("never backed up");

  // The source's database goes missing: the backup fails and the card turns red.
  fs.renameSync(db, `${db}.away`);
  await runNow(page, policy, "failed");
  await dashboard();
  await expect(card(src)).toHaveAttribute("data-state", "failed");
  await expect(card(src).getByTestId("health-badge")).toHaveText("last backup failed");
  const red = await card(src).evaluate((el) => getComputedStyle(el).borderTopColor);
  expect(red).toBe("rgb(179, 38, 30)");

  // Back again: a successful backup makes it healthy; the old failure is only a note.
  fs.rmSync(db, { force: true });
  fs.renameSync(`${db}.away`, db);
  await runNow(page, policy, "succeeded");
  await dashboard();
  await expect(card(src)).toHaveAttribute("data-state", "ok");
  await expect(card(src).getByTestId("health-badge")).toHaveCount(0);
  await expect(card(src).getByTestId("recovered")).toContainText("in the last 7 days, since succeeded");
  expect(await card(src).evaluate((el) => getComputedStyle(el).borderTopColor)).not.toBe(red);
  await expect(card(lonely)).toHaveAttribute("data-state", "never");

  // The backups chart has a titled y axis with its unit and tick labels, dates under
  // the x axis; restores have their own chart.
  const backups = page.getByTestId("chart-backups");
  await expect(backups.getByTestId("y-axis-title")).toHaveText(/^duration \((seconds|minutes)\)$/);
  await expect(backups.locator("text.tick").first()).toHaveText("0");
  await expect(backups.getByTestId("x-axis-title")).toContainText("date and time (UTC");
  await expect(page.getByTestId("chart-restores")).toBeVisible();
});
