// Key rotation and limits and budgets, driven through their pages against the real API.
import { expect, test } from "@playwright/test";
import { call, DEMO_KEY, loggedIn, screenshot } from "./support";

test("API keys: rotate a key, the successor's secret shown once, the old key kept for the overlap", async ({ page, request }) => {
  const label = `rotate-${Date.now()}`;
  const key = await call<{ name: string; secret: string }>(request, "POST", "/v1/apiKeys", { displayName: label, scopes: ["SCOPE_READ"] });
  await loggedIn(page, "#/keys");
  const rows = page.getByRole("row", { name: new RegExp(label) });
  await rows.getByRole("button", { name: `Rotate ${label}` }).click({ timeout: 5_000 });
  await page.getByLabel("Overlap").selectOption({ label: "1 hour" });
  await page.getByRole("alertdialog").getByRole("button", { name: "Rotate key" }).click();
  const successor = await page.getByTestId("secret").innerText();
  expect(successor).toMatch(/^vb_/);
  expect(successor).not.toBe(key.secret);
  // The successor has the same name; the rotated key (listed first: keys are oldest first)
  // now expires at the end of the overlap and cannot be rotated again.
  await expect(rows).toHaveCount(2);
  await expect(rows.first()).toContainText("expires");
  await expect(rows.first()).toContainText("rotated");
  await expect(rows.first().getByRole("button", { name: `Rotate ${label}` })).toHaveCount(0);
  for (const secret of [key.secret, successor]) {
    const me = await page.request.get("/v1/me", { headers: { Authorization: `Bearer ${secret}` } });
    expect(me.status()).toBe(200);
  }
  await screenshot(page, "keys-rotated");
});

test("limits and budgets: set a budget and see what is used so far", async ({ page, request }) => {
  expect(DEMO_KEY).not.toBe("");
  await loggedIn(page, "#/limits");
  await expect(page.getByRole("status").filter({ hasText: "Loading" })).toHaveCount(0);
  await expect(page.getByTestId("unavailable")).toHaveCount(0);
  try {
    await page.getByLabel("Budget (US dollars)").fill("25");
    await page.getByRole("button", { name: "Save budget" }).click();
    const budget = page.getByTestId("budget").filter({ hasText: "Whole tenant" });
    await expect(budget).toContainText("of $25.000000");
    await expect(budget).toContainText("used");
    await expect(budget).toContainText("resets");
    await page.getByLabel("Requests per minute").fill("120");
    await page.getByRole("button", { name: "Save rate limit" }).click();
    await expect(page.getByTestId("rate-limits")).toContainText("120");
    // A bad value is shown on its field, from the server's field violation.
    await page.getByLabel("Requests per minute").fill("0");
    await page.getByRole("button", { name: "Save rate limit" }).click();
    await expect(page.getByText("must be between 1 and 1,000,000")).toBeVisible();
    await screenshot(page, "limits-set");
  } finally {
    // The demo tenant is shared with the other browser tests: take the limits off again.
    for (const path of ["/v1/rateLimits/tenant", "/v1/budgets/tenant"]) {
      await request.fetch(path, { method: "DELETE", headers: { Authorization: `Bearer ${DEMO_KEY}` } });
    }
  }
});
