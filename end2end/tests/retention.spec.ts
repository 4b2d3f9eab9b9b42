// Story: an operator sets retention on a policy, previews per snapshot what is kept and
// why, saves and applies it, and adds a second target that gets a copy of each backup.
import { expect, test, type Page } from "@playwright/test";
import * as path from "node:path";
import { ADMIN_PASSWORD, hydrated, logIn, sqlite, tempDir, unique } from "./pages";

async function addTarget(page: Page, name: string, dir: string) {
  await page.goto("/targets");
  await hydrated(page);
  const form = page.getByRole("form", { name: "Add a target" });
  await form.getByLabel("Name").fill(name);
  await form.getByLabel("Location").fill(dir);
  await form.getByLabel("Repository password").fill("a repository password");
  await form.getByLabel("Repeat password").fill("a repository password");
  await form.getByRole("button", { name: "Add target" }).click();
  await expect(page.getByTestId(`target-${name}`)).toBeVisible();
}

async function runNow(page: Page, policy: string) {
  await page.goto("/policies");
  await hydrated(page);
  await page.getByTestId(`policy-${policy}`).getByRole("button", { name: "Run now" }).click();
  await expect(page).toHaveURL(/\/jobs\/\d+$/);
  await expect(page.getByTestId("job-status")).toHaveText("succeeded", { timeout: 30_000 });
}

test("retention is previewed per snapshot, saved, applied, and copies go to a second target", async ({ page }) => {
  const files = tempDir();
  const db = path.join(files, "app.db");
  sqlite(db, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes VALUES (1, 'a');");
  const src = unique("notes-src");
  const main = unique("main-disk");
  const second = unique("second-disk");
  const policy = unique("notes");
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));

  await logIn(page, "admin", ADMIN_PASSWORD());
  await page.goto("/sources");
  await hydrated(page);
  const sform = page.getByRole("form", { name: "Add a source" });
  await sform.getByLabel("Name").fill(src);
  await sform.getByLabel("Connection URL").fill(`sqlite://${db}`);
  await sform.getByRole("button", { name: "Add source" }).click();
  await expect(page.getByTestId(`source-${src}`)).toBeVisible();
  await addTarget(page, main, path.join(files, "main"));
  await addTarget(page, second, path.join(files, "second"));

  await page.goto("/policies");
  await hydrated(page);
  const form = page.getByRole("form", { name: "Create a policy" });
  await form.getByLabel("Name").fill(policy);
  await form.getByLabel("Source").selectOption({ label: src });
  await form.getByLabel("Target", { exact: true }).selectOption({ label: main });
  await form.getByRole("button", { name: "Create policy" }).click();
  const row = page.getByTestId(`policy-${policy}`);
  await expect(row.getByTestId("retention")).toHaveText("keep everything");

  // Copies: tick the second target.
  await row.getByRole("button", { name: "Copies" }).click();
  const copies = page.getByTestId("copies-editor");
  await copies.getByLabel(second).check();
  await copies.getByRole("button", { name: "Save copies" }).click();
  await expect(copies.getByTestId("copies-saved")).toBeVisible();
  await expect(row.getByTestId("copy-targets")).toHaveText(`copies: ${second}`);

  for (let i = 2; i <= 4; i++) {
    sqlite(db, `INSERT INTO notes VALUES (${i}, 'n${i}');`);
    await runNow(page, policy);
    await expect(page.getByTestId("job-log")).toContainText(`copy to ${second}: 1 snapshots copied, complete`);
  }
  await page.goto("/backups");
  await hydrated(page);
  await expect(page.getByTestId(`copy-${second}`).first()).toHaveText(`${second}: copy complete`);

  // Retention: bad input is refused next to the field, then a preview.
  await page.goto("/policies");
  await hydrated(page);
  await page.getByTestId(`policy-${policy}`).getByRole("button", { name: "Retention" }).click();
  const editor = page.getByTestId("retention-editor");
  await editor.getByLabel("Keep the last N snapshots").fill("-1");
  await editor.getByRole("button", { name: "Preview" }).click();
  await expect(editor.getByText("A whole number from 0 to 100000.")).toBeVisible();
  await editor.getByLabel("Keep the last N snapshots").fill("1");
  await editor.getByLabel("Floor: never remove the newest N").fill("2");
  await editor.getByRole("button", { name: "Preview" }).click();
  await expect(editor.getByTestId("retention-summary")).toHaveText("last 1, floor 2: keeps 2 of 3 snapshots, removes 1.");
  const preview = editor.getByTestId("retention-preview");
  await expect(preview.locator("tbody tr").nth(0)).toContainText("kept");
  await expect(preview.locator("tbody tr").nth(0)).toContainText("last #1, floor");
  await expect(preview.locator("tbody tr").nth(2)).toContainText("removed");
  await editor.getByRole("button", { name: "Save these rules" }).click();
  await expect(editor.getByTestId("retention-saved")).toBeVisible();
  await expect(page.getByTestId(`policy-${policy}`).getByTestId("retention")).toHaveText("last 1, floor 2");

  await editor.getByRole("button", { name: "Apply saved rules now" }).click();
  await expect(page).toHaveURL(/\/jobs\/\d+$/);
  await expect(page.getByTestId("job-status")).toHaveText("succeeded", { timeout: 30_000 });
  await expect(page.getByTestId("job-log")).toContainText(`in ${main}: kept 2, removed 1`);
  await expect(page.getByTestId("job-log")).toContainText(`in ${second}: kept 2, removed 1`);
  expect(errors).toEqual([]);
});
