// Pages whose APIs other engineers are still building. Each test drives the page against the
// contract and is marked expected-to-fail (`test.fail`) with the API it waits for. They run on
// every `make test`: while the API is missing they fail as expected; once it lands they pass,
// Playwright reports "expected to fail, but passed", and the marker must go.
import { expect, test } from "@playwright/test";
import { call, DEMO_KEY, loggedIn, screenshot } from "./support";

test("API keys: rotate a key, the successor's secret shown once, the old key kept for the overlap", async ({ page, request }) => {
  // PENDING key rotation: AuthService.RotateApiKey (POST /v1/apiKeys/{id}:rotate, DESIGN §3),
  // not yet in protos/vocalbridge/auth/v1.
  test.fail(true, "pending the key rotation API: POST /v1/apiKeys/{id}:rotate");
  const label = `rotate-${Date.now()}`;
  const key = await call<{ name: string; secret: string }>(request, "POST", "/v1/apiKeys", { displayName: label, scopes: ["SCOPE_READ"] });
  await loggedIn(page, "#/keys");
  const row = page.getByRole("row", { name: new RegExp(label) });
  await row.getByRole("button", { name: `Rotate ${label}` }).click({ timeout: 5_000 });
  await page.getByLabel("Overlap").selectOption({ label: "1 hour" });
  await page.getByRole("alertdialog").getByRole("button", { name: "Rotate key" }).click();
  const successor = await page.getByTestId("secret").innerText();
  expect(successor).toMatch(/^vb_/);
  expect(successor).not.toBe(key.secret);
  await expect(row).toContainText("expires");
  for (const secret of [key.secret, successor]) {
    const me = await page.request.get("/v1/me", { headers: { Authorization: `Bearer ${secret}` } });
    expect(me.status()).toBe(200);
  }
  await screenshot(page, "keys-rotated");
});

test("limits and budgets: set a budget and see what is used so far", async ({ page }) => {
  // PENDING rate limits and budgets (DESIGN §4 "Limits and budgets"; admin RPCs per tenant, key
  // and agent), not yet in protos/vocalbridge/auth/v1; the console's assumed shapes are in
  // web/src/api/pending.ts.
  test.fail(true, "pending the rate-limit and budget API: /v1/rateLimits and /v1/budgets");
  expect(DEMO_KEY).not.toBe("");
  await loggedIn(page, "#/limits");
  await expect(page.getByRole("status").filter({ hasText: "Loading" })).toHaveCount(0);
  await expect(page.getByTestId("unavailable")).toHaveCount(0);
  await page.getByLabel("Budget (US dollars)").fill("25");
  await page.getByRole("button", { name: "Save budget" }).click();
  const budget = page.getByTestId("budget").filter({ hasText: "Whole tenant" });
  await expect(budget).toContainText("of $25.000000");
  await expect(budget).toContainText("used");
  await page.getByLabel("Requests per minute").fill("120");
  await page.getByRole("button", { name: "Save rate limit" }).click();
  await expect(page.getByTestId("rate-limits")).toContainText("120");
  await screenshot(page, "limits-set");
});
