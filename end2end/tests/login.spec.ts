// Story: an admin logs in, sees the dashboard, moves around, and logs out.
import { expect, test } from "@playwright/test";
import { Console, LoginPage, hydrated, logInAsAdmin, sessionCookie } from "./pages";

test("admin logs in and sees the dashboard with every section", async ({ page }) => {
  const console = await logInAsAdmin(page);
  await expect(page).toHaveTitle("Dashboard · tablesafe");
  await expect(page.getByTestId("server-info")).toContainText("history database: SQLite");
  for (const section of ["Dashboard", "Sources", "Targets", "Policies", "Backups", "Restores", "Jobs", "Audit", "Users"]) {
    await expect(console.nav().getByRole("link", { name: section, exact: true })).toBeVisible();
  }
  const cookie = await sessionCookie(page);
  expect(cookie, "a session cookie is set").toBeTruthy();
  expect(cookie!.httpOnly).toBe(true);
  expect(cookie!.sameSite).toBe("Strict");
  expect(await page.evaluate(() => document.cookie), "scripts cannot read the session").not.toContain("tablesafe_session");
});

test("navigation moves between sections without losing the session", async ({ page }) => {
  const console = await logInAsAdmin(page);
  await console.nav().getByRole("link", { name: "Jobs", exact: true }).click();
  await expect(page).toHaveURL(/\/jobs$/);
  await expect(console.heading()).toHaveText("Jobs");
  await expect(page.getByTestId("jobs").or(page.getByText("No jobs."))).toBeVisible();
  await expect(console.nav().getByRole("link", { name: "Jobs", exact: true })).toHaveAttribute("aria-current", "page");
  // A full reload of a section keeps you logged in.
  await page.reload();
  await hydrated(page);
  await expect(console.heading()).toHaveText("Jobs");
  await console.nav().getByRole("link", { name: "Dashboard", exact: true }).click();
  await expect(console.heading()).toHaveText("Dashboard");
});

test("logging out clears the session and protected pages send you to login", async ({ page }) => {
  const console = await logInAsAdmin(page);
  await console.logOut();
  await expect(page).toHaveURL(/\/login$/);
  await expect(new LoginPage(page).form()).toBeVisible();
  expect(await sessionCookie(page), "the cookie is gone").toBeUndefined();
  await page.goto("/");
  await expect(page).toHaveURL(/\/login$/);
});

test("the login form works from the keyboard alone", async ({ page }) => {
  const login = new LoginPage(page);
  await login.goto();
  await page.getByLabel("User name").focus();
  await page.keyboard.type("admin");
  await page.keyboard.press("Tab");
  await page.keyboard.type(process.env.TABLESAFE_E2E_ADMIN_PASSWORD!);
  await page.keyboard.press("Enter");
  await new Console(page).expectDashboard();
});
