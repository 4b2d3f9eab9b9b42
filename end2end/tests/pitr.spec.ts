// Story: a row is deleted by mistake on a PostgreSQL database whose policy captures
// changes continuously. The admin turns capture on in the console, sees how far the
// source can be restored, and restores the table as it was at an instant between an
// update and the mistake: the update is there, the deleted row is back.
import { expect, test } from "@playwright/test";
import * as path from "node:path";
import { ADMIN_PASSWORD, hydrated, logIn, psql, tempDir, unique } from "./pages";

test("a table comes back as it was at a chosen instant", async ({ page }) => {
  const db = unique("pitr").replace("-", "_");
  psql(`CREATE DATABASE ${db}`, "postgres");
  psql("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL); INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 10) g;", db);
  const url = process.env.TABLESAFE_E2E_PG!.replace(/\/shop$/, `/${db}`);
  const source = unique("pitr-src");
  const target = unique("pitr-disk");
  const policy = unique("pitr-policy");
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));

  await logIn(page, "admin", ADMIN_PASSWORD());
  await page.goto("/sources");
  await hydrated(page);
  const sform = page.getByRole("form", { name: "Add a source" });
  await sform.getByLabel("Name").fill(source);
  await sform.getByLabel("Connection URL").fill(url);
  await sform.getByRole("button", { name: "Add source" }).click();
  await expect(page.getByTestId(`source-${source}`)).toBeVisible();
  await page.goto("/targets");
  await hydrated(page);
  const tform = page.getByRole("form", { name: "Add a target" });
  await tform.getByLabel("Name").fill(target);
  await tform.getByLabel(/^Location/).fill(path.join(tempDir(), "repo"));
  await tform.getByLabel("Repository password").fill("a repository password");
  await tform.getByLabel("Repeat password").fill("a repository password");
  await tform.getByRole("button", { name: "Add target" }).click();
  await expect(page.getByTestId(`target-${target}`)).toBeVisible();
  await page.goto("/policies");
  await hydrated(page);
  const pform = page.getByRole("form", { name: "Create a policy" });
  await pform.getByLabel("Name").fill(policy);
  await pform.getByLabel("Source").selectOption({ label: source });
  await pform.getByLabel("Target", { exact: true }).selectOption({ label: target });
  await pform.getByRole("button", { name: "Create policy" }).click();

  // Continuous capture on: the base snapshot is taken by itself, then the range grows.
  const row = page.getByTestId(`policy-${policy}`);
  await row.getByText("Continuous capture").click();
  await Promise.all([
    page.waitForResponse((r) => r.url().includes("/api/policies/continuous") && r.ok()),
    row.getByTestId(`capture-${policy}`).fill("1").then(() => row.getByTestId(`capture-${policy}`).press("Tab")),
  ]);
  await expect(async () => {
    await page.reload();
    await hydrated(page);
    await expect(page.getByTestId(`policy-${policy}`).getByTestId("continuous")).toContainText("restorable to", { timeout: 1_000 });
  }).toPass({ timeout: 60_000 });

  // An update, an instant, then the mistake.
  psql("UPDATE accounts SET balance = 500 WHERE id = 1", db);
  await page.waitForTimeout(1100);
  const at = psql(`SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')`, db);
  await page.waitForTimeout(1100);
  psql("DELETE FROM accounts WHERE id = 2", db);
  const atMs = Date.parse(at + "Z");
  await expect
    .poll(async () => {
      const list = await (await page.request.post("/api/policies/list")).json();
      return list.find((p: any) => p.name === policy)?.restorable_to ?? 0;
    }, { timeout: 30_000 })
    .toBeGreaterThan(atMs + 2000);

  // The wizard: the snapshot, the range it offers, the instant, new table names.
  await page.goto("/restores");
  await hydrated(page);
  const option = page.locator("#snapshot option", { hasText: source }).first();
  await page.getByLabel("Snapshot").selectOption((await option.getAttribute("value"))!);
  await expect(page.getByTestId("restorable-range")).toContainText("can be restored to any instant");
  await page.getByLabel(/^public\.accounts/).check();
  await page.getByLabel(/^Point in time/).fill(at);
  await page.getByLabel(/suffix/).fill("_asof");
  await page.getByRole("button", { name: "Preview" }).click();
  await expect(page.getByTestId("restore-plan")).toContainText("public.accounts_asof");
  await page.getByRole("button", { name: "Run restore" }).click();
  await expect(page).toHaveURL(/\/jobs\/\d+$/);
  await expect(page.getByTestId("job-status")).toHaveText("succeeded", { timeout: 30_000 });
  await expect(page.getByRole("heading", { level: 1 })).toContainText("as of");
  expect(psql("SELECT count(*), sum(balance) FROM accounts_asof", db)).toBe("10|1400");
  expect(psql("SELECT count(*) FROM accounts", db)).toBe("9");

  // Off again: the slot on the source is gone.
  await page.goto("/policies");
  await hydrated(page);
  const again = page.getByTestId(`policy-${policy}`);
  await again.getByText("Continuous capture").click();
  await Promise.all([
    page.waitForResponse((r) => r.url().includes("/api/policies/continuous") && r.ok()),
    again.getByTestId(`capture-${policy}`).fill("").then(() => again.getByTestId(`capture-${policy}`).press("Tab")),
  ]);
  await expect(page.getByTestId(`policy-${policy}`).getByTestId("continuous")).toHaveText("snapshots only");
  expect(psql(`SELECT count(*) FROM pg_replication_slots WHERE database = '${db}'`, db)).toBe("0");
  expect(errors, errors.join("\n")).toEqual([]);
});
