import { useState, type FormEvent } from "react";
import { ApiError } from "../api/client";
import type { Scope } from "../api/types";
import { Field } from "../components/ui";
import { scopeLabel } from "../format";
import { useSession } from "../session";

export function formatScopes(scopes: Scope[]): string {
  return scopes.length ? scopes.map(scopeLabel).join(", ") : "no scopes";
}

export function LoginPage() {
  const { logIn } = useSession();
  const [key, setKey] = useState("");
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    if (!key.trim()) {
      setError("Paste an API key.");
      return;
    }
    setBusy(true);
    setError(undefined);
    try {
      await logIn(key);
      if (!window.location.hash) window.location.hash = "#/agents";
    } catch (err) {
      if (err instanceof ApiError && (err.httpStatus === 401 || err.httpStatus === 403)) {
        setError(`This key was refused (${err.reason || `HTTP ${err.httpStatus}`}): ${err.message}`);
      } else if (err instanceof ApiError) {
        setError(`${err.message}${err.requestId ? ` (request id ${err.requestId})` : ""}`);
      } else {
        setError(String(err));
      }
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="login" id="main">
      <h1>VocalBridge console</h1>
      <form onSubmit={submit} noValidate>
        <Field
          label="API key"
          error={error}
          hint="Kept in this browser tab only (sessionStorage). With `make run`, the demo key is in var/demo-api-key."
        >
          {(props) => (
            <input
              {...props}
              type="password"
              autoComplete="off"
              spellCheck={false}
              value={key}
              onChange={(e) => setKey(e.target.value)}
              placeholder="vb_…"
            />
          )}
        </Field>
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Checking…" : "Log in"}
        </button>
      </form>
    </main>
  );
}
