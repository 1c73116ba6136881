// Errors (and a few confirmations) as toasts. An error toast carries the reason and the request
// id, so that a person can quote it; toasts are announced to screen readers.
import { createContext, useCallback, useContext, useMemo, useRef, useState, type ReactNode } from "react";
import { ApiError } from "./api/client";

export interface Toast {
  id: number;
  kind: "error" | "success" | "info";
  title: string;
  reason?: string;
  requestId?: string;
}

// Stable functions only (no state): pages may depend on them in effects without re-running.
interface ToastApi {
  error(err: unknown, context?: string): void;
  success(title: string): void;
  dismiss(id: number): void;
}

const ToastContext = createContext<ToastApi | null>(null);

export function toastFromError(err: unknown, context?: string): Omit<Toast, "id"> {
  if (err instanceof ApiError) {
    const status = err.offline ? "offline" : `HTTP ${err.httpStatus}`;
    return {
      kind: "error",
      title: `${context ? `${context}: ` : ""}${err.message}`,
      reason: err.reason ? `${err.reason} (${status})` : status,
      requestId: err.requestId || undefined,
    };
  }
  return { kind: "error", title: `${context ? `${context}: ` : ""}${err instanceof Error ? err.message : String(err)}` };
}

export function ToastProvider({ children }: { children: ReactNode }) {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const next = useRef(1);

  const dismiss = useCallback((id: number) => setToasts((all) => all.filter((t) => t.id !== id)), []);
  const push = useCallback(
    (toast: Omit<Toast, "id">, ttl: number) => {
      const id = next.current++;
      setToasts((all) => [...all.slice(-4), { ...toast, id }]);
      if (ttl > 0) window.setTimeout(() => dismiss(id), ttl);
    },
    [dismiss],
  );
  const error = useCallback((err: unknown, context?: string) => push(toastFromError(err, context), 0), [push]);
  const success = useCallback((title: string) => push({ kind: "success", title }, 4000), [push]);

  const value = useMemo(() => ({ error, success, dismiss }), [error, success, dismiss]);
  return (
    <ToastContext.Provider value={value}>
      {children}
      <Toasts toasts={toasts} dismiss={dismiss} />
    </ToastContext.Provider>
  );
}

function Toasts({ toasts, dismiss }: { toasts: Toast[]; dismiss(id: number): void }) {
  return (
    <section className="toasts" aria-label="Notifications" aria-live="polite">
      {toasts.map((t) => (
        <div key={t.id} className={`toast toast-${t.kind}`} role={t.kind === "error" ? "alert" : "status"}>
          <div className="toast-body">
            <strong className="toast-title">{t.title}</strong>
            {t.reason && <span className="toast-reason">Reason: {t.reason}</span>}
            {t.requestId && (
              <span className="toast-request">
                Request id: <code>{t.requestId}</code>
              </span>
            )}
          </div>
          <button type="button" className="link" onClick={() => dismiss(t.id)} aria-label="Dismiss notification">
            ×
          </button>
        </div>
      ))}
    </section>
  );
}

export function useToast(): ToastApi {
  const value = useContext(ToastContext);
  if (!value) throw new Error("useToast outside ToastProvider");
  return value;
}
