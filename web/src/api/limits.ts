// Key rotation, rate limits and budgets (AuthService: RotateApiKey, Get/List/Update/Delete
// RateLimit and Budget). A limit's name is its target's: `rateLimits/tenant`,
// `rateLimits/key_…`, `rateLimits/agt_…` (and `budgets/…` alike), so saving one is an
// update that creates it when missing (`allowMissing`). int64 fields are JSON strings.
import { api } from "./client";
import type { ApiKey } from "./types";

export interface RotateResult {
  /** The successor, with its secret (shown once). */
  successor: ApiKey;
  /** The rotated key, now expiring at the end of the overlap. */
  previous: ApiKey;
}

/** `POST /v1/apiKeys/{id}:rotate`; without `overlapSeconds` the gateway's default (24 h). */
export async function rotateApiKey(name: string, overlapSeconds?: number): Promise<RotateResult> {
  const body = overlapSeconds === undefined ? {} : { overlap: `${overlapSeconds}s` };
  const response = await api<{ apiKey: ApiKey; rotatedApiKey: ApiKey }>(`/v1/${name}:rotate`, { method: "POST", body });
  return { successor: response.apiKey, previous: response.rotatedApiKey };
}

/** What a limit applies to, as the console writes it: `tenant`, `apiKeys/key_…` or `agents/agt_…`. */
export const TARGET_PATTERN = /^(tenant|apiKeys\/key_[0-9a-z]{26}|agents\/agt_[0-9a-z]{26})$/;

/** The last segment of a limit's name for a target (`tenant`, `key_…`, `agt_…`). */
export function targetId(target: string): string {
  return target === "tenant" ? "tenant" : target.split("/")[1];
}

export interface RateLimit {
  name: string;
  target: string;
  requestsPerMinute?: string;
  tokensPerMinute?: string;
  usage?: { requestsRemaining?: string; tokensRemaining?: string; resetTime?: string };
  etag?: string;
}

export interface Budget {
  name: string;
  target: string;
  limitMicros: string;
  /** `BUDGET_PERIOD_CALENDAR_MONTH` or `BUDGET_PERIOD_FIXED_WINDOW` (with `windowDuration`, `"86400s"`). */
  period: string;
  windowDuration?: string;
  usage?: {
    windowStartTime?: string;
    windowEndTime?: string;
    spentMicros?: string;
    reservedMicros?: string;
    remainingMicros?: string;
  };
  etag?: string;
}

export const listRateLimits = () => api<{ rateLimits?: RateLimit[] }>("/v1/rateLimits", { query: { pageSize: 100 } });
export const listBudgets = () => api<{ budgets?: Budget[] }>("/v1/budgets", { query: { pageSize: 100 } });

/** Sets a target's rate limit to exactly the values given (an empty one: no limit of that kind). */
export function setRateLimit(target: string, requestsPerMinute?: number, tokensPerMinute?: number): Promise<RateLimit> {
  const body: Record<string, string> = {};
  if (requestsPerMinute !== undefined) body.requestsPerMinute = String(requestsPerMinute);
  if (tokensPerMinute !== undefined) body.tokensPerMinute = String(tokensPerMinute);
  return api<RateLimit>(`/v1/rateLimits/${targetId(target)}`, {
    method: "PATCH",
    body,
    query: { allowMissing: "true", updateMask: "requestsPerMinute,tokensPerMinute" },
  });
}

/** Sets a target's budget: a calendar month (no window) or fixed windows of `windowSeconds`. */
export function setBudget(target: string, limitMicros: string, windowSeconds?: number): Promise<Budget> {
  const body: Record<string, string> = {
    limitMicros,
    period: windowSeconds ? "BUDGET_PERIOD_FIXED_WINDOW" : "BUDGET_PERIOD_CALENDAR_MONTH",
  };
  if (windowSeconds) body.windowDuration = `${windowSeconds}s`;
  return api<Budget>(`/v1/budgets/${targetId(target)}`, {
    method: "PATCH",
    body,
    query: { allowMissing: "true", updateMask: "limitMicros,period,windowDuration" },
  });
}
