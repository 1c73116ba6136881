// Times the console's usage page in Debian's Chromium: from navigation to the moment every
// aggregate has arrived and the totals, charts, provider table and first page of events are
// rendered. Each run is a fresh browser context (no cache).
//
//   node bench/usage-page.mjs <console URL> <api key> <runs> [from to]
//
// Prints one JSON line: {"samples": [ms, ...]}. Run by bench/scenarios/console_usage.py.
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
    // Rendered: the aggregates (totals, four charts, provider table) and the first page of events.
    const ready = await page.waitForFunction(
      () =>
        document.querySelector('[data-testid="usage-page"][data-ready="true"]') &&
        document.querySelector('[data-testid="usage-events"] tbody tr') &&
        performance.now(),
      undefined,
      { polling: "raf", timeout: 60_000 },
    );
    const ms = Number(await ready.jsonValue());
    const turns = await page.getByTestId("total-turns").innerText();
    samples.push(Math.round(ms));
    if (i === 0) console.error(`usage page shows ${turns} turns`);
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify({ samples }));
