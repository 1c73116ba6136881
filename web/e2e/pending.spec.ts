// Pages whose APIs other engineers are still building. Each test drives the page against the
// contract and is marked expected-to-fail (`test.fail`) with the API it waits for. They run on
// every `make test`: while the API is missing they fail as expected; once it lands they pass,
// Playwright reports "expected to fail, but passed", and the marker must go.
import { chromium, expect, test } from "@playwright/test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { CHROMIUM, CHROMIUM_ARGS } from "../playwright.config";
import { call, DEMO_KEY, expectAccessible, loggedIn, screenshot, SCREENSHOTS } from "./support";

test("voice mode: a spoken question from a fake microphone gets a transcript and a spoken reply", async ({ request, baseURL }) => {
  // PENDING the voice API (services/voice; protos/vocalbridge/voice/v1): VoiceService.Synthesize
  // (POST /v1/voice:synthesize) makes the question, VoiceService.Converse
  // (POST /v1/sessions/{id}/voice:converse) answers it.
  test.fail(true, "pending the voice API: POST /v1/voice:synthesize and POST /v1/sessions/{id}/voice:converse");
  test.setTimeout(90_000); // speech-to-text, a turn and text-to-speech on two shared cores
  const spoken = await call<{ audio: { content: string } }>(request, "POST", "/v1/voice:synthesize", { text: "What are your opening hours?" });
  const wav = join(SCREENSHOTS, "..", "question.wav");
  writeFileSync(wav, Buffer.from(spoken.audio.content, "base64"));
  // Chromium's fake media stream plays the WAV file as the microphone, on a loop.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [...CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", `--use-file-for-fake-audio-capture=${wav}`],
  });
  try {
    const page = await (await browser.newContext({ baseURL, permissions: ["microphone"] })).newPage();
    await loggedIn(page, "#/voice");
    await page.getByLabel("Agent").selectOption({ label: "Concierge (vendorB → vendorA)" });
    await page.getByRole("button", { name: "New session" }).click();
    await page.getByRole("button", { name: "Record" }).click();
    await page.waitForTimeout(2500); // let the fake microphone play the question once
    await page.getByRole("button", { name: "Stop and send" }).click();
    await expect(page.getByTestId("transcript")).toContainText(/opening hours/i, { timeout: 60_000 });
    await expect(page.getByTestId("reply-text")).not.toBeEmpty();
    await expect(page.getByTestId("reply-audio")).toHaveAttribute("src", /^blob:/);
    await expect(page.getByTestId("latency")).toContainText("Gateway round trip");
    await expect(page.getByTestId("cost")).toHaveText(/^\$0\.\d{6}$/);
    await expectAccessible(page, "the voice result");
    await screenshot(page, "voice-result");
  } finally {
    await browser.close();
  }
});

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
