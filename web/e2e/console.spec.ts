// The console in Debian's Chromium against the real stack (every service and Envoy, started by
// tests/e2e/test_console.py), logged in with the seeded demo tenant's key.
import { expect, test } from "@playwright/test";
import { call, DEMO_KEY, expectAccessible, loggedIn, screenshot, type AgentJson } from "./support";

test("log in with the demo key: tenant and scopes shown, log out", async ({ page }) => {
  await page.goto("/");
  await expectAccessible(page, "the login page");
  await screenshot(page, "login");
  await page.getByLabel("API key").fill(DEMO_KEY);
  await page.getByRole("button", { name: "Log in" }).click();
  const identity = page.getByTestId("identity");
  await expect(identity).toContainText(/tenants\/ten_/);
  await expect(identity).toContainText("admin");
  expect(await page.evaluate(() => sessionStorage.getItem("vocalbridge.apiKey"))).toBe(DEMO_KEY);
  await page.getByRole("button", { name: "Log out" }).click();
  await expect(page.getByLabel("API key")).toBeVisible();
  expect(await page.evaluate(() => sessionStorage.getItem("vocalbridge.apiKey"))).toBeNull();
});

test("a bad key shows a clear error", async ({ page }) => {
  await page.goto("/");
  await page.getByLabel("API key").fill("vb_notakey_0000000000000000");
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page.getByRole("alert")).toContainText("This key was refused");
  await expect(page.getByLabel("API key")).toHaveAttribute("aria-invalid", "true");
  await screenshot(page, "login-bad-key");
});

test("agents: a field error for a bad agent, create, edit with versions, the etag conflict, delete", async ({ page, request }) => {
  await loggedIn(page, "#/agents");
  await expect(page.getByTestId("agents-table")).toContainText("Support");
  const name = `Helper ${Date.now()}`;
  await page.getByRole("button", { name: "New agent" }).click();
  await page.getByLabel("Display name").fill(name);
  await page.getByLabel("Primary provider").fill("nosuchvendor");
  await page.getByRole("button", { name: "Create agent" }).click();
  const primary = page.getByLabel("Primary provider");
  await expect(primary).toHaveAttribute("aria-invalid", "true");
  await expect(page.locator(".field-invalid")).toContainText("unknown provider");
  await expect(page.getByLabel("Display name")).toHaveAttribute("aria-invalid", "false");
  await expectAccessible(page, "the agent form with a field error");
  await screenshot(page, "agents-field-error");

  await primary.fill("vendorA");
  await page.getByRole("button", { name: "Create agent" }).click();
  const row = page.getByRole("row", { name: new RegExp(name) });
  await expect(row).toBeVisible();

  await row.getByRole("button", { name: `Edit ${name}` }).click();
  await page.getByLabel("System prompt").fill("You answer in one line.");
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await expect(page.getByRole("heading", { name: /version 2/ })).toBeVisible();
  await expect(page.getByRole("table", { name: `Versions of ${name}` }).locator("tbody tr")).toHaveCount(2);
  await screenshot(page, "agents-edit");

  // Someone else saves first: the console's etag is stale, the save is refused and said so.
  const agents = await call<{ agents: AgentJson[] }>(request, "GET", "/v1/agents?pageSize=100");
  const agent = agents.agents.find((a) => a.displayName === name)!;
  await call(request, "PATCH", `/v1/${agent.name}?updateMask=systemPrompt`, { systemPrompt: "Changed elsewhere." });
  await page.getByLabel("System prompt").fill("My change.");
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await expect(page.getByTestId("etag-conflict")).toContainText("Someone else saved this agent first");
  await page.getByRole("button", { name: "Load the latest version" }).click();
  await expect(page.getByLabel("System prompt")).toHaveValue("Changed elsewhere.");
  await page.getByRole("button", { name: "Cancel" }).click();

  await row.getByRole("button", { name: `Delete ${name}` }).click();
  const dialog = page.getByRole("alertdialog");
  await expect(dialog).toContainText(`Delete ${name}?`);
  await expectAccessible(page, "the delete confirmation");
  await dialog.getByRole("button", { name: "Delete agent" }).click();
  await expect(row).toHaveCount(0);
});

test("try it: chat with a streamed reply, its delivery record and cost", async ({ page }) => {
  await loggedIn(page, "#/try");
  await page.getByLabel("Agent").selectOption({ label: "Support (vendorA → vendorB)" });
  await page.getByRole("button", { name: "New session" }).click();
  await expect(page.getByText("No messages yet")).toBeVisible();
  const streamed = page.waitForResponse((r) => r.url().endsWith("/messages:stream") && r.request().method() === "POST");
  await page.getByLabel("Message").fill("Hello from the browser");
  await page.getByRole("button", { name: "Send" }).click();
  const response = await streamed;
  expect(response.headers()["content-type"]).toContain("text/event-stream");
  const reply = page.getByTestId("reply").last();
  await expect(reply).toContainText("Hello from the browser");
  const delivery = page.getByTestId("delivery").last();
  await expect(delivery.getByTestId("cost")).toHaveText(/^\$0\.0\d{5}$/);
  await expect(delivery).toContainText("vendorA");
  await delivery.locator("summary").click();
  await expect(delivery.locator(".attempts li")).toContainText(["vendorA: success"]);
  await expectAccessible(page, "the chat");
  await screenshot(page, "try-it");
});

test("usage: the total rises after a turn; charts, provider table and events", async ({ page, request }) => {
  await loggedIn(page, "#/usage");
  await expect(page.getByTestId("usage-page")).toHaveAttribute("data-ready", "true");
  const turns = page.getByTestId("total-turns");
  const before = Number((await turns.innerText()).replace(/,/g, ""));

  const agents = await call<{ agents: AgentJson[] }>(request, "GET", "/v1/agents?pageSize=100");
  const session = await call<{ name: string }>(request, "POST", "/v1/sessions", { agent: agents.agents[0].name });
  await call(request, "POST", `/v1/${session.name}/messages`, { content: "count me" }, { "Idempotency-Key": `usage-${Date.now()}` });

  // Usage reaches billing through the outbox relay, a moment after the turn.
  await expect(async () => {
    await page.getByRole("button", { name: "Refresh" }).click();
    await expect(page.getByTestId("usage-page")).toHaveAttribute("data-ready", "true");
    expect(Number((await turns.innerText()).replace(/,/g, ""))).toBeGreaterThan(before);
  }).toPass({ timeout: 15_000 });
  await expect(page.getByTestId("total-cost")).toHaveText(/^\$\d+\.\d{6}$/);
  for (const chart of ["day", "agent", "provider", "channel"]) await expect(page.getByTestId(`chart-${chart}`)).toBeVisible();
  await expect(page.getByTestId("provider-performance")).toContainText("vendorA");
  await expect(page.getByTestId("usage-events").locator("tbody tr").first()).toBeVisible();
  await expectAccessible(page, "the usage page");
  await screenshot(page, "usage");
});

test("API keys: create (secret shown once, copied), list, revoke", async ({ page, context, baseURL }) => {
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: baseURL });
  await loggedIn(page, "#/keys");
  const label = `ci-${Date.now()}`;
  await page.getByRole("button", { name: "New key" }).click();
  await page.getByLabel("Name").fill(label);
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = await page.getByTestId("secret").innerText();
  expect(secret).toMatch(/^vb_/);
  await page.getByRole("button", { name: "Copy secret" }).click();
  await expect(page.getByRole("button", { name: "Copied" })).toBeVisible();
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(secret);
  await expectAccessible(page, "the new key's secret");
  await screenshot(page, "keys-secret");
  await page.getByRole("button", { name: "I have saved it" }).click();
  await expect(page.getByTestId("new-secret")).toHaveCount(0);
  await expect(page.getByText(secret)).toHaveCount(0);

  const row = page.getByRole("row", { name: new RegExp(label) });
  await expect(row).toContainText("active");
  const me = await page.request.get("/v1/me", { headers: { Authorization: `Bearer ${secret}` } });
  expect(me.status()).toBe(200);
  await row.getByRole("button", { name: `Revoke ${label}` }).click();
  await page.getByRole("alertdialog").getByRole("button", { name: "Revoke key" }).click();
  await expect(row).toContainText("revoked");
  await expect
    .poll(async () => (await page.request.get("/v1/me", { headers: { Authorization: `Bearer ${secret}` } })).status(), { timeout: 10_000 })
    .toBe(401);
  await screenshot(page, "keys");
});

test("every page passes axe-core and has a screenshot", async ({ page }) => {
  await loggedIn(page, "#/agents");
  for (const [hash, name, ready] of [
    ["#/agents", "agents", "agents-table"],
    ["#/try", "try-it-empty", ""],
    ["#/voice", "voice", ""],
    ["#/usage", "usage-page", "usage-page"],
    ["#/keys", "keys-list", "keys-table"],
    ["#/limits", "limits", ""],
  ] as const) {
    await page.goto(`/${hash}`);
    await expect(page.getByRole("heading", { level: 1 })).toBeVisible();
    if (ready) await expect(page.getByTestId(ready)).toBeVisible();
    await expect(page.getByRole("status").filter({ hasText: /Loading|Checking/ })).toHaveCount(0);
    await expectAccessible(page, hash);
    await screenshot(page, `page-${name}`);
  }
});

test("usable at phone width: no sideways scrolling, navigation reachable", async ({ browser, baseURL }) => {
  const context = await browser.newContext({ baseURL, viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  for (const hash of ["#/agents", "#/try", "#/usage", "#/keys"]) {
    await loggedIn(page, hash);
    await expect(page.getByRole("heading", { level: 1 })).toBeVisible();
    await expect(page.getByRole("status").filter({ hasText: /Loading|Checking/ })).toHaveCount(0);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow, `${hash} scrolls sideways`).toBeLessThanOrEqual(0);
    await expect(page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: "Usage" })).toBeVisible();
    await screenshot(page, `phone-${hash.slice(2)}`);
  }
  await context.close();
});

test("keyboard only: log in, reach a page and its main action", async ({ page }) => {
  await page.goto("/");
  await page.keyboard.press("Tab");
  await expect(page.getByLabel("API key")).toBeFocused();
  await page.keyboard.type(DEMO_KEY);
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("identity")).toBeVisible();
  await page.keyboard.press("Tab");
  await expect(page.getByRole("link", { name: "Skip to content" })).toBeFocused();
  await page.keyboard.press("Tab");
  await expect(page.getByRole("link", { name: "Agents" })).toBeFocused();
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await expect(page.getByRole("heading", { name: "Try it", level: 1 })).toBeVisible();
});

test("offline: the console says so, and a failed request is a toast with its reason", async ({ page, context }) => {
  await loggedIn(page, "#/usage");
  await expect(page.getByTestId("usage-page")).toHaveAttribute("data-ready", "true");
  await context.setOffline(true);
  await expect(page.getByRole("alert").filter({ hasText: "You are offline" })).toBeVisible();
  await page.getByRole("button", { name: "Refresh" }).click();
  await expect(page.locator(".toast-error")).toContainText("OFFLINE");
  await screenshot(page, "offline");
  await context.setOffline(false);
});

test("an API error is a toast carrying its reason and request id", async ({ page }) => {
  await loggedIn(page, "#/try");
  await page.getByLabel("Agent").selectOption({ index: 0 });
  await page.getByRole("button", { name: "New session" }).click();
  await expect(page.getByText("No messages yet")).toBeVisible();
  // A message over the 32,000-character limit is refused by the gateway.
  await page.getByLabel("Message").fill("x".repeat(32_001));
  await page.getByRole("button", { name: "Send" }).click();
  const toast = page.locator(".toast-error");
  await expect(toast).toContainText("The turn failed");
  await expect(toast).toContainText(/Reason: [A-Z_]+ \(HTTP 400\)/);
  await expect(toast).toContainText(/Request id: \S+/);
  await screenshot(page, "error-toast");
});
