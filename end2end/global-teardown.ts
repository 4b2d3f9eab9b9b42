import * as fs from "node:fs";

export default async function globalTeardown() {
  const dir = process.env.TABLESAFE_E2E_DATA;
  if (dir && dir.includes("tablesafe-e2e-")) {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
