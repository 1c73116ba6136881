import { useState, type FormEvent } from "react";
import { ApiError } from "../api/client";
import { listBudgets, listRateLimits, setBudget, setRateLimit, TARGET_PATTERN, type Budget, type RateLimit } from "../api/limits";
import { Empty, Field, Loading, Unavailable, useLoad } from "../components/ui";
import { dollarsToMicros, formatCount, formatMicros, formatTime, micros } from "../format";
import { useSession } from "../session";
import { useToast } from "../toast";

const TARGET_HINT = "tenant, apiKeys/key_… or agents/agt_…";
const WINDOWS = [
  { label: "Calendar month (UTC)", seconds: 0 },
  { label: "Day (UTC)", seconds: 86_400 },
  { label: "Hour", seconds: 3_600 },
];

function targetLabel(target: string): string {
  return target === "tenant" || !target ? "Whole tenant" : target;
}

function windowLabel(budget: Budget): string {
  if (budget.period !== "BUDGET_PERIOD_FIXED_WINDOW") return "calendar month";
  const seconds = Number((budget.windowDuration ?? "0s").replace("s", ""));
  return WINDOWS.find((w) => w.seconds === seconds)?.label.toLowerCase() ?? `${seconds} s window`;
}

/** Spent and reserved over the limit, for the progress bar (0 when there is no limit). */
export function budgetUsed(budget: Pick<Budget, "limitMicros" | "usage">): number {
  const limit = micros(budget.limitMicros);
  if (limit <= 0n) return 0;
  const used = micros(budget.usage?.spentMicros) + micros(budget.usage?.reservedMicros);
  return Math.min(1, Number((used * 10_000n) / limit) / 10_000);
}

/** A whole number from a form field, or undefined when it is empty. */
function count(value: string): number | undefined {
  return value.trim() === "" ? undefined : Number(value.trim());
}

function RateLimitForm({ onSaved }: { onSaved(): void }) {
  const toast = useToast();
  const [target, setTarget] = useState("tenant");
  const [rpm, setRpm] = useState("600");
  const [tpm, setTpm] = useState("100000");
  const [errors, setErrors] = useState<Record<string, string>>({});
  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!TARGET_PATTERN.test(target)) {
      setErrors({ target: TARGET_HINT });
      return;
    }
    setErrors({});
    try {
      await setRateLimit(target, count(rpm), count(tpm));
      toast.success("Rate limit saved");
      onSaved();
    } catch (err) {
      if (err instanceof ApiError && err.fieldViolations.length) setErrors(err.fieldErrors());
      else toast.error(err, "Could not save the rate limit");
    }
  }
  return (
    <form className="card form" onSubmit={submit} noValidate aria-label="Set a rate limit">
      <Field label="Applies to" error={errors.target} hint={TARGET_HINT}>
        {(p) => <input {...p} value={target} onChange={(e) => setTarget(e.target.value)} />}
      </Field>
      <div className="row">
        <Field label="Requests per minute" error={errors.requestsPerMinute ?? errors.rateLimit} hint="empty: no request limit">
          {(p) => <input {...p} inputMode="numeric" value={rpm} onChange={(e) => setRpm(e.target.value)} />}
        </Field>
        <Field label="Tokens per minute" error={errors.tokensPerMinute} hint="empty: no token limit">
          {(p) => <input {...p} inputMode="numeric" value={tpm} onChange={(e) => setTpm(e.target.value)} />}
        </Field>
      </div>
      <button type="submit" className="primary">
        Save rate limit
      </button>
    </form>
  );
}

function BudgetForm({ onSaved }: { onSaved(): void }) {
  const toast = useToast();
  const [target, setTarget] = useState("tenant");
  const [amount, setAmount] = useState("100.00");
  const [windowSeconds, setWindowSeconds] = useState(0);
  const [errors, setErrors] = useState<Record<string, string>>({});
  async function submit(e: FormEvent) {
    e.preventDefault();
    const limitMicros = dollarsToMicros(amount);
    const found: Record<string, string> = {};
    if (!limitMicros) found.limitMicros = "A dollar amount, for example 100 or 12.50";
    if (!TARGET_PATTERN.test(target)) found.target = TARGET_HINT;
    setErrors(found);
    if (!limitMicros || Object.keys(found).length) return;
    try {
      await setBudget(target, limitMicros, windowSeconds || undefined);
      toast.success("Budget saved");
      onSaved();
    } catch (err) {
      if (err instanceof ApiError && err.fieldViolations.length) setErrors(err.fieldErrors());
      else toast.error(err, "Could not save the budget");
    }
  }
  return (
    <form className="card form" onSubmit={submit} noValidate aria-label="Set a budget">
      <Field label="Applies to" error={errors.target} hint={TARGET_HINT}>
        {(p) => <input {...p} value={target} onChange={(e) => setTarget(e.target.value)} />}
      </Field>
      <div className="row">
        <Field label="Budget (US dollars)" error={errors.limitMicros}>
          {(p) => <input {...p} inputMode="decimal" value={amount} onChange={(e) => setAmount(e.target.value)} />}
        </Field>
        <Field label="Resets every" error={errors.windowDuration ?? errors.period}>
          {(p) => (
            <select {...p} value={windowSeconds} onChange={(e) => setWindowSeconds(Number(e.target.value))}>
              {WINDOWS.map((w) => (
                <option key={w.seconds} value={w.seconds}>
                  {w.label}
                </option>
              ))}
            </select>
          )}
        </Field>
      </div>
      <button type="submit" className="primary">
        Save budget
      </button>
    </form>
  );
}

export function LimitsPage() {
  const { can } = useSession();
  const limits = useLoad(() => listRateLimits(), []);
  const budgets = useLoad(() => listBudgets(), []);
  const unavailable = [limits.error, budgets.error].find((e): e is ApiError => e instanceof ApiError && e.unavailable);
  const admin = can("SCOPE_ADMIN");

  return (
    <>
      <h1>Limits and budgets</h1>
      {(limits.loading || budgets.loading) && <Loading label="Loading limits…" />}
      {unavailable && <Unavailable feature="Limits and budgets" error={unavailable} />}
      {!unavailable && !limits.loading && (
        <>
          <h2>Rate limits</h2>
          <p className="muted">Per minute, refilled continuously. Requests are counted at the gateway's edge, tokens when a turn completes.</p>
          {limits.error != null && <p role="alert">{(limits.error as Error).message}</p>}
          {limits.data && !(limits.data.rateLimits ?? []).length && <Empty>No rate limits: the gateway's defaults apply.</Empty>}
          {(limits.data?.rateLimits ?? []).length > 0 && (
            <table className="table" data-testid="rate-limits">
              <thead>
                <tr>
                  <th scope="col">Applies to</th>
                  <th scope="col">Requests / min</th>
                  <th scope="col">Tokens / min</th>
                  <th scope="col">Left now</th>
                </tr>
              </thead>
              <tbody>
                {(limits.data?.rateLimits ?? []).map((l: RateLimit) => (
                  <tr key={l.name}>
                    <td>{targetLabel(l.target)}</td>
                    <td>{l.requestsPerMinute ? formatCount(l.requestsPerMinute) : "—"}</td>
                    <td>{l.tokensPerMinute ? formatCount(l.tokensPerMinute) : "—"}</td>
                    <td>
                      {l.usage
                        ? [
                            l.requestsPerMinute ? `${formatCount(l.usage.requestsRemaining)} requests` : "",
                            l.tokensPerMinute ? `${formatCount(l.usage.tokensRemaining)} tokens` : "",
                          ]
                            .filter(Boolean)
                            .join(", ")
                        : "unknown"}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          {admin && <RateLimitForm onSaved={limits.reload} />}
          <h2>Budgets</h2>
          {budgets.error != null && <p role="alert">{(budgets.error as Error).message}</p>}
          {budgets.data && !(budgets.data.budgets ?? []).length && <Empty>No budgets.</Empty>}
          {(budgets.data?.budgets ?? []).map((b: Budget) => {
            const used = budgetUsed(b);
            return (
              <div className="card budget" key={b.name} data-testid="budget">
                <strong>{targetLabel(b.target)}</strong> · {windowLabel(b)}
                <progress max={1} value={used} aria-label={`Budget used: ${Math.round(used * 100)}%`} />
                {b.usage ? (
                  <span>
                    {formatMicros(b.usage.spentMicros)} used of {formatMicros(b.limitMicros)}
                    {micros(b.usage.reservedMicros) > 0n ? ` (${formatMicros(b.usage.reservedMicros)} reserved by turns in flight)` : ""}
                    {b.usage.windowEndTime ? ` · resets ${formatTime(b.usage.windowEndTime)}` : ""}
                  </span>
                ) : (
                  <span>{formatMicros(b.limitMicros)} (usage unknown right now)</span>
                )}
              </div>
            );
          })}
          {admin && <BudgetForm onSaved={budgets.reload} />}
        </>
      )}
    </>
  );
}
