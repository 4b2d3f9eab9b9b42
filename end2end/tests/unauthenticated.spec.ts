// Story: someone who is not logged in opens a bookmark.
import { expect, test } from "@playwright/test";
import { LoginPage } from "./pages";

for (const path of ["/", "/sources", "/jobs", "/audit", "/users"]) {
  test(`visiting ${path} without a session lands on login`, async ({ page }) => {
    await page.goto(path);
    await expect(page).toHaveURL(/\/login$/);
    await expect(new LoginPage(page).form()).toBeVisible();
    await expect(page.getByRole("navigation", { name: "Main" })).toHaveCount(0);
  });
}

test("the login page is readable before the wasm bundle loads", async ({ browser }) => {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto("/login");
  await expect(page.getByRole("button", { name: "Log in" })).toBeVisible();
  await expect(page.getByLabel("User name")).toBeVisible();
  await context.close();
});
