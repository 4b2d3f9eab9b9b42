// Issue 26, points 4, 8 and 10: every server error reaches the screen (a too-long
// restore suffix, a negative request expiry), saves made on change say "Saved", forms
// empty themselves after success and say what they made (never keeping a password), a
// repository password is typed twice, and approvers see how many requests wait for
// them — a count that drops, with the Approve button, once they approved.
import { expect, test, type Browser, type Page } from "@playwright/test";
import * as path from "node:path";
import { ADMIN_PASSWORD, hydrated, logIn, sqlite, tempDir, unique } from "./pages";

const PASSWORD = "a long enough password";

async function asUser(browser: Browser, user: string, password: string): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await logIn(page, user, password);
  return page;
}

/** As the admin, through the forms: a source, a target and a policy over a SQLite file
 * with one table, backed up once. Checks on the way that each add form empties itself,
 * says what it made, and that the repository password must be typed the same twice. */
async function setUp(page: Page) {
  const files = tempDir();
  const db = path.join(files, "shop.db");
  sqlite(db, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann'), (2, 'Bob');");
  const source = unique("sig-shop");
  const target = unique("sig-disk");
  const policy = unique("sig-nightly");
  await logIn(page, "admin", ADMIN_PASSWORD());

  await page.goto("/sources");
  await hydrated(page);
  const sform = page.getByRole("form", { name: "Add a source" });
  await sform.getByLabel("Name").fill(source);
  await sform.getByLabel("Connection URL").fill(`sqlite://${db}`);
  await sform.getByRole("button", { name: "Add source" }).click();
  await expect(page.getByTestId("source-saved")).toHaveText(`Source '${source}' added.`);
  await expect(page.getByTestId(`source-${source}`)).toBeVisible();
  await expect(sform.getByLabel("Name")).toHaveValue("");
  await expect(sform.getByLabel("Connection URL")).toHaveValue("");

  await page.goto("/targets");
  await hydrated(page);
  const tform = page.getByRole("form", { name: "Add a target" });
  await tform.getByLabel("Name").fill(target);
  await tform.getByLabel(/^Location/).fill(path.join(files, "repo"));
  await tform.getByLabel("Repository password").fill("a repository password");
  // A typo in the repeated password: refused before anything is sent.
  await tform.getByLabel("Repeat password").fill("a repository pasword");
  await tform.getByRole("button", { name: "Add target" }).click();
  await expect(page.getByTestId("error-password_repeat")).toContainText("The two passwords differ");
  await expect(page.getByTestId(`target-${target}`)).toHaveCount(0);
  await tform.getByLabel("Repeat password").fill("a repository password");
  await tform.getByRole("button", { name: "Add target" }).click();
  await expect(page.getByTestId("target-saved")).toContainText(`Target '${target}' added.`);
  await expect(page.getByTestId(`target-${target}`)).toBeVisible();
  await expect(page.getByTestId("error-password_repeat")).toHaveText("");
  // Nothing of it stays in the form, least of all the password.
  for (const label of ["Name", "Repository password", "Repeat password"]) {
    await expect(tform.getByLabel(label)).toHaveValue("");
  }

  await page.goto("/policies");
  await hydrated(page);
  const pform = page.getByRole("form", { name: "Create a policy" });
  await pform.getByLabel("Name").fill(policy);
  await pform.getByLabel("Source").selectOption({ label: source });
  await pform.getByLabel("Target", { exact: true }).selectOption({ label: target });
  await pform.getByRole("button", { name: "Create policy" }).click();
  await page.getByTestId(`policy-${policy}`).getByRole("button", { name: "Run now" }).click();
  await expect(page.getByTestId("job-status")).toHaveText("succeeded", { timeout: 30_000 });
  return { source, db };
}

/** Picks the snapshot of `source` in the restore wizard, and its customers table. */
async function pickSnapshot(page: Page, source: string) {
  await page.goto("/restores");
  await hydrated(page);
  const option = page.locator("#snapshot option", { hasText: ` · ${source} · ` }).first();
  await page.getByLabel("Snapshot").selectOption((await option.getAttribute("value"))!);
  await page.getByLabel(/^customers \(/).check();
}

/** The admin adds a user with the default role (requester) through the Users form. */
async function addRequester(page: Page, name: string) {
  await page.goto("/users");
  await hydrated(page);
  const form = page.getByRole("form", { name: "Add a user" });
  // Least privilege by default.
  await expect(form.getByLabel("Role")).toHaveValue("requester");
  await form.getByLabel("User name").fill(name);
  await form.getByLabel("Initial password").fill(PASSWORD);
  await form.getByRole("button", { name: "Add user" }).click();
  await expect(page.getByTestId("user-created")).toContainText(`Added user ${name} (requester)`);
  await expect(page.getByTestId(`user-${name}`)).toBeVisible();
  await expect(form.getByLabel("User name")).toHaveValue("");
  await expect(form.getByLabel("Initial password")).toHaveValue("");
}

test("server errors reach the screen and saves on change say Saved", async ({ page }) => {
  const { source } = await setUp(page);

  // A 300-character suffix: said as it is typed, and the server's refusal of the
  // preview is shown too (it names no field of the wizard).
  await pickSnapshot(page, source);
  await page.getByLabel(/suffix/).fill("_" + "x".repeat(300));
  await expect(page.getByTestId("error-suffix")).toContainText("within 63 characters");
  await page.getByRole("button", { name: "Preview" }).click();
  await expect(page.getByRole("alert").filter({ hasText: "cannot be a new table's name" })).toBeVisible();
  await expect(page.getByTestId("restore-plan")).toHaveCount(0);

  // A negative request expiry: refused next to the field, and the panel stays open.
  await page.goto("/sources");
  await hydrated(page);
  const row = page.getByTestId(`source-${source}`);
  await row.getByText("Change").click();
  const expiry = row.getByLabel("Requests expire after (hours)");
  await expiry.fill("-5");
  await expiry.press("Tab");
  await expect(row.getByTestId("rule-status")).toContainText("Between 1 minute and 90 days");
  await expect(expiry).toBeVisible();
  await expiry.fill("48");
  await expiry.press("Tab");
  await expect(row.getByTestId("rule-status")).toHaveText("Saved");
  await row.getByLabel("Approvals needed").selectOption({ label: "one approval" });
  await expect(row.getByTestId("rule-status")).toHaveText("Saved");
  await expect(page.getByTestId(`needs-${source}`)).toHaveText("one approval");
  await page.reload();
  await hydrated(page);
  await expect(page.getByTestId(`needs-${source}`)).toHaveText("one approval");
  await page.getByTestId(`source-${source}`).getByText("Change").click();
  await expect(page.getByTestId(`source-${source}`).getByLabel("Requests expire after (hours)")).toHaveValue("48");

  // Grants and approvers save as they are ticked, and say so.
  const rita = unique("rita");
  await addRequester(page, rita);
  await page.getByTestId(`user-${rita}`).getByLabel(`Grant ${source}`).check();
  await expect(page.getByTestId("tick-saved")).toHaveText(`Saved: ${rita} may now restore from ${source}.`);
  await page.getByTestId(`user-${rita}`).getByLabel(`Approver for ${source}`).check();
  await expect(page.getByTestId("tick-saved")).toHaveText(`Saved: ${rita} may now approve restores of ${source}.`);
  await page.reload();
  await hydrated(page);
  await expect(page.getByTestId(`user-${rita}`).getByLabel(`Approver for ${source}`)).toBeChecked();
});

test("approvers see the requests waiting for them, until they approved", async ({ page, browser }) => {
  const { source } = await setUp(page);
  const rita = unique("rita");
  const reed = unique("reed");
  await page.goto("/sources");
  await hydrated(page);
  const row = page.getByTestId(`source-${source}`);
  await row.getByText("Change").click();
  await row.getByLabel("Approvals needed").selectOption({ label: "two approvals (two-person rule)" });
  await expect(row.getByTestId("rule-status")).toHaveText("Saved");
  await addRequester(page, rita);
  await page.getByTestId(`user-${rita}`).getByLabel(`Grant ${source}`).check();
  await expect(page.getByTestId("tick-saved")).toContainText(`${rita} may now restore from ${source}`);
  await addRequester(page, reed);
  await page.getByTestId(`user-${reed}`).getByLabel(`Approver for ${source}`).check();
  await expect(page.getByTestId("tick-saved")).toContainText(`${reed} may now approve restores of ${source}`);

  // Nothing waits for Reed yet: no badge, no line on the dashboard.
  const approver = await asUser(browser, reed, PASSWORD);
  await expect(approver.getByTestId("requests-badge")).toHaveCount(0);
  await expect(approver.getByTestId("waiting-for-you")).toHaveCount(0);

  // Rita asks for the table back.
  const requester = await asUser(browser, rita, PASSWORD);
  await pickSnapshot(requester, source);
  await requester.getByLabel(/suffix/).fill("_back");
  await requester.getByRole("button", { name: "Preview" }).click();
  await expect(requester.getByTestId("approval-needed")).toContainText("needs 2 approvals");
  await requester.getByLabel(/^Reason/).fill("Ticket 26: customers edited by mistake");
  await requester.getByTestId("file-request").click();
  await expect(requester).toHaveURL(/\/requests\/\d+$/);
  const requestUrl = requester.url();
  // Not her own to approve, and nothing waits for her.
  await expect(requester.getByTestId("approve")).toHaveCount(0);
  await expect(requester.getByTestId("requests-badge")).toHaveCount(0);

  // Reed sees one waiting, on Requests and on the dashboard.
  await approver.goto("/");
  await hydrated(approver);
  await expect(approver.getByTestId("requests-badge")).toHaveText("1 waiting for your approval");
  await expect(approver.getByTestId("waiting-for-you")).toHaveText("1 restore request waits for your approval");
  await approver.getByTestId("waiting-for-you").getByRole("link").click();
  await expect(approver.getByTestId("requests")).toContainText("Ticket 26");
  await approver.goto(requestUrl);
  await hydrated(approver);
  await approver.getByTestId("approve").click();
  await expect(approver.getByTestId("approved")).toBeVisible();
  await expect(approver.getByTestId("request-approvals")).toHaveText("1 of 2 approvals");
  // Approve is gone for him, and so is the count.
  await expect(approver.getByTestId("approve")).toHaveCount(0);
  await expect(approver.getByTestId("requests-badge")).toHaveCount(0);
  await approver.reload();
  await hydrated(approver);
  await expect(approver.getByTestId("approve")).toHaveCount(0);
  await approver.goto("/");
  await hydrated(approver);
  await expect(approver.getByTestId("waiting-for-you")).toHaveCount(0);

  // The admin, the second person, still has it waiting and may approve.
  await page.goto(requestUrl);
  await hydrated(page);
  await expect(page.getByTestId("approve")).toBeVisible();
});
