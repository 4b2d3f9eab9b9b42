// Page objects: what a user sees and does, by role and label.
import { expect, type Page } from "@playwright/test";

export const ADMIN_PASSWORD = () => process.env.TABLESAFE_E2E_ADMIN_PASSWORD!;

/** Waits until the wasm bundle has hydrated the page (set by frontend/src/lib.rs). */
export async function hydrated(page: Page) {
  await page.locator("body[data-hydrated]").waitFor();
}

export class LoginPage {
  constructor(readonly page: Page) {}

  async goto() {
    await this.page.goto("/login");
    await hydrated(this.page);
  }

  form() {
    return this.page.getByRole("form", { name: "Log in" });
  }

  async logIn(user: string, password: string) {
    await this.page.getByLabel("User name").fill(user);
    await this.page.getByLabel("Password").fill(password);
    await this.page.getByRole("button", { name: "Log in" }).click();
  }

  error() {
    return this.page.getByRole("alert");
  }
}

export class Console {
  constructor(readonly page: Page) {}

  nav() {
    return this.page.getByRole("navigation", { name: "Main" });
  }

  heading() {
    return this.page.getByRole("heading", { level: 1 });
  }

  currentUser() {
    return this.page.getByTestId("current-user");
  }

  async logOut() {
    await this.page.getByRole("button", { name: "Log out" }).click();
  }

  async expectDashboard() {
    await expect(this.page).toHaveURL(/\/$/);
    await expect(this.heading()).toHaveText("Dashboard");
    await expect(this.currentUser()).toContainText("admin");
  }
}

export async function sessionCookie(page: Page) {
  const cookies = await page.context().cookies();
  return cookies.find((c) => c.name === "tablesafe_session");
}

export async function logInAsAdmin(page: Page) {
  const login = new LoginPage(page);
  await login.goto();
  await login.logIn("admin", ADMIN_PASSWORD());
  const console = new Console(page);
  await console.expectDashboard();
  await hydrated(page);
  return console;
}
