import { defineConfig } from "@playwright/test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

// One freshly started `tablesafe serve` per run: its own free port (chosen by
// scripts/test.sh, passed in TABLESAFE_E2E_PORT) and its own temporary data directory.
// The values go into process.env so the worker processes, which load this file again,
// agree with the main process.
if (!process.env.TABLESAFE_E2E_PORT) {
  process.env.TABLESAFE_E2E_PORT = String(20000 + Math.floor(Math.random() * 20000));
}
if (!process.env.TABLESAFE_E2E_DATA) {
  process.env.TABLESAFE_E2E_DATA = fs.mkdtempSync(path.join(os.tmpdir(), "tablesafe-e2e-"));
}
// /metrics answers only with this bearer token (closed by default).
if (!process.env.TABLESAFE_E2E_METRICS_TOKEN) {
  process.env.TABLESAFE_E2E_METRICS_TOKEN = "e2e-metrics-" + Math.random().toString(36).slice(2);
}
if (!process.env.TABLESAFE_E2E_ADMIN_PASSWORD) {
  process.env.TABLESAFE_E2E_ADMIN_PASSWORD = "e2e " + Math.random().toString(36).slice(2);
}
const port = process.env.TABLESAFE_E2E_PORT;
// TABLESAFE_E2E_BASE_URL: test a console someone else started (the installed package,
// a server behind nginx, possibly under a path prefix ending in "/"); Playwright then
// starts no server, and TABLESAFE_E2E_ADMIN_PASSWORD must be that console's.
const external = process.env.TABLESAFE_E2E_BASE_URL;
const baseURL = external ?? `http://127.0.0.1:${port}`;
const bin = process.env.TABLESAFE_BIN ?? path.resolve(__dirname, "../target/debug/tablesafe");

export default defineConfig({
  testDir: "./tests",
  timeout: 60_000,
  expect: { timeout: 10_000 },
  fullyParallel: true,
  workers: 2,
  retries: 0,
  forbidOnly: true,
  reporter: [["list"]],
  globalSetup: "./global-setup.ts",
  globalTeardown: "./global-teardown.ts",
  use: {
    baseURL,
    trace: "retain-on-failure",
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    },
  },
  projects: [
    { name: "desktop", use: { viewport: { width: 1280, height: 800 } } },
    { name: "phone", use: { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true } },
  ],
  // Playwright starts the server, polls /healthz until it answers, and stops it (by its
  // PID) when the run ends.
  webServer: external ? undefined : {
    command: `"${bin}" serve --listen 127.0.0.1:${port} --data-dir "${process.env.TABLESAFE_E2E_DATA}/data"`,
    url: `${baseURL}/healthz`,
    reuseExistingServer: false,
    timeout: 60_000,
    stdout: "pipe",
    stderr: "pipe",
    env: {
      TABLESAFE_ADMIN_PASSWORD: process.env.TABLESAFE_E2E_ADMIN_PASSWORD!,
      TABLESAFE_SITE_ROOT: process.env.TABLESAFE_SITE_ROOT ?? path.resolve(__dirname, "../target/site"),
      TABLESAFE_METRICS_TOKEN: process.env.TABLESAFE_E2E_METRICS_TOKEN!,
      TABLESAFE_LOG: "info",
      NO_COLOR: "1",
    },
  },
});
