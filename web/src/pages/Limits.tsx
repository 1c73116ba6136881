import { useState, type FormEvent } from "react";
import { ApiError } from "../api/client";
import { listBudgets, listRateLimits, setBudget, setRateLimit, type Budget, type RateLimit } from "../api/pending";
import { Empty, Field, Loading, Unavailable, useLoad } from "../components/ui";
import { dollarsToMicros, formatCount, formatMicros, micros } from "../format";
import { useSession } from "../session";
import { useToast } from "../toast";

function targetLabel(target: string): string {
  return target === "tenant" || !target ? "Whole tenant" : target;
}

/** Spent / limit as a fraction for the progress bar (0 when there is no limit). */
export function budgetUsed(budget: Pick<Budget, "limitMicros" | "usedMicros" | "reservedMicros">): number {
  const limit = micros(budget.limitMicros);
  if (limit <= 0n) return 0;
  const used = micros(budget.usedMicros) + micros(budget.reservedMicros);
  return Math.min(1, Number((used * 10_000n) / limit) / 10_000);
}

function RateLimitForm({ onSaved }: { onSaved(): void }) {
  const toast = useToast();
  const [target, setTarget] = useState("tenant");
  const [rpm, setRpm] = useState("600");
  const [tpm, setTpm] = useState("100000");
  const [errors, setErrors] = useState<Record<string, string>>({});
  async function submit(e: FormEvent) {
    e.preventDefault();
    setErrors({});
    try {
      await setRateLimit({ target, requestsPerMinute: Number(rpm), tokensPerMinute: Number(tpm) });
      toast.success("Rate limit saved");
      onSaved();
    } catch (err) {
      if (err instanceof ApiError && err.fieldViolations.length) setErrors(err.fieldErrors());
      else toast.error(err, "Could not save the rate limit");
    }
  }
  return (
    <form className="card form" onSubmit={submit} noValidate aria-label="Set a rate limit">
      <Field label="Applies to" error={errors.target} hint="tenant, apiKeys/key_… or agents/agt_…">
        {(p) => <input {...p} value={target} onChange={(e) => setTarget(e.target.value)} />}
      </Field>
      <div className="row">
        <Field label="Requests per minute" error={errors.requestsPerMinute}>
          {(p) => <input {...p} inputMode="numeric" value={rpm} onChange={(e) => setRpm(e.target.value)} />}
        </Field>
        <Field label="Tokens per minute" error={errors.tokensPerMinute}>
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
  const [period, setPeriod] = useState("BUDGET_PERIOD_MONTH");
  const [errors, setErrors] = useState<Record<string, string>>({});
  async function submit(e: FormEvent) {
    e.preventDefault();
    const limitMicros = dollarsToMicros(amount);
    if (!limitMicros) {
      setErrors({ limitMicros: "A dollar amount, for example 100 or 12.50" });
      return;
    }
    setErrors({});
    try {
      await setBudget({ target, period, limitMicros });
      toast.success("Budget saved");
      onSaved();
    } catch (err) {
      if (err instanceof ApiError && err.fieldViolations.length) setErrors(err.fieldErrors());
      else toast.error(err, "Could not save the budget");
    }
  }
  return (
    <form className="card form" onSubmit={submit} noValidate aria-label="Set a budget">
      <Field label="Applies to" error={errors.target} hint="tenant, apiKeys/key_… or agents/agt_…">
        {(p) => <input {...p} value={target} onChange={(e) => setTarget(e.target.value)} />}
      </Field>
      <div className="row">
        <Field label="Budget (US dollars)" error={errors.limitMicros}>
          {(p) => <input {...p} inputMode="decimal" value={amount} onChange={(e) => setAmount(e.target.value)} />}
        </Field>
        <Field label="Period" error={errors.period}>
          {(p) => (
            <select {...p} value={period} onChange={(e) => setPeriod(e.target.value)}>
              <option value="BUDGET_PERIOD_DAY">Day</option>
              <option value="BUDGET_PERIOD_MONTH">Month</option>
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
          {limits.error != null && <p role="alert">{(limits.error as Error).message}</p>}
          {limits.data && !(limits.data.rateLimits ?? []).length && <Empty>No rate limits: the gateway's defaults apply.</Empty>}
          {(limits.data?.rateLimits ?? []).length > 0 && (
            <table className="table" data-testid="rate-limits">
              <thead>
                <tr>
                  <th scope="col">Applies to</th>
                  <th scope="col">Requests / min</th>
                  <th scope="col">Tokens / min</th>
                </tr>
              </thead>
              <tbody>
                {(limits.data?.rateLimits ?? []).map((l: RateLimit) => (
                  <tr key={l.name ?? l.target}>
                    <td>{targetLabel(l.target)}</td>
                    <td>{formatCount(l.requestsPerMinute)}</td>
                    <td>{formatCount(l.tokensPerMinute)}</td>
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
              <div className="card budget" key={b.name ?? b.target} data-testid="budget">
                <strong>{targetLabel(b.target)}</strong> · {b.period.replace("BUDGET_PERIOD_", "").toLowerCase()}
                <progress max={1} value={used} aria-label={`Budget used: ${Math.round(used * 100)}%`} />
                <span>
                  {formatMicros(b.usedMicros)} used of {formatMicros(b.limitMicros)}
                  {b.reservedMicros && b.reservedMicros !== "0" ? ` (${formatMicros(b.reservedMicros)} reserved by turns in flight)` : ""}
                </span>
              </div>
            );
          })}
          {admin && <BudgetForm onSaved={budgets.reload} />}
        </>
      )}
    </>
  );
}
