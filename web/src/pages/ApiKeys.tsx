import { useEffect, useState, type FormEvent } from "react";
import { api, ApiError } from "../api/client";
import { rotateApiKey } from "../api/limits";
import type { ApiKey, Scope } from "../api/types";
import { ConfirmDialog, CopyButton, Empty, Field, Loading, Unavailable, useLoad } from "../components/ui";
import { formatTime, resourceId, scopeLabel } from "../format";
import { useSession } from "../session";
import { useToast } from "../toast";

const SCOPES: Scope[] = ["SCOPE_READ", "SCOPE_WRITE", "SCOPE_ADMIN"];
const PAGE_SIZE = 50;
// Refused without side effects by a gateway that can rotate (no such key); a gateway that
// cannot answers 404 METHOD_NOT_FOUND.
const ROTATE_PROBE = "apiKeys/key_00000000000000000000000000";
const OVERLAPS = [
  { label: "No overlap: the old key stops now", seconds: 0 },
  { label: "1 hour", seconds: 3600 },
  { label: "24 hours", seconds: 86_400 },
  { label: "7 days", seconds: 604_800 },
];

export async function probeRotation(): Promise<ApiError | null> {
  try {
    await rotateApiKey(ROTATE_PROBE);
    return null;
  } catch (err) {
    return err instanceof ApiError && err.unavailable ? err : null;
  }
}

/** The secret, shown once, with a copy button. */
export function NewSecret({ apiKey, onDone }: { apiKey: ApiKey; onDone(): void }) {
  return (
    <section className="panel secret" aria-labelledby="secret-title" data-testid="new-secret">
      <h2 id="secret-title">Copy the secret of “{apiKey.displayName || resourceId(apiKey.name)}” now</h2>
      <p>It is shown only this once: the gateway keeps only a digest of it.</p>
      <div className="secret-row">
        <code data-testid="secret">{apiKey.secret}</code>
        <CopyButton text={apiKey.secret} label="Copy secret" />
      </div>
      <button type="button" onClick={onDone}>
        I have saved it
      </button>
    </section>
  );
}

function CreateKey({ onCreated, onCancel }: { onCreated(key: ApiKey): void; onCancel(): void }) {
  const toast = useToast();
  const [displayName, setDisplayName] = useState("");
  const [scopes, setScopes] = useState<Scope[]>(["SCOPE_WRITE"]);
  const [expiry, setExpiry] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setErrors({});
    try {
      const body: Record<string, unknown> = { displayName, scopes };
      if (expiry) body.expireTime = new Date(`${expiry}T00:00:00Z`).toISOString();
      onCreated(await api<ApiKey>("/v1/apiKeys", { method: "POST", body }));
    } catch (err) {
      if (err instanceof ApiError && err.fieldViolations.length) setErrors(err.fieldErrors());
      else toast.error(err, "Could not create the key");
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="card form" onSubmit={submit} noValidate aria-label="New API key">
      <Field label="Name" error={errors.displayName}>
        {(props) => <input {...props} name="displayName" value={displayName} onChange={(e) => setDisplayName(e.target.value)} />}
      </Field>
      <fieldset className={errors.scopes ? "field-invalid" : undefined}>
        <legend>Scopes</legend>
        {SCOPES.map((s) => (
          <label key={s} className="check">
            <input
              type="checkbox"
              checked={scopes.includes(s)}
              onChange={(e) => setScopes(e.target.checked ? [...scopes, s] : scopes.filter((x) => x !== s))}
            />
            {scopeLabel(s)}
          </label>
        ))}
        {errors.scopes && <small className="field-error">{errors.scopes}</small>}
      </fieldset>
      <Field label="Expires (optional)" error={errors.expireTime}>
        {(props) => <input {...props} type="date" value={expiry} onChange={(e) => setExpiry(e.target.value)} />}
      </Field>
      <div className="actions">
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Creating…" : "Create key"}
        </button>
      </div>
    </form>
  );
}

function RotateDialog({ apiKey, onRotated, onCancel }: { apiKey: ApiKey; onRotated(key: ApiKey): void; onCancel(): void }) {
  const toast = useToast();
  const [overlap, setOverlap] = useState(3600);
  const [busy, setBusy] = useState(false);
  async function rotate() {
    setBusy(true);
    try {
      const { successor } = await rotateApiKey(apiKey.name, overlap);
      onRotated(successor);
    } catch (err) {
      toast.error(err, "Could not rotate the key");
    } finally {
      setBusy(false);
    }
  }
  return (
    <ConfirmDialog title={`Rotate “${apiKey.displayName || apiKey.prefix}”?`} confirmLabel="Rotate key" onConfirm={rotate} onCancel={onCancel} busy={busy}>
      <p>A new key with the same scopes replaces this one. The old key keeps working during the overlap, then stops.</p>
      <div className="field">
        <label htmlFor="overlap">Overlap</label>
        <select id="overlap" value={overlap} onChange={(e) => setOverlap(Number(e.target.value))}>
          {OVERLAPS.map((o) => (
            <option key={o.seconds} value={o.seconds}>
              {o.label}
            </option>
          ))}
        </select>
      </div>
    </ConfirmDialog>
  );
}

export function ApiKeysPage() {
  const { can, identity } = useSession();
  const toast = useToast();
  const [tokens, setTokens] = useState<string[]>([""]);
  const [creating, setCreating] = useState(false);
  const [secret, setSecret] = useState<ApiKey | null>(null);
  const [revoking, setRevoking] = useState<ApiKey | null>(null);
  const [rotating, setRotating] = useState<ApiKey | null>(null);
  const [rotation, setRotation] = useState<{ done: boolean; error: ApiError | null }>({ done: false, error: null });
  const [busy, setBusy] = useState(false);
  const pageToken = tokens[tokens.length - 1];
  const admin = can("SCOPE_ADMIN");
  const { data, error, loading, reload } = useLoad(
    () =>
      admin
        ? api<{ apiKeys: ApiKey[]; nextPageToken: string }>("/v1/apiKeys", { query: { pageSize: PAGE_SIZE, pageToken } })
        : Promise.resolve({ apiKeys: [] as ApiKey[], nextPageToken: "" }),
    [pageToken, admin],
  );
  useEffect(() => {
    if (admin) void probeRotation().then((err) => setRotation({ done: true, error: err }));
  }, [admin]);

  async function revoke(key: ApiKey) {
    setBusy(true);
    try {
      await api(`/v1/${key.name}:revoke`, { method: "POST", body: {} });
      toast.success(`Revoked ${key.displayName || key.prefix}`);
      setRevoking(null);
      reload();
    } catch (err) {
      toast.error(err, "Could not revoke the key");
    } finally {
      setBusy(false);
    }
  }

  if (!admin) {
    return (
      <>
        <h1>API keys</h1>
        <p className="state">Managing API keys needs a key with the admin scope; this one has {identity?.scopes.map(scopeLabel).join(", ")}.</p>
      </>
    );
  }
  const keys = data?.apiKeys ?? [];
  const rotatable = rotation.done && !rotation.error;
  return (
    <>
      <div className="page-head">
        <h1>API keys</h1>
        {!creating && (
          <button type="button" className="primary" onClick={() => setCreating(true)}>
            New key
          </button>
        )}
      </div>
      {secret && <NewSecret apiKey={secret} onDone={() => setSecret(null)} />}
      {creating && (
        <CreateKey
          onCreated={(key) => {
            setCreating(false);
            setSecret(key);
            reload();
          }}
          onCancel={() => setCreating(false)}
        />
      )}
      {rotation.error && <Unavailable feature="Key rotation" error={rotation.error} />}
      {loading && !data && <Loading label="Loading keys…" />}
      {error != null && (
        <p role="alert">
          Keys could not be loaded: {(error as Error).message}{" "}
          <button type="button" onClick={reload}>
            Retry
          </button>
        </p>
      )}
      {data && !keys.length && <Empty>No keys.</Empty>}
      {keys.length > 0 && (
        <div className="scroll">
          <table className="table" data-testid="keys-table">
            <caption className="sr-only">API keys</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Prefix</th>
                <th scope="col">Scopes</th>
                <th scope="col">Created</th>
                <th scope="col">Last used</th>
                <th scope="col">Status</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {keys.map((k) => {
                const current = k.name === identity?.apiKey;
                const expired = !!k.expireTime && new Date(k.expireTime) < new Date();
                return (
                  <tr key={k.name} data-key={k.name}>
                    <td>
                      {k.displayName || <span className="muted">(no name)</span>}
                      {current && <span className="badge">this session</span>}
                    </td>
                    <td>
                      <code>{k.prefix}</code>
                    </td>
                    <td>{k.scopes.map(scopeLabel).join(", ")}</td>
                    <td>{formatTime(k.createTime)}</td>
                    <td>{k.lastUseTime ? formatTime(k.lastUseTime) : <span className="muted">not reported</span>}</td>
                    <td>
                      {k.revokeTime ? `revoked ${formatTime(k.revokeTime)}` : expired ? "expired" : k.expireTime ? `expires ${formatTime(k.expireTime)}` : "active"}
                      {k.successor && <span className="muted"> · rotated</span>}
                    </td>
                    <td className="actions">
                      {!k.revokeTime && !k.successor && !expired && rotatable && (
                        <button type="button" onClick={() => setRotating(k)} aria-label={`Rotate ${k.displayName || k.prefix}`}>
                          Rotate
                        </button>
                      )}
                      {!k.revokeTime && (
                        <button type="button" className="danger" onClick={() => setRevoking(k)} aria-label={`Revoke ${k.displayName || k.prefix}`}>
                          Revoke
                        </button>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      <div className="pager">
        <button type="button" disabled={tokens.length < 2} onClick={() => setTokens(tokens.slice(0, -1))}>
          Previous
        </button>
        <span>Page {tokens.length}</span>
        <button type="button" disabled={!data?.nextPageToken} onClick={() => setTokens([...tokens, data!.nextPageToken])}>
          Next
        </button>
      </div>
      {revoking && (
        <ConfirmDialog
          title={`Revoke “${revoking.displayName || revoking.prefix}”?`}
          confirmLabel="Revoke key"
          busy={busy}
          onConfirm={() => revoke(revoking)}
          onCancel={() => setRevoking(null)}
        >
          <p>
            Requests with this key are refused within a few seconds.
            {revoking.name === identity?.apiKey ? " This is the key this console is logged in with: you will be logged out." : ""}
          </p>
        </ConfirmDialog>
      )}
      {rotating && (
        <RotateDialog
          apiKey={rotating}
          onCancel={() => setRotating(null)}
          onRotated={(key) => {
            setRotating(null);
            setSecret(key);
            reload();
          }}
        />
      )}
    </>
  );
}
