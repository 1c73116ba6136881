import { defineConfig } from "@playwright/test";

// Browser tests against a running stack: tests/e2e/test_console.py starts it (like every e2e
// test), seeds the demo tenant and runs `npx playwright test` with VB_CONSOLE_URL and
// VB_DEMO_KEY set. Debian's Chromium, never a downloaded browser.
export const CHROMIUM = process.env.VB_CHROMIUM ?? "/usr/bin/chromium";
export const CHROMIUM_ARGS = [
  "--disable-gpu",
  "--disable-quic",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

export default defineConfig({
  testDir: "e2e",
  outputDir: "artifacts/test-results",
  fullyParallel: false,
  workers: 1,
  retries: 0,
  timeout: 30_000,
  expect: { timeout: 10_000 },
  reporter: [["list"], ["json", { outputFile: "artifacts/report.json" }]],
  use: {
    baseURL: process.env.VB_CONSOLE_URL ?? "http://127.0.0.1:8080",
    headless: true,
    // An action that cannot happen fails within this, not at the test's time limit.
    actionTimeout: 10_000,
    launchOptions: { executablePath: CHROMIUM, args: CHROMIUM_ARGS, chromiumSandbox: false },
    screenshot: "only-on-failure",
    trace: "retain-on-failure",
    viewport: { width: 1280, height: 900 },
  },
});
