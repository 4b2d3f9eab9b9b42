// Lifecycle (issue 26): a new admin changes and removes what they created — a source
// (renamed; its host changed without the password, which then has to be typed again),
// a target (renamed, then removed: its repository's files stay), and a notification
// channel (paused, resumed, deleted). Every removal asks first and says what goes.
import { expect, test, type Page } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { ADMIN_PASSWORD, hydrated, logIn, sqlite, tempDir, unique } from "./pages";

async function addSource(page: Page, name: string, url: string) {
  await page.goto("/sources");
  await hydrated(page);
  const form = page.getByRole("form", { name: "Add a source" });
  await form.getByLabel("Name").fill(name);
  await form.getByLabel("Connection URL").fill(url);
  await form.getByRole("button", { name: "Add source" }).click();
  await expect(page.getByTestId(`source-${name}`)).toBeVisible();
}

async function editSource(page: Page, name: string, newName: string, url?: string) {
  await page.getByTestId(`edit-source-${name}`).click();
  const form = page.getByRole("form", { name: "Change a source" });
  await form.getByLabel("Name", { exact: true }).fill(newName);
  if (url !== undefined) await form.getByLabel(/Connection URL/).fill(url);
  await form.getByRole("button", { name: "Save source" }).click();
  await expect(page.getByTestId("source-saved")).toHaveText("Source saved.");
  await expect(page.getByTestId(`source-${newName}`)).toBeVisible();
}

test("a source, a target and a channel are changed and removed", async ({ page }) => {
  const dialogs: string[] = [];
  page.on("dialog", (d) => {
    dialogs.push(d.message());
    void d.accept();
  });
  await logIn(page, "admin", ADMIN_PASSWORD());
  const files = tempDir();
  const db = path.join(files, "shop.db");
  sqlite(db, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann');");

  // A SQLite source: renamed, then deleted after a confirmation saying what goes.
  const shop = unique("shop");
  await addSource(page, shop, `sqlite://${db}`);
  const shop2 = unique("shop-renamed");
  await editSource(page, shop, shop2);
  await expect(page.getByTestId(`source-${shop}`)).toHaveCount(0);
  // Paused for maintenance, then resumed.
  const shopRow = page.getByTestId(`source-${shop2}`);
  await shopRow.getByRole("button", { name: "Pause", exact: true }).click();
  await expect(page.getByTestId("source-saved")).toContainText("Source paused");
  await expect(shopRow.getByTestId("source-paused")).toHaveText("paused");
  await shopRow.getByRole("button", { name: "Resume", exact: true }).click();
  await expect(page.getByTestId("source-saved")).toContainText("Source resumed");
  await expect(shopRow.getByTestId("source-paused")).toHaveCount(0);
  await page.getByTestId(`delete-source-${shop2}`).click();
  await expect(page.getByTestId("source-saved")).toHaveText("Source deleted.");
  await expect(page.getByTestId(`source-${shop2}`)).toHaveCount(0);
  expect(dialogs.pop()).toContain("snapshots stay");

  // A PostgreSQL source with a password: the edit form shows the URL without it; kept
  // while the host stays, gone once the host changes.
  const pgUrl = `${process.env.TABLESAFE_E2E_PG!}`;
  const pg = unique("pg");
  await addSource(page, pg, pgUrl);
  await page.getByTestId(`edit-source-${pg}`).click();
  const shown = await page.getByRole("form", { name: "Change a source" }).getByLabel(/Connection URL/).inputValue();
  expect(shown).not.toContain(new URL(pgUrl).password);
  await page.getByRole("button", { name: "Cancel" }).click();
  const row = () => page.getByTestId(`source-${pg}`);
  await editSource(page, pg, pg, shown);
  await row().getByRole("button", { name: "Test connection" }).click();
  await expect(page.getByTestId("test-result")).toContainText("Connected");
  await editSource(page, pg, pg, shown.replace("127.0.0.1", "localhost"));
  await row().getByRole("button", { name: "Test connection" }).click();
  await expect(page.getByTestId("test-result")).toContainText("password");
  await editSource(page, pg, pg, pgUrl);
  await row().getByRole("button", { name: "Test connection" }).click();
  await expect(page.getByTestId("test-result")).toContainText("Connected");
  await page.getByTestId(`delete-source-${pg}`).click();
  await expect(page.getByTestId(`source-${pg}`)).toHaveCount(0);

  // A target: renamed, then removed; its repository's files stay.
  const disk = unique("disk");
  const repo = path.join(files, "repo");
  await page.goto("/targets");
  await hydrated(page);
  const tform = page.getByRole("form", { name: "Add a target" });
  await tform.getByLabel("Name").fill(disk);
  await tform.getByLabel("Directory").fill(repo);
  await tform.getByLabel("Repository password").fill("a repository password");
  await tform.getByLabel("Repeat password").fill("a repository password");
  await tform.getByRole("button", { name: "Add target" }).click();
  await expect(page.getByTestId(`target-${disk}`)).toBeVisible();
  const disk2 = unique("disk-renamed");
  await page.getByTestId(`edit-target-${disk}`).click();
  const eform = page.getByRole("form", { name: "Change a target" });
  await eform.getByLabel("Name", { exact: true }).fill(disk2);
  await eform.getByRole("button", { name: "Save target" }).click();
  await expect(page.getByTestId("target-saved")).toHaveText("Target saved.");
  await expect(page.getByTestId(`target-${disk2}`)).toContainText(repo);
  const diskRow = page.getByTestId(`target-${disk2}`);
  await diskRow.getByRole("button", { name: "Pause", exact: true }).click();
  await expect(page.getByTestId("target-saved")).toContainText("Target paused");
  await expect(diskRow.getByTestId("target-paused")).toHaveText("paused");
  await diskRow.getByRole("button", { name: "Resume", exact: true }).click();
  await expect(page.getByTestId("target-saved")).toContainText("Target resumed");
  await expect(diskRow.getByTestId("target-paused")).toHaveCount(0);
  const before = fs.readdirSync(repo).sort();
  await page.getByTestId(`delete-target-${disk2}`).click();
  await expect(page.getByTestId("target-saved")).toContainText("files were not deleted");
  await expect(page.getByTestId(`target-${disk2}`)).toHaveCount(0);
  expect(dialogs.pop()).toContain("is NOT deleted");
  expect(fs.readdirSync(repo).sort()).toEqual(before);

  // A channel: paused, resumed, deleted.
  const ops = unique("ops");
  await page.goto("/notifications");
  await hydrated(page);
  const cform = page.getByRole("form", { name: "Channel" });
  await cform.getByLabel("Name").fill(ops);
  await cform.getByLabel("URL").fill("http://127.0.0.1:9/hook");
  await cform.getByLabel(/Signing secret/).fill("a webhook secret of some length");
  await cform.getByLabel("Backup failed", { exact: true }).check();
  await cform.getByRole("button", { name: "Add channel" }).click();
  await expect(page.getByTestId("channel-saved")).toHaveText("Channel saved.");
  const channel = page.getByTestId(`channel-${ops}`);
  await expect(channel).toBeVisible();
  await page.getByTestId(`pause-${ops}`).click();
  await expect(channel).toContainText("(paused)");
  await expect(page.getByTestId(`pause-${ops}`)).toHaveText("Resume");
  await page.getByTestId(`pause-${ops}`).click();
  await expect(channel).not.toContainText("(paused)");
  await expect(page.getByTestId(`pause-${ops}`)).toHaveText("Pause");
  await page.getByTestId(`delete-${ops}`).click();
  await expect(page.getByTestId("channel-saved")).toHaveText("Channel deleted.");
  await expect(channel).toHaveCount(0);

  // The audit log has every step.
  await page.goto("/audit");
  await hydrated(page);
  for (const action of ["source.edit", "source.pause", "source.resume", "source.delete", "target.edit", "target.pause", "target.resume", "target.delete", "channel.disable", "channel.enable", "channel.delete"]) {
    await expect(page.getByText(action, { exact: true }).first()).toBeVisible();
  }
});
