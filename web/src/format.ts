// Display helpers. Money arrives as integer micro-dollars in int64 strings: never a float until
// it is formatted.

export function micros(value: string | number | undefined | null): bigint {
  if (value === undefined || value === null || value === "") return 0n;
  try {
    return BigInt(typeof value === "number" ? Math.round(value) : value);
  } catch {
    return 0n;
  }
}

/** `"1234567"` → `$1.234567`; `"84"` → `$0.000084`. Exact, at micro-dollar precision. */
export function formatMicros(value: string | number | bigint | undefined | null): string {
  const m = typeof value === "bigint" ? value : micros(value);
  const negative = m < 0n;
  const abs = negative ? -m : m;
  const dollars = abs / 1_000_000n;
  const fraction = (abs % 1_000_000n).toString().padStart(6, "0");
  const grouped = dollars.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${negative ? "-" : ""}$${grouped}.${fraction}`;
}

/** A dollar amount typed by a person (`"12.5"`) → micros as an int64 string. */
export function dollarsToMicros(text: string): string | null {
  const match = /^\s*\$?(\d+)(?:\.(\d{0,6}))?\s*$/.exec(text);
  if (!match) return null;
  return (BigInt(match[1]) * 1_000_000n + BigInt((match[2] ?? "").padEnd(6, "0"))).toString();
}

export function formatCount(value: string | number | bigint | undefined | null): string {
  if (value === undefined || value === null || value === "") return "0";
  return BigInt(typeof value === "number" ? Math.round(value) : value).toLocaleString("en-US");
}

/** A protobuf Duration (`"0.012s"`) → milliseconds. */
export function durationMs(value: string | undefined | null): number {
  if (!value) return 0;
  const n = Number.parseFloat(value.replace(/s$/, ""));
  return Number.isFinite(n) ? n * 1000 : 0;
}

export function formatMs(ms: number): string {
  if (ms >= 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
}

export function formatTime(value: string | undefined | null): string {
  if (!value) return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? value : date.toLocaleString();
}

export function formatPercent(fraction: number): string {
  return `${(fraction * 100).toFixed(1)}%`;
}

/** `agents/agt_123` → `agt_123`. */
export function resourceId(name: string): string {
  return name.slice(name.lastIndexOf("/") + 1);
}

export function scopeLabel(scope: string): string {
  return scope.replace(/^SCOPE_/, "").toLowerCase();
}

/** `ATTEMPT_OUTCOME_RATE_LIMITED` → `rate limited`. */
export function outcomeLabel(outcome: string): string {
  return outcome.replace(/^ATTEMPT_OUTCOME_/, "").replace(/_/g, " ").toLowerCase();
}
