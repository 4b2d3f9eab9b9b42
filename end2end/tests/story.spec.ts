// Story: a new admin protects a SQLite and a PostgreSQL database, watches the backups
// run, restores a table under a new name and finds the rows there; the audit log has
// recorded the whole session.
import { expect, test, type Page } from "@playwright/test";
import * as path from "node:path";
import { ADMIN_PASSWORD, hydrated, logIn, psql, sqlite, tempDir, unique } from "./pages";

async function addSource(page: Page, name: string, url: string) {
  await page.goto("/sources");
  await hydrated(page);
  const form = page.getByRole("form", { name: "Add a source" });
  await form.getByLabel("Name").fill(name);
  await form.getByLabel("Connection URL").fill(url);
  await form.getByRole("button", { name: "Add source" }).click();
  await expect(page.getByTestId(`source-${name}`)).toBeVisible();
}

async function runPolicy(page: Page, name: string, source: string, target: string) {
  await page.goto("/policies");
  await hydrated(page);
  const form = page.getByRole("form", { name: "Create a policy" });
  await form.getByLabel("Name").fill(name);
  await form.getByLabel("Source").selectOption({ label: source });
  await form.getByLabel("Target").selectOption({ label: target });
  await form.getByRole("button", { name: "Create policy" }).click();
  const row = page.getByTestId(`policy-${name}`);
  await expect(row).toBeVisible();
  await row.getByRole("button", { name: "Run now" }).click();
  // Run now opens the job, whose progress updates without a reload.
  await expect(page).toHaveURL(/\/jobs\/\d+$/);
  await expect(page.getByTestId("job-status")).toHaveText("succeeded", { timeout: 30_000 });
  await expect(page.getByRole("progressbar")).toHaveAttribute("aria-valuenow", "100");
  await expect(page.getByTestId("job-snapshot")).toBeVisible();
  await expect(page.getByTestId("job-log")).toContainText("snapshot");
}

test("a new admin backs up SQLite and PostgreSQL and restores a table under a new name", async ({ page }) => {
  const files = tempDir();
  const db = path.join(files, "shop.db");
  sqlite(db, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL); INSERT INTO customers VALUES (1, 'Ann'), (2, 'Bob'), (3, 'Cy');");
  const sq = unique("sqlite-shop");
  const pg = unique("pg-shop");
  const disk = unique("disk");
  // Pages full of data must hydrate cleanly too.
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`${page.url()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));

  await logIn(page, "admin", ADMIN_PASSWORD());

  // Sources: SQLite and PostgreSQL; the password never comes back.
  await addSource(page, sq, `sqlite://${db}`);
  await addSource(page, pg, process.env.TABLESAFE_E2E_PG!);
  const pgRow = page.getByTestId(`source-${pg}`);
  await expect(pgRow).not.toContainText(process.env.TABLESAFE_E2E_PG_PASSWORD!);
  expect(await page.content()).not.toContain(process.env.TABLESAFE_E2E_PG_PASSWORD!);
  await pgRow.getByRole("button", { name: "Test connection" }).click();
  // Other tests restore tables into the same database: at least the original one.
  // It also says how the connection is protected (this test server offers no TLS).
  await expect(page.getByTestId("test-result")).toHaveText(
    /^Connected: \d+ tables\. Connection: not encrypted \(add sslmode=verify-full/,
  );
  await pgRow.getByRole("link", { name: pg }).click();
  await expect(page.getByTestId("table-public.orders")).toContainText("500");
  await expect(page.getByTestId("table-public.orders")).toContainText("id bigint (key)");

  // A target.
  await page.goto("/targets");
  await hydrated(page);
  const tform = page.getByRole("form", { name: "Add a target" });
  await tform.getByLabel("Name").fill(disk);
  await tform.getByLabel("Directory").fill(path.join(files, "repo"));
  await tform.getByLabel("Repository password").fill("a repository password");
  await tform.getByLabel("Repeat password").fill("a repository password");
  await tform.getByRole("button", { name: "Add target" }).click();
  await expect(page.getByTestId(`target-${disk}`)).toContainText(path.join(files, "repo"));

  // Policies, run now, watched to the end.
  await runPolicy(page, unique("sqlite-nightly"), sq, disk);
  await runPolicy(page, unique("pg-nightly"), pg, disk);

  // The snapshots are in the history.
  await page.goto("/backups");
  await hydrated(page);
  await expect(page.getByTestId("snapshots").getByRole("row").filter({ hasText: sq })).toHaveCount(1);
  await expect(page.getByTestId("snapshots").getByRole("row").filter({ hasText: pg })).toContainText("500");

  // Restore the SQLite table under a new name, through the wizard.
  await page.getByTestId("snapshots").getByRole("row").filter({ hasText: sq }).getByRole("link", { name: "Restore" }).click();
  await expect(page).toHaveURL(/\/restores\?snapshot=\d+$/);
  await hydrated(page);
  await page.getByLabel("customers (3 rows)").check();
  await page.getByLabel(/suffix/).fill("_back");
  await page.getByRole("button", { name: "Preview" }).click();
  const plan = page.getByTestId("restore-plan");
  await expect(plan).toContainText("customers_back");
  await expect(plan).toContainText("create");
  await page.getByRole("button", { name: "Run restore" }).click();
  await expect(page).toHaveURL(/\/jobs\/\d+$/);
  await expect(page.getByTestId("job-status")).toHaveText("succeeded", { timeout: 30_000 });
  await expect(page.getByTestId("restored")).toContainText("customers_back: 3 rows");
  expect(sqlite(db, "SELECT id, name FROM customers_back ORDER BY id")).toBe("[(1, 'Ann'), (2, 'Bob'), (3, 'Cy')]");

  // And the PostgreSQL table, next to the original.
  await page.goto("/backups");
  await hydrated(page);
  await page.getByTestId("snapshots").getByRole("row").filter({ hasText: pg }).getByRole("link", { name: "Restore" }).click();
  await hydrated(page);
  await page.getByLabel("public.orders (500 rows)").check();
  // Only some columns: the key comes along.
  await page.getByLabel(/Columns of public.orders/).fill("customer");
  const suffix = "_" + unique("r").replace("-", "_");
  await page.getByLabel(/suffix/).fill(suffix);
  await page.getByRole("button", { name: "Preview" }).click();
  await expect(page.getByTestId("restore-plan")).toContainText(`public.orders${suffix}`);
  await page.getByRole("button", { name: "Run restore" }).click();
  await expect(page.getByTestId("job-status")).toHaveText("succeeded", { timeout: 30_000 });
  expect(psql(`SELECT count(*), count(DISTINCT customer) FROM orders${suffix}`)).toBe(psql("SELECT count(*), count(DISTINCT customer) FROM orders"));
  expect(psql(`SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'orders${suffix}'`)).toBe("id,customer");

  // The dashboard knows the sources are protected.
  await page.goto("/");
  await expect(page.getByTestId(`health-${sq}`)).toContainText("Last successful backup");
  await expect(page.getByTestId(`health-${sq}`)).not.toContainText("never");
  // Measured from now: seconds or minutes ago, not hours.
  await expect(page.getByTestId(`health-${sq}`)).toContainText(/\d+(\.\d)? s ago|\d+ min \d+ s ago/);

  // The audit log recorded the session.
  await page.goto("/audit?user=admin");
  await hydrated(page);
  const audit = page.getByTestId("audit");
  for (const action of ["login", "source.add", "source.test", "target.add", "policy.create", "policy.run", "restore.start"]) {
    // On a phone a cell's name starts with its column's label ("Action: login").
    const name = new RegExp(`^(Action: )?${action.replace(".", "\\.")}$`);
    await expect(audit.getByRole("cell", { name }).first()).toBeVisible();
  }
  await page.getByRole("button", { name: "Verify the chain" }).click();
  await expect(page.getByTestId("chain")).toContainText("The chain is intact");
  expect(errors, errors.join("\n")).toEqual([]);
});

test("bad input gets a message next to the field and changes nothing", async ({ page }) => {
  await logIn(page, "admin", ADMIN_PASSWORD());
  await page.goto("/sources");
  await hydrated(page);
  const form = page.getByRole("form", { name: "Add a source" });
  // The shared check, in the browser, as soon as the field is left.
  await form.getByLabel("Connection URL").fill("mysql://somewhere");
  await form.getByLabel("Name").focus();
  await expect(page.getByTestId("error-url")).toContainText("Name the host and database");
  await form.getByLabel("Connection URL").fill("oracle://somewhere");
  await form.getByLabel("Name").focus();
  await expect(page.getByTestId("error-url")).toContainText("sqlite:///absolute/path.db");
  // The server's check of the same rule, after submitting.
  const name = unique("bad");
  await form.getByLabel("Name").fill(name);
  await form.getByRole("button", { name: "Add source" }).click();
  await expect(page.getByTestId("error-url")).toContainText("Use sqlite:///absolute/path.db");
  await expect(page.getByTestId(`source-${name}`)).toHaveCount(0);
  // SQL in a name is refused, not stored.
  await form.getByLabel("Name").fill("x'; DROP TABLE sources; --");
  await form.getByLabel("Connection URL").fill("sqlite:///tmp/x.db");
  await form.getByRole("button", { name: "Add source" }).click();
  await expect(page.getByTestId("error-name")).toContainText("letters, digits");
});

test("a requester sees only what is granted, cannot manage users, and changes their password", async ({ page, browser }) => {
  const user = unique("req");
  const granted = unique("granted-src");
  const hidden = unique("hidden-src");
  const files = tempDir();
  await logIn(page, "admin", ADMIN_PASSWORD());
  for (const name of [granted, hidden]) {
    const db = path.join(files, `${name}.db`);
    sqlite(db, "CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);");
    await addSource(page, name, `sqlite://${db}`);
  }
  await page.goto("/users");
  await hydrated(page);
  const form = page.getByRole("form", { name: "Add a user" });
  await form.getByLabel("User name").fill(user);
  await form.getByLabel("Role").selectOption("requester");
  await form.getByLabel("Initial password").fill("requester password 1");
  await form.getByRole("button", { name: "Add user" }).click();
  const row = page.getByTestId(`user-${user}`);
  await expect(row).toContainText("requester");
  // The admin grants one source.
  await Promise.all([
    page.waitForResponse((r) => r.url().includes("/api/users/grant") && r.ok()),
    row.getByLabel(`Grant ${granted}`).check(),
  ]);
  await page.reload();
  await hydrated(page);
  await expect(page.getByTestId(`user-${user}`).getByLabel(`Grant ${granted}`)).toBeChecked();

  const context = await browser.newContext();
  const other = await context.newPage();
  await logIn(other, user, "requester password 1");
  const nav = other.getByRole("navigation", { name: "Main" });
  await expect(nav.getByRole("link", { name: "Restores", exact: true })).toBeVisible();
  await expect(nav.getByRole("link", { name: "Users", exact: true })).toHaveCount(0);
  await expect(nav.getByRole("link", { name: "Audit", exact: true })).toHaveCount(0);
  // Typing the address does not help: the server refuses.
  await other.goto("/users");
  await expect(other.getByRole("alert")).toContainText("You are not allowed to do this.");
  await other.goto("/sources");
  await expect(other.getByTestId(`source-${granted}`)).toBeVisible();
  await expect(other.getByTestId(`source-${hidden}`)).toHaveCount(0);
  await expect(other.getByRole("form", { name: "Add a source" })).toHaveCount(0);
  // Their own password.
  await other.getByTestId("current-user").click();
  await hydrated(other);
  const pw = other.getByRole("form", { name: "Change password" });
  await pw.getByLabel("Current password").fill("wrong password here");
  await pw.getByLabel("New password").fill("requester password 2");
  await pw.getByRole("button", { name: "Change password" }).click();
  await expect(other.getByTestId("error-current")).toContainText("The current password is wrong.");
  await pw.getByLabel("Current password").fill("requester password 1");
  await pw.getByRole("button", { name: "Change password" }).click();
  await expect(other.getByRole("status")).toHaveText("Your password was changed.");
  await context.close();
  const again = await browser.newContext();
  await logIn(await again.newPage(), user, "requester password 2");
  await again.close();

  // The admin disables the account.
  await page.getByTestId(`user-${user}`).getByRole("button", { name: "Disable" }).click();
  await expect(page.getByTestId(`user-${user}`)).toContainText("disabled");
});

test("a trigger URL starts a backup from outside the console", async ({ page, request }) => {
  const files = tempDir();
  const db = path.join(files, "app.db");
  sqlite(db, "CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);");
  const src = unique("hook-src");
  const disk = unique("hook-disk");
  const pol = unique("hook-policy");
  await logIn(page, "admin", ADMIN_PASSWORD());
  await addSource(page, src, `sqlite://${db}`);
  await page.goto("/targets");
  await hydrated(page);
  const tform = page.getByRole("form", { name: "Add a target" });
  await tform.getByLabel("Name").fill(disk);
  await tform.getByLabel("Directory").fill(path.join(files, "repo"));
  await tform.getByLabel("Repository password").fill("a repository password");
  await tform.getByLabel("Repeat password").fill("a repository password");
  await tform.getByRole("button", { name: "Add target" }).click();
  await expect(page.getByTestId(`target-${disk}`)).toBeVisible();
  await page.goto("/policies");
  await hydrated(page);
  const form = page.getByRole("form", { name: "Create a policy" });
  await form.getByLabel("Name").fill(pol);
  await form.getByLabel("Source").selectOption({ label: src });
  await form.getByLabel("Target").selectOption({ label: disk });
  await form.getByLabel("Schedule").fill("daily at 02:30");
  await form.getByRole("button", { name: "Create policy" }).click();
  const row = page.getByTestId(`policy-${pol}`);
  await expect(row.getByTestId("next-run")).toContainText("02:30:00 UTC");

  await row.getByRole("button", { name: "Trigger URL" }).click();
  const command = await page.getByTestId("trigger-command").textContent();
  const m = command!.match(/Bearer ([^']+)' (\S+)$/);
  expect(m, command!).toBeTruthy();
  const [, token, url] = m!;
  expect((await request.post(url, { headers: { Authorization: "Bearer wrong" } })).status()).toBe(401);
  const resp = await request.post(url, { headers: { Authorization: `Bearer ${token}` } });
  expect(resp.status()).toBe(202);
  const { job } = await resp.json();
  await page.goto(`/jobs/${job}`);
  await expect(page.getByTestId("job-status")).toHaveText("succeeded", { timeout: 30_000 });
  await expect(page.getByRole("heading", { level: 1 })).toContainText(`Triggered backup: ${pol}`);
});
