// Story: someone types a wrong password.
import { expect, test } from "@playwright/test";
import { LoginPage, sessionCookie } from "./pages";

test("a wrong password shows an error and sets no cookie", async ({ page }) => {
  const login = new LoginPage(page);
  await login.goto();
  await login.logIn("admin", "not the password");
  await expect(login.error()).toHaveText("Invalid user name or password.");
  await expect(page).toHaveURL(/\/login/);
  expect(await sessionCookie(page)).toBeUndefined();
  // The form is still there to try again.
  await expect(page.getByRole("button", { name: "Log in" })).toBeEnabled();
});

test("an unknown user gets the same error as a wrong password", async ({ page }) => {
  const login = new LoginPage(page);
  await login.goto();
  await login.logIn("mallory", process.env.TABLESAFE_E2E_ADMIN_PASSWORD!);
  await expect(login.error()).toHaveText("Invalid user name or password.");
  expect(await sessionCookie(page)).toBeUndefined();
});
