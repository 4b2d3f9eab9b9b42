// Story: the shop's data is under the two-person rule. A requester asks for a table
// back through the wizard; an operator and the admin (two different people) approve it
// in the console; the restore runs and the request shows the rows it brought back.
import { expect, test, type Browser, type Page } from "@playwright/test";
import * as path from "node:path";
import { ADMIN_PASSWORD, hydrated, logIn, sqlite, tempDir, unique } from "./pages";

async function asUser(browser: Browser, user: string, password: string): Promise<Page> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await logIn(page, user, password);
  return page;
}

async function addUser(page: Page, name: string, role: string, password: string) {
  await page.goto("/users");
  await hydrated(page);
  const form = page.getByRole("form", { name: "Add a user" });
  await form.getByLabel("User name").fill(name);
  await form.getByLabel("Role").selectOption(role);
  await form.getByLabel("Initial password").fill(password);
  await form.getByRole("button", { name: "Add user" }).click();
  await expect(page.getByTestId(`user-${name}`)).toContainText(role);
}

test("a restore request approved by two different people runs and shows its rows", async ({ page, browser }) => {
  const files = tempDir();
  const db = path.join(files, "ledger.db");
  sqlite(db, "CREATE TABLE entries (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL); INSERT INTO entries VALUES (1, 10), (2, 20), (3, 30), (4, 40);");
  const source = unique("ledger");
  const target = unique("ledger-disk");
  const policy = unique("ledger-nightly");
  const rita = unique("rita");
  const olga = unique("olga");
  const errors: string[] = [];
  const watch = (p: Page) => {
    p.on("console", (m) => {
      if (m.type() === "error") errors.push(`${p.url()}: ${m.text()}`);
    });
    p.on("pageerror", (e) => errors.push(`${p.url()}: ${e.message}`));
  };
  watch(page);

  // The admin sets up the source, a target, a policy and one backup.
  await logIn(page, "admin", ADMIN_PASSWORD());
  await page.goto("/sources");
  await hydrated(page);
  const sform = page.getByRole("form", { name: "Add a source" });
  await sform.getByLabel("Name").fill(source);
  await sform.getByLabel("Connection URL").fill(`sqlite://${db}`);
  await sform.getByRole("button", { name: "Add source" }).click();
  await expect(page.getByTestId(`needs-${source}`)).toHaveText("no approval");
  // The two-person rule on this source.
  const row = page.getByTestId(`source-${source}`);
  await row.getByText("Change").click();
  await Promise.all([
    page.waitForResponse((r) => r.url().includes("/api/sources/approval_rule") && r.ok()),
    row.getByLabel("Approvals needed").selectOption({ label: "two approvals (two-person rule)" }),
  ]);
  await expect(page.getByTestId(`needs-${source}`)).toHaveText("two approvals (two-person rule)");

  await page.goto("/targets");
  await hydrated(page);
  const tform = page.getByRole("form", { name: "Add a target" });
  await tform.getByLabel("Name").fill(target);
  await tform.getByLabel(/^Location/).fill(path.join(files, "repo"));
  await tform.getByLabel("Repository password").fill("a repository password");
  await tform.getByRole("button", { name: "Add target" }).click();
  await expect(page.getByTestId(`target-${target}`)).toBeVisible();
  await page.goto("/policies");
  await hydrated(page);
  const pform = page.getByRole("form", { name: "Create a policy" });
  await pform.getByLabel("Name").fill(policy);
  await pform.getByLabel("Source").selectOption({ label: source });
  await pform.getByLabel("Target").selectOption({ label: target });
  await pform.getByRole("button", { name: "Create policy" }).click();
  await page.getByTestId(`policy-${policy}`).getByRole("button", { name: "Run now" }).click();
  await expect(page.getByTestId("job-status")).toHaveText("succeeded", { timeout: 30_000 });

  // A requester with the source granted, and an operator.
  await addUser(page, rita, "requester", "requester password 1");
  await Promise.all([
    page.waitForResponse((r) => r.url().includes("/api/users/grant") && r.ok()),
    page.getByTestId(`user-${rita}`).getByLabel(source).first().check(),
  ]);
  await addUser(page, olga, "operator", "operator password 1");

  // The requester goes through the wizard: it says approvals are needed and files.
  const requester = await asUser(browser, rita, "requester password 1");
  watch(requester);
  await requester.goto("/restores");
  await hydrated(requester);
  await requester.getByLabel("Snapshot").selectOption({ index: 1 });
  await requester.getByLabel("entries (4 rows)").check();
  await requester.getByLabel(/suffix/).fill("_asked");
  await requester.getByRole("button", { name: "Preview" }).click();
  await expect(requester.getByTestId("restore-plan")).toContainText("entries_asked");
  await expect(requester.getByTestId("approval-needed")).toContainText("needs 2 approvals");
  await expect(requester.getByRole("button", { name: "Run restore" })).toHaveCount(0);
  await requester.getByLabel(/^Reason/).fill("Ticket 4711: entries edited by mistake");
  await requester.getByTestId("file-request").click();
  await expect(requester).toHaveURL(/\/requests\/\d+$/);
  await expect(requester.getByTestId("request-state")).toHaveText("requested");
  await expect(requester.getByTestId("request-approvals")).toHaveText("0 of 2 approvals");
  // Their own request offers them no Approve.
  await expect(requester.getByTestId("approve")).toHaveCount(0);
  const requestUrl = requester.url();

  // The operator finds it in Requests and approves: one of two.
  const operator = await asUser(browser, olga, "operator password 1");
  watch(operator);
  await operator.goto("/requests?state=requested");
  await hydrated(operator);
  await operator.getByTestId("requests").getByRole("link", { name: /entries_asked/ }).click();
  await hydrated(operator);
  await expect(operator.getByTestId("request-reason")).toHaveText("Ticket 4711: entries edited by mistake");
  await operator.getByTestId("approve").click();
  await expect(operator.getByTestId("request-approvals")).toContainText("1 of 2 approvals");
  await expect(operator.getByTestId("request-state")).toHaveText("requested");

  // The admin is the second person: the restore runs.
  await page.goto(requestUrl);
  await hydrated(page);
  await page.getByTestId("approve").click();
  await expect(page.getByTestId("request-job")).toBeVisible();
  await expect(async () => {
    await requester.reload();
    await expect(requester.getByTestId("request-state")).toHaveText("done", { timeout: 1_000 });
  }).toPass({ timeout: 30_000 });
  await expect(requester.getByTestId("restored")).toContainText("entries_asked: 4 rows");
  await expect(requester.getByTestId("request-history")).toContainText(`${olga} · request.approve · ok`);
  await expect(requester.getByTestId("request-history")).toContainText("admin · request.start · ok");
  expect(sqlite(db, "SELECT id, amount FROM entries_asked ORDER BY id")).toBe("[(1, 10), (2, 20), (3, 30), (4, 40)]");

  // The same request from a script: the requester makes an API token on their account
  // page (shown once) and files through the REST surface; it shows up for approvers.
  await requester.goto("/account");
  await hydrated(requester);
  const tform = requester.getByRole("form", { name: "Create an API token" });
  await tform.getByLabel("Token name").fill("my-script");
  await tform.getByRole("button", { name: "Create token" }).click();
  const token = (await requester.getByTestId("new-token").textContent())!.trim();
  expect(token).toMatch(/^tsk_/);
  await expect(requester.getByTestId("token-my-script")).toContainText("requester");
  const requestId = Number(new URL(requestUrl).pathname.split("/").pop());
  const detail = await requester.request.post(`/api/requests/get`, { form: { id: String(requestId) } });
  const original = (await detail.json()).request.request;
  const filed = await requester.request.post("/api/v1/requests", {
    headers: { Authorization: `Bearer ${token}` },
    data: { req: { ...original, rename: { entries: "entries_scripted" } }, reason: "nightly job asks again" },
  });
  expect(filed.status()).toBe(201);
  const scripted = (await filed.json()).request;
  await operator.goto("/requests?state=requested");
  await hydrated(operator);
  await expect(operator.getByTestId(`request-${scripted}`)).toContainText("nightly job asks again");
  await expect(operator.getByTestId(`request-${scripted}`)).toContainText(rita);
  expect(errors, errors.join("\n")).toEqual([]);
});
