// Story: the shop's data is under the two-person rule. A requester asks for a table
// back through the wizard; an operator and the admin (two different people) approve it
// in the console; the restore runs and the request shows the rows it brought back. The
// admin has set up notifications: a signed webhook and e-mail (real receivers on
// loopback) get every step, and /metrics counts it.
import { expect, test, type Browser, type Page } from "@playwright/test";
import * as path from "node:path";
import {
  ADMIN_PASSWORD,
  hydrated,
  logIn,
  signed,
  sqlite,
  startSmtpSink,
  startWebhookReceiver,
  tempDir,
  unique,
} from "./pages";

const HOOK_SECRET = "e2e webhook signing secret";

// Receivers a test started, stopped after it whatever its outcome.
const cleanups: (() => Promise<void>)[] = [];
test.afterEach(async () => {
  for (const stop of cleanups.splice(0)) await stop();
});

/** The admin adds a channel on the Notifications page and sends it a test. */
async function addChannel(page: Page, name: string, fill: (form: ReturnType<Page["getByRole"]>) => Promise<void>) {
  await page.goto("/notifications");
  await hydrated(page);
  const form = page.getByRole("form", { name: "Channel" });
  await form.getByLabel("Name").fill(name);
  await fill(form);
  await form.getByRole("button", { name: "Add channel" }).click();
  await expect(page.getByTestId(`channel-${name}`)).toBeVisible();
  await page.getByTestId(`test-${name}`).click();
  await expect(page.getByTestId("test-result")).toContainText("Test message delivered");
}

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
  await tform.getByLabel("Repeat password").fill("a repository password");
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

  // Notifications: a signed webhook for every event, e-mail for restores.
  const hooks = await startWebhookReceiver();
  const smtp = await startSmtpSink();
  cleanups.push(() => hooks.close(), async () => smtp.stop());
  const hookName = unique("ops-hook");
  await addChannel(page, hookName, async (form) => {
    await form.getByLabel("URL", { exact: true }).fill(hooks.url);
    await form.getByLabel(/^Signing secret/).fill(HOOK_SECRET);
  });
  const mailName = unique("dba-mail");
  await addChannel(page, mailName, async (form) => {
    await form.getByLabel("Kind").selectOption("email");
    await form.getByLabel("SMTP server").fill("127.0.0.1");
    await form.getByLabel("Port").fill(String(smtp.port));
    await form.getByLabel("Connection security").selectOption("none");
    await form.getByLabel("From").fill("tablesafe@example.com");
    await form.getByLabel(/^To/).fill("dba@example.com");
    for (const event of ["Backup failed", /^Backup late/, "Verify found damage"]) {
      await form.getByLabel(event).uncheck();
    }
  });
  await expect(page.getByTestId(`channel-${mailName}`)).toContainText("to dba@example.com via 127.0.0.1");
  await expect(page.getByTestId(`channel-${mailName}`)).not.toContainText("backup.failed");
  expect(hooks.got.some((d) => d.event === "test" && signed(d, HOOK_SECRET))).toBe(true);
  await expect.poll(() => smtp.mail().some((m) => m.includes(`Test message for channel ${mailName}`))).toBe(true);

  // A requester with the source granted, and an operator.
  await addUser(page, rita, "requester", "requester password 1");
  await Promise.all([
    page.waitForResponse((r) => r.url().includes("/api/users/grant") && r.ok()),
    page.getByTestId(`user-${rita}`).getByLabel(`Grant ${source}`).check(),
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

  // The requester changes the reason: the approval given so far stops counting, and the
  // operator approves the request as it is now.
  await requester.reload();
  await hydrated(requester);
  await expect(requester.getByTestId("request-approvals")).toContainText("1 of 2 approvals");
  await requester.getByText("Change this request").click();
  const change = requester.getByRole("form", { name: "Change request" });
  await expect(change.getByLabel("Restore entries as")).toHaveValue("entries_asked");
  await change.getByLabel("Reason").fill("Ticket 4711: entries edited by mistake on Monday");
  await change.getByRole("button", { name: "Save changes" }).click();
  await expect(requester.getByTestId("request-reason")).toHaveText("Ticket 4711: entries edited by mistake on Monday");
  await expect(requester.getByTestId("request-approvals")).toHaveText("0 of 2 approvals");
  await operator.reload();
  await hydrated(operator);
  await expect(operator.getByTestId("request-reason")).toHaveText("Ticket 4711: entries edited by mistake on Monday");
  await operator.getByTestId("approve").click();
  await expect(operator.getByTestId("request-approvals")).toContainText("1 of 2 approvals");

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
  await expect(requester.getByTestId("request-history")).toContainText(`${rita} · request.change · ok`);
  await expect(requester.getByTestId("request-history")).toContainText("admin · request.start · ok");
  expect(sqlite(db, "SELECT id, amount FROM entries_asked ORDER BY id")).toBe("[(1, 10), (2, 20), (3, 30), (4, 40)]");

  // Every step reached the webhook (signed) and the mailbox, and the console lists the
  // deliveries.
  const requestId = Number(new URL(requestUrl).pathname.split("/").pop());
  const about = (event: string) =>
    hooks.got.find((d) => d.event === event && d.json?.details?.request === requestId);
  await expect.poll(() => ["restore.requested", "restore.approved", "restore.finished"].filter((e) => about(e)).length, { timeout: 20_000 }).toBe(3);
  for (const e of ["restore.requested", "restore.approved", "restore.finished"]) {
    expect(signed(about(e)!, HOOK_SECRET), e).toBe(true);
  }
  expect(about("restore.requested")!.json.details.requested_by).toBe(rita);
  expect(about("restore.finished")!.json.details.status).toBe("succeeded");
  await expect
    .poll(() => smtp.mail().filter((m) => m.includes(`Restore request #${requestId} `)).length, { timeout: 20_000 })
    .toBe(2);
  await expect.poll(() => smtp.mail().some((m) => m.includes("entries_asked") && m.includes(": succeeded"))).toBe(true);
  await page.goto("/notifications");
  await hydrated(page);
  await expect(page.getByTestId("deliveries").locator(`tr[data-event="restore.finished"][data-status="delivered"]`).first()).toBeVisible();
  const metrics = await (
    await page.request.get("/metrics", { headers: { Authorization: `Bearer ${process.env.TABLESAFE_E2E_METRICS_TOKEN}` } })
  ).text();
  expect(metrics).toMatch(/tablesafe_notifications_total\{event="restore.finished",outcome="delivered"\} [1-9]/);
  expect(metrics).toMatch(/tablesafe_jobs_total\{kind="restore",outcome="succeeded"\} [1-9]/);

  // The same request from a script: the requester makes an API token on their account
  // page (shown once) and files through the REST surface; it shows up for approvers.
  await requester.goto("/account");
  await hydrated(requester);
  const tokenForm = requester.getByRole("form", { name: "Create an API token" });
  await tokenForm.getByLabel("Token name").fill("my-script");
  await tokenForm.getByRole("button", { name: "Create token" }).click();
  const token = (await requester.getByTestId("new-token").textContent())!.trim();
  expect(token).toMatch(/^tsk_/);
  await expect(requester.getByTestId("token-my-script")).toContainText("requester");
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
