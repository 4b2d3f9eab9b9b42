// Story: an operator sets up a restore drill for a policy in the browser, runs it, reads
// the evidence, and the dashboard shows the snapshot as proven restorable.
import { expect, test } from "@playwright/test";
import * as path from "node:path";
import { ADMIN_PASSWORD, backedUpPolicy, hydrated, logIn, sqlite, tempDir } from "./pages";

test("a restore drill is set up, run and proven in the browser", async ({ page }) => {
  const files = tempDir();
  const db = path.join(files, "shop.db");
  sqlite(db, "CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL); INSERT INTO orders VALUES (1, 5), (2, 7);");
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));

  await logIn(page, "admin", ADMIN_PASSWORD());
  const policy = await backedUpPolicy(page, files, db, "drilled");

  // Set up the drill: weekly, with an assertion.
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Drills" }).click();
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Restore drills");
  await hydrated(page);
  const row = page.getByTestId(`drill-${policy}`);
  await expect(row.getByTestId("drill-plan")).toHaveText("no drill planned");
  await row.getByRole("button", { name: "Set up drill" }).click();
  const plan = page.getByRole("form", { name: "Drill plan" });
  await plan.getByLabel("Schedule").fill("0 4 * * 0");
  await plan.getByLabel("SQL assertions").fill("SELECT sum(total) = 12 FROM orders");
  await plan.getByRole("button", { name: "Save drill" }).click();
  await expect(row.getByTestId("drill-plan")).toContainText("0 4 * * 0");
  await expect(row.getByTestId("drill-plan")).toContainText("1 assertion(s)");
  await expect(row.getByTestId("drill-plan")).toContainText("next:");

  // Run it now: the job succeeds and its log shows the checks.
  await row.getByRole("button", { name: "Run drill now" }).click();
  await expect(page).toHaveURL(/\/jobs\/\d+$/);
  await expect(page.getByTestId("job-status")).toHaveText("succeeded", { timeout: 30_000 });
  await expect(page.getByTestId("job-log")).toContainText("orders: 2 of 2 rows, checksum matches (exact)");

  // The evidence, and the dashboard's last proven restorable snapshot.
  await page.goto("/drills");
  await hydrated(page);
  await expect(page.getByTestId(`drill-${policy}`).getByTestId("drill-proof")).toContainText("passed");
  const evidence = page.getByTestId("drills").getByRole("row").filter({ hasText: policy });
  await expect(evidence.getByTestId("drill-outcome")).toHaveText("passed");
  await evidence.getByText("2 checks").click();
  await expect(evidence.getByText("SELECT sum(total) = 12 FROM orders → true")).toBeVisible();
  await expect(page.getByTestId("export-drills")).toHaveAttribute("href", "/drills.csv");
  await page.goto("/");
  await hydrated(page);
  await expect(page.getByTestId(`proven-${policy}`)).toContainText("proven");

  // Changed to on demand (the drill's pause): no next run any more.
  await page.goto("/drills");
  await hydrated(page);
  const again = page.getByTestId(`drill-${policy}`);
  await again.getByRole("button", { name: "Change drill" }).click();
  const edit = page.getByRole("form", { name: "Drill plan" });
  await expect(edit.getByLabel("Schedule")).toHaveValue("0 4 * * 0");
  await edit.getByLabel("Schedule").fill("");
  await edit.getByRole("button", { name: "Save drill" }).click();
  await expect(again.getByTestId("drill-plan")).toContainText("on demand");
  await expect(again.getByTestId("drill-plan")).not.toContainText("next:");

  // Removed, after a confirmation that says what goes and what stays; declining it
  // removes nothing.
  let asked = "";
  page.once("dialog", (d) => { asked = d.message(); void d.dismiss(); });
  await again.getByRole("button", { name: "Remove drill" }).click();
  expect(asked).toContain("past drill reports and the last proof stay");
  await expect(again.getByTestId("drill-plan")).toContainText("on demand");
  page.once("dialog", (d) => void d.accept());
  await again.getByRole("button", { name: "Remove drill" }).click();
  await expect(again.getByTestId("drill-plan")).toHaveText("no drill planned");
  // Its evidence stays.
  await expect(page.getByTestId("drills").getByRole("row").filter({ hasText: policy }).getByTestId("drill-outcome")).toHaveText("passed");
  expect(errors).toEqual([]);
});
