// Voice mode in Chromium with a fake microphone: Chromium's fake media stream plays a WAV file
// (the question, spoken by the gateway's own text-to-speech) as the microphone.
import { chromium, expect, test } from "@playwright/test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { CHROMIUM, CHROMIUM_ARGS } from "../playwright.config";
import { call, expectAccessible, loggedIn, screenshot, SCREENSHOTS } from "./support";

test("voice mode: a spoken question from a fake microphone gets a transcript and a spoken reply", async ({ request, baseURL }) => {
  // VoiceService.Synthesize (POST /v1/voice:synthesize) makes the question, Converse
  // (POST /v1/sessions/{id}/voice:converse) answers it.
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
