// Every page renders on the server and hydrates without errors in the browser console
// (a hydration mismatch or a panic in the wasm shows up there).
import { expect, test } from "@playwright/test";
import { ADMIN_PASSWORD, hydrated, logIn } from "./pages";

test("every page hydrates without console errors", async ({ page }) => {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`${page.url()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
  await logIn(page, "admin", ADMIN_PASSWORD());
  for (const path of ["/", "/sources", "/targets", "/policies", "/backups", "/restores", "/requests", "/jobs", "/notifications", "/audit", "/users", "/account"]) {
    await page.goto(path);
    await hydrated(page);
    await expect(page.getByRole("heading", { level: 1 })).toBeVisible();
    // Let resources resolve and effects run.
    await page.waitForTimeout(300);
  }
  expect(errors, errors.join("\n")).toEqual([]);
});
