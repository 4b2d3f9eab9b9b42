// Every page renders on the server and hydrates without errors in the browser console
// (a hydration mismatch or a panic in the wasm shows up there), under the console's
// Content-Security-Policy: nothing on any page is blocked by it (a blocked script,
// style or wasm compile fires a `securitypolicyviolation` event and a console error).
import { expect, test } from "@playwright/test";
import { ADMIN_PASSWORD, hydrated, logIn } from "./pages";

test("every page hydrates without console errors or CSP violations", async ({ page }) => {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`${page.url()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
  // Added by the browser itself, so not subject to the page's policy.
  await page.addInitScript(() => {
    const seen: string[] = ((window as any).__cspViolations = []);
    document.addEventListener("securitypolicyviolation", (e) =>
      seen.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} (${e.sourceFile}:${e.lineNumber})`),
    );
  });
  const violations: string[] = [];
  const collect = async () => {
    for (const v of await page.evaluate(() => (window as any).__cspViolations as string[])) {
      violations.push(`${page.url()}: ${v}`);
    }
  };
  await logIn(page, "admin", ADMIN_PASSWORD());
  await collect();
  for (const path of ["/", "/sources", "/targets", "/policies", "/backups", "/restores", "/requests", "/jobs", "/notifications", "/audit", "/users", "/account"]) {
    const response = await page.goto(path);
    const csp = response!.headers()["content-security-policy"] ?? "";
    expect(csp, path).toMatch(/script-src 'self' 'nonce-[A-Za-z0-9_-]+' 'wasm-unsafe-eval'/);
    expect(csp, path).toContain("frame-ancestors 'none'");
    await hydrated(page);
    await expect(page.getByRole("heading", { level: 1 })).toBeVisible();
    // Let resources resolve and effects run.
    await page.waitForTimeout(300);
    await collect();
  }
  expect(violations, violations.join("\n")).toEqual([]);
  expect(errors, errors.join("\n")).toEqual([]);
});

// The filter forms are plain GET forms; with JavaScript a change applies the filter at
// once (an event handler in the wasm: the CSP would block an inline `onchange`).
test("a filter applies as soon as it is changed", async ({ page }) => {
  await logIn(page, "admin", ADMIN_PASSWORD());
  await page.goto("/jobs");
  await hydrated(page);
  await page.getByLabel("Status").selectOption("failed");
  await expect(page).toHaveURL(/\/jobs\?status=failed$/);
  await hydrated(page);
  await expect(page.getByLabel("Status")).toHaveValue("failed");
  await page.goto("/requests");
  await hydrated(page);
  await page.getByLabel("Only mine").check();
  await expect(page).toHaveURL(/\/requests\?state=&mine=on$/);
});
