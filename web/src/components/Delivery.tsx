import type { Delivery, Usage } from "../api/types";
import { durationMs, formatCount, formatMicros, formatMs, outcomeLabel } from "../format";

/** A reply's delivery record (provider, every attempt, fallback) and what it cost. */
export function DeliveryRecord({ delivery, usage }: { delivery?: Delivery | null; usage?: Usage | null }) {
  return (
    <details className="delivery" data-testid="delivery">
      <summary>
        <span>{delivery?.provider || "no provider"}</span>
        {delivery?.fallbackUsed && <span className="badge warn">fallback</span>}
        <span>
          {delivery?.attempts.length ?? 0} attempt{delivery?.attempts.length === 1 ? "" : "s"}
        </span>
        {delivery?.latency && <span>{formatMs(durationMs(delivery.latency))}</span>}
        <span className="cost" data-testid="cost">
          {formatMicros(usage?.costMicros)}
        </span>
      </summary>
      <ol className="attempts">
        {(delivery?.attempts ?? []).map((a, i) => (
          <li key={i} className={a.outcome === "ATTEMPT_OUTCOME_SUCCESS" ? "ok" : "failed"}>
            {a.provider}: {outcomeLabel(a.outcome)} in {formatMs(durationMs(a.latency))}
            {durationMs(a.backoff) > 0 && ` after ${formatMs(durationMs(a.backoff))} backoff`}
            {a.errorMessage && ` — ${a.errorMessage}`}
          </li>
        ))}
      </ol>
      {usage && (
        <p className="muted">
          {formatCount(usage.promptTokens)} prompt + {formatCount(usage.completionTokens)} completion tokens
          {usage.audioSeconds ? `, ${usage.audioSeconds.toFixed(1)} s audio` : ""}
          {usage.ttsCharacters && usage.ttsCharacters !== "0" ? `, ${formatCount(usage.ttsCharacters)} characters spoken` : ""}
          {delivery?.model ? ` · model ${delivery.model}` : ""}
        </p>
      )}
    </details>
  );
}
