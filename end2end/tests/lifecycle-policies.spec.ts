// Lifecycle (issue 26): a new admin changes what they created — a policy (edited with
// the create form's checks, disabled and enabled again, deleted after a confirmation
// that says what goes and what stays; its snapshot stays listed in Backups) and a user
// (added as a requester by default, the form emptied, then made an operator, which
// applies when they log in).
import { expect, test } from "@playwright/test";
import * as path from "node:path";
import { ADMIN_PASSWORD, backedUpPolicy, hydrated, logIn, sqlite, tempDir, unique } from "./pages";

test("a policy is edited, disabled, enabled and deleted; its snapshot stays", async ({ page }) => {
  await logIn(page, "admin", ADMIN_PASSWORD());
  const files = tempDir();
  const db = path.join(files, "shop.db");
  sqlite(
    db,
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann');" +
      "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER); INSERT INTO orders VALUES (1, 1);",
  );
  const policy = await backedUpPolicy(page, files, db, "life");
  await page.goto("/policies");
  await hydrated(page);

  // A trigger URL, which goes with the policy (and names its id).
  await page.getByTestId(`policy-${policy}`).getByRole("button", { name: "Trigger URL" }).click();
  const command = (await page.getByTestId("trigger-command").textContent())!;
  const id = /hooks\/policies\/(\d+)\/backup/.exec(command)![1];

  // Edit: a bad schedule is refused next to its field; a good one is saved.
  await page.getByTestId(`policy-${policy}`).getByRole("button", { name: "Edit", exact: true }).click();
  const edit = page.getByRole("form", { name: "Edit policy" });
  const renamed = unique("life-renamed");
  await edit.getByLabel("Name").fill(renamed);
  // A selection that cannot work is refused on save, saying what the source has.
  await edit.getByLabel(/Include tables/).fill("custmers*");
  await edit.getByRole("button", { name: "Save policy" }).click();
  await expect(page.getByTestId("edit-error-include")).toContainText("customers, orders");
  await edit.getByLabel(/Include tables/).fill("customers");
  await edit.getByLabel(/Only some columns/).fill("customers=nope");
  await edit.getByRole("button", { name: "Save policy" }).click();
  await expect(page.getByTestId("edit-error-columns")).toContainText("Its columns: id, name.");
  // Saved, it says what it takes now (the key always goes with the columns named).
  await edit.getByLabel(/Only some columns/).fill("customers=name");
  await edit.getByLabel("Schedule").fill("every 5 fortnights");
  await edit.getByRole("button", { name: "Save policy" }).click();
  await expect(page.getByTestId("edit-error-schedule")).not.toBeEmpty();
  await edit.getByLabel("Schedule").fill("every 30 minutes");
  await edit.getByLabel("Time zone").fill("Europe/Berlin");
  await edit.getByRole("button", { name: "Save policy" }).click();
  await expect(page.getByTestId("policy-said")).toHaveText("Policy saved.");
  await expect(page.getByTestId("policy-matches")).toHaveText(
    "Takes 1 of the source's 2 tables now: customers (all 2 columns, 1 row).",
  );
  await expect(edit).toHaveCount(0);
  const row = page.getByTestId(`policy-${renamed}`);
  await expect(row).toContainText("include customers");
  await expect(row).toContainText("every 30 minutes (Europe/Berlin)");
  await expect(row.getByTestId("next-run")).toBeVisible();
  await expect(page.getByTestId(`policy-${policy}`)).toHaveCount(0);

  // Disable: the page says it is paused, also after a reload (the server's state).
  await row.getByRole("button", { name: "Disable", exact: true }).click();
  await expect(row.getByTestId("paused")).toHaveText("paused: not scheduled");
  await expect(row.getByTestId("disabled")).toHaveText("disabled");
  await expect(row.getByTestId("next-run")).toHaveCount(0);
  await page.reload();
  await hydrated(page);
  await expect(row.getByTestId("paused")).toBeVisible();

  // Enable: scheduled again.
  await row.getByRole("button", { name: "Enable", exact: true }).click();
  await expect(row.getByTestId("next-run")).toBeVisible();
  await expect(row.getByTestId("paused")).toHaveCount(0);
  await expect(row.getByTestId("disabled")).toHaveCount(0);

  // Delete: the confirmation says what goes and what stays; "Keep it" keeps it.
  await row.getByRole("button", { name: "Delete", exact: true }).click();
  const confirm = page.getByRole("region", { name: "Delete policy" });
  await expect(confirm.getByTestId("delete-goes")).toContainText("every 30 minutes in Europe/Berlin");
  await expect(confirm.getByTestId("delete-goes")).toContainText("trigger URL");
  await expect(confirm.getByTestId("delete-stays")).toContainText("its 1 snapshot(s)");
  await confirm.getByRole("button", { name: "Keep it" }).click();
  await expect(confirm).toHaveCount(0);
  await expect(row).toBeVisible();
  await row.getByRole("button", { name: "Delete", exact: true }).click();
  await confirm.getByRole("button", { name: `Delete policy ${renamed}` }).click();
  await expect(page.getByTestId("policy-said")).toContainText(`Policy ${renamed} deleted`);
  await expect(row).toHaveCount(0);

  // Its snapshot stays in Backups, as a removed policy's.
  await page.goto("/backups");
  await hydrated(page);
  await expect(page.getByTestId("snapshots").getByText(`removed policy #${id}`, { exact: true })).toBeVisible();
});

test("a user is added as a requester and made an operator", async ({ page, browser }) => {
  await logIn(page, "admin", ADMIN_PASSWORD());
  await page.goto("/users");
  await hydrated(page);
  const add = page.getByRole("form", { name: "Add a user" });
  // Least privilege by default.
  await expect(add.getByLabel("Role")).toHaveValue("requester");
  const name = unique("kim");
  const password = "a long enough password";
  await add.getByLabel("User name").fill(name);
  await add.getByLabel("Initial password").fill(password);
  await add.getByRole("button", { name: "Add user" }).click();
  await expect(page.getByTestId("user-created")).toContainText(`Added user ${name} (requester)`);
  // The form is empty again: no password left in it.
  await expect(add.getByLabel("User name")).toHaveValue("");
  await expect(add.getByLabel("Initial password")).toHaveValue("");
  await expect(add.getByLabel("Role")).toHaveValue("requester");

  // As a requester they cannot configure policies.
  const theirs = await browser.newContext({ baseURL: test.info().project.use.baseURL });
  const them = await theirs.newPage();
  await logIn(them, name, password);
  await them.goto("/policies");
  await hydrated(them);
  await expect(them.getByRole("form", { name: "Create a policy" })).toHaveCount(0);

  // Made an operator: said so, shown in the list, and in effect once they log in again.
  const row = page.getByTestId(`user-${name}`);
  await expect(row.getByLabel(`Role of ${name}`)).toHaveValue("requester");
  await row.getByLabel(`Role of ${name}`).selectOption("operator");
  await row.getByRole("button", { name: "Change role" }).click();
  await expect(page.getByTestId("role-changed")).toContainText(`${name} is now operator`);
  await page.reload();
  await hydrated(page);
  await expect(row.getByLabel(`Role of ${name}`)).toHaveValue("operator");
  // Their old session ended.
  await them.goto("/policies");
  await expect(them).toHaveURL(/\/login/);
  await logIn(them, name, password);
  await them.goto("/policies");
  await hydrated(them);
  await expect(them.getByRole("form", { name: "Create a policy" })).toBeVisible();

  // Removed: the confirmation says what goes; their session ends at once and they are
  // no longer listed.
  await row.getByRole("button", { name: "Remove" }).click();
  const confirm = page.getByTestId("remove-user-confirm");
  await expect(confirm).toContainText("audit log keep their name");
  await confirm.getByRole("button", { name: `Remove ${name}` }).click();
  await expect(page.getByTestId("user-removed")).toContainText(`User ${name} removed`);
  await expect(page.getByTestId(`user-${name}`)).toHaveCount(0);
  await them.goto("/policies");
  await expect(them).toHaveURL(/\/login/);
  await theirs.close();
});
