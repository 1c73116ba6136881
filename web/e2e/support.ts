import AxeBuilder from "@axe-core/playwright";
import { expect, type APIRequestContext, type Page } from "@playwright/test";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const DEMO_KEY = process.env.VB_DEMO_KEY ?? "";
export const SCREENSHOTS = join(dirname(fileURLToPath(import.meta.url)), "..", "artifacts", "screenshots");
mkdirSync(SCREENSHOTS, { recursive: true });

/** Logged in as the demo tenant without going through the form (the login test does that). */
export async function loggedIn(page: Page, hash = "#/agents", key = DEMO_KEY): Promise<void> {
  expect(key, "VB_DEMO_KEY must name the demo tenant's key").not.toBe("");
  await page.addInitScript((k) => sessionStorage.setItem("vocalbridge.apiKey", k), key);
  await page.goto(`/${hash}`);
  await expect(page.getByTestId("identity")).toBeVisible();
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** axe-core on the page as it is: no serious or critical violations. */
export async function expectAccessible(page: Page, what: string): Promise<void> {
  const results = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
  const bad = results.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join("; ")}`);
  expect(bad, `accessibility of ${what}`).toEqual([]);
}

/** The JSON API with the demo key, for setting up and checking what the browser did. */
export async function call<T>(request: APIRequestContext, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
  const response = await request.fetch(path, {
    method,
    data: body === undefined ? undefined : JSON.stringify(body),
    headers: { Authorization: `Bearer ${DEMO_KEY}`, "Content-Type": "application/json", ...headers },
  });
  expect(response.status(), `${method} ${path}: ${await response.text()}`).toBe(200);
  return (await response.json()) as T;
}

export interface AgentJson {
  name: string;
  displayName: string;
  etag: string;
  version: number;
}

export async function newAgent(request: APIRequestContext, displayName: string): Promise<AgentJson> {
  return call<AgentJson>(request, "POST", "/v1/agents", { displayName, primaryProvider: "vendorA", fallbackProvider: "vendorB" });
}
