// Times the console's usage page in Debian's Chromium: from navigation to the moment every
// aggregate has arrived and is rendered: the totals, charts and first page of events, then the
// provider performance table. Each run is a fresh browser context (no cache).
//
//   node bench/usage-page.mjs <console URL> <api key> <runs> [from to]
//
// Prints one JSON line: {"samples": [{"summary": ms, "complete": ms}, ...]}. Run by bench/scenarios/console_usage.py.
import { chromium } from "@playwright/test";

const [url, key, runs = "5", from, to] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.VB_CHROMIUM ?? "/usr/bin/chromium",
  args: ["--disable-gpu", "--disable-quic", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const hash = from && to ? `#/usage?from=${from}&to=${to}` : "#/usage";
const samples = [];
try {
  for (let i = 0; i < Number(runs); i++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await context.addInitScript((k) => sessionStorage.setItem("vocalbridge.apiKey", k), key);
    const page = await context.newPage();
    await page.goto(`${url}/${hash}`);
    // Rendered: the totals, the four charts and the first page of events ("summary"); then the
    // provider performance table too ("complete"). Timed in the page, to the animation frame.
    const at = async (selector) =>
      Number(
        await (
          await page.waitForFunction((sel) => document.querySelector(sel) && performance.now(), selector, { polling: "raf", timeout: 60_000 })
        ).jsonValue(),
      );
    const summary = await at('[data-testid="usage-page"][data-ready="true"] [data-testid="usage-events"] tbody tr');
    const complete = await at('[data-testid="usage-page"][data-performance-ready="true"][data-ready="true"] [data-testid="usage-events"] tbody tr');
    const turns = await page.getByTestId("total-turns").innerText();
    samples.push({ summary: Math.round(summary), complete: Math.round(Math.max(summary, complete)) });
    if (i === 0) console.error(`usage page shows ${turns} turns`);
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify({ samples }));
