// APIs that DESIGN.md describes but the protos do not define yet: key rotation (RotateApiKey
// `:rotate`, a successor key with an overlap window) and rate limits and budgets per tenant, key
// and agent. The shapes below are the console's reading of DESIGN §3/§4 in the style of the
// existing contracts (AIP standard methods, int64 micros as strings); they live here alone so
// that they are reconciled in one place when the protos land. Until then the gateway answers
// these routes with 404 METHOD_NOT_FOUND and the pages say "not available on this server".
import { api } from "./client";
import type { ApiKey } from "./types";

export interface RotateResult {
  /** The successor, with its secret (shown once). */
  successor: ApiKey;
  /** The rotated key, now expiring at the end of the overlap window (when the server says). */
  previous?: ApiKey;
}

/** `POST /v1/apiKeys/{id}:rotate`, with an optional overlap window (a Duration, `"3600s"`). */
export async function rotateApiKey(name: string, overlapSeconds?: number): Promise<RotateResult> {
  const body = overlapSeconds ? { overlap: `${overlapSeconds}s` } : {};
  const response = await api<Record<string, unknown>>(`/v1/${name}:rotate`, { method: "POST", body });
  // Either the new ApiKey itself, or a response message naming it.
  if (typeof response.secret === "string") return { successor: response as unknown as ApiKey };
  const successor = (response.apiKey ?? response.successor ?? response.newApiKey) as ApiKey | undefined;
  if (!successor) throw new Error("The rotate response carried no new key.");
  return { successor, previous: (response.previous ?? response.previousApiKey) as ApiKey | undefined };
}

/** Whom a limit or budget applies to: `tenant` (the caller's), `apiKeys/…` or `agents/…`. */
export interface RateLimit {
  name?: string;
  target: string;
  requestsPerMinute: number;
  tokensPerMinute: number;
}

export interface Budget {
  name?: string;
  target: string;
  /** `BUDGET_PERIOD_DAY` or `BUDGET_PERIOD_MONTH`. */
  period: string;
  limitMicros: string;
  /** Spent so far in the current period (settled turns). */
  usedMicros: string;
  /** Reserved by turns in flight. */
  reservedMicros?: string;
}

export const listRateLimits = () => api<{ rateLimits?: RateLimit[] }>("/v1/rateLimits", { query: { pageSize: 100 } });
export const setRateLimit = (limit: RateLimit) => api<RateLimit>("/v1/rateLimits", { method: "POST", body: limit });
export const listBudgets = () => api<{ budgets?: Budget[] }>("/v1/budgets", { query: { pageSize: 100 } });
export const setBudget = (budget: Omit<Budget, "usedMicros" | "reservedMicros">) =>
  api<Budget>("/v1/budgets", { method: "POST", body: budget });
