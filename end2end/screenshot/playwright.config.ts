// The README's screenshot of the console (docs/src/images/console.png), taken from a
// release build with some data in it. Not part of the browser tests (their testDir is
// ../tests); run it by hand after a visible change to the dashboard:
//
//   D=/tmp/shot; mkdir -p $D; cp ../target/release/tablesafe $D/; cp -r ../target/site $D/site
//   TABLESAFE_BIN=$D/tablesafe TABLESAFE_SITE_ROOT=$D/site PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
//     npx playwright test -c screenshot/playwright.config.ts --output /tmp/shot-pw
//
// It starts its own server on a free port with a fresh data directory (the main config's
// webServer), adds a source, a target and a policy, runs two backups and photographs
// the dashboard.
import { defineConfig } from "@playwright/test";
import base from "../playwright.config";

export default defineConfig({
  ...base,
  testDir: ".",
  testMatch: "console.shot.ts",
  globalSetup: undefined,
  globalTeardown: undefined,
  fullyParallel: false,
  workers: 1,
  projects: [{ name: "desktop", use: { viewport: { width: 1280, height: 800 }, colorScheme: "light" } }],
});
