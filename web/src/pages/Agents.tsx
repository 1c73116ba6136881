import { useState, type FormEvent } from "react";
import { api, ApiError } from "../api/client";
import type { Agent, AgentVersion } from "../api/types";
import { ConfirmDialog, Empty, Field, Loading, useLoad } from "../components/ui";
import { formatTime, resourceId } from "../format";
import { useSession } from "../session";
import { useToast } from "../toast";

const PAGE_SIZE = 20;

export interface AgentDraft {
  displayName: string;
  systemPrompt: string;
  primaryProvider: string;
  fallbackProvider: string;
  model: string;
}

const EMPTY: AgentDraft = { displayName: "", systemPrompt: "", primaryProvider: "vendorA", fallbackProvider: "vendorB", model: "" };

export function draftOf(agent: Agent): AgentDraft {
  return {
    displayName: agent.displayName,
    systemPrompt: agent.systemPrompt,
    primaryProvider: agent.primaryProvider,
    fallbackProvider: agent.fallbackProvider,
    model: agent.model,
  };
}

/** The fields that differ, as an update_mask in JSON spelling. */
export function changedFields(before: AgentDraft, after: AgentDraft): (keyof AgentDraft)[] {
  return (Object.keys(after) as (keyof AgentDraft)[]).filter((k) => before[k] !== after[k]);
}

export function AgentForm({
  initial,
  submitLabel,
  onSubmit,
  onCancel,
}: {
  initial: AgentDraft;
  submitLabel: string;
  onSubmit(draft: AgentDraft): Promise<void>;
  onCancel?(): void;
}) {
  const [draft, setDraft] = useState(initial);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);
  const toast = useToast();
  const set = (key: keyof AgentDraft) => (e: { target: { value: string } }) => setDraft({ ...draft, [key]: e.target.value });

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setErrors({});
    try {
      await onSubmit(draft);
    } catch (err) {
      if (err instanceof ApiError && err.fieldViolations.length) {
        setErrors(err.fieldErrors());
      } else if (!(err instanceof ApiError && err.httpStatus === 409)) {
        toast.error(err, "Could not save the agent");
      }
    } finally {
      setBusy(false);
    }
  }

  const field = (key: keyof AgentDraft, label: string, hint?: string) => (
    <Field label={label} error={errors[key]} hint={hint}>
      {(props) => <input {...props} name={key} value={draft[key]} onChange={set(key)} />}
    </Field>
  );
  const unknownErrors = Object.entries(errors).filter(([k]) => !(k in EMPTY));

  return (
    <form className="card form" onSubmit={submit} noValidate>
      {field("displayName", "Display name")}
      <Field label="System prompt" error={errors.systemPrompt}>
        {(props) => <textarea {...props} name="systemPrompt" rows={4} value={draft.systemPrompt} onChange={set("systemPrompt")} />}
      </Field>
      <div className="row">
        {field("primaryProvider", "Primary provider", "For example vendorA")}
        {field("fallbackProvider", "Fallback provider", "Optional; must differ from the primary")}
      </div>
      {field("model", "Model", "Empty: the provider's default")}
      {unknownErrors.length > 0 && (
        <ul className="field-error" role="alert">
          {unknownErrors.map(([k, v]) => (
            <li key={k}>
              {k}: {v}
            </li>
          ))}
        </ul>
      )}
      <div className="actions">
        {onCancel && (
          <button type="button" onClick={onCancel}>
            Cancel
          </button>
        )}
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Saving…" : submitLabel}
        </button>
      </div>
    </form>
  );
}

function Versions({ agent }: { agent: Agent }) {
  const { data, error, loading } = useLoad(
    () => api<{ agentVersions: AgentVersion[] }>(`/v1/${agent.name}/versions`, { query: { pageSize: 50 } }),
    [agent.name, agent.version],
  );
  if (loading) return <Loading label="Loading versions…" />;
  if (error) return <p className="field-error">Versions could not be loaded: {String((error as Error).message)}</p>;
  return (
    <table className="table">
      <caption>Versions of {agent.displayName}</caption>
      <thead>
        <tr>
          <th scope="col">Version</th>
          <th scope="col">Name</th>
          <th scope="col">Providers</th>
          <th scope="col">Created</th>
        </tr>
      </thead>
      <tbody>
        {(data?.agentVersions ?? []).map((v) => (
          <tr key={v.name}>
            <td>{v.version}</td>
            <td>{v.displayName}</td>
            <td>
              {v.primaryProvider}
              {v.fallbackProvider ? ` → ${v.fallbackProvider}` : ""}
            </td>
            <td>{formatTime(v.createTime)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function EditAgent({ agent, onSaved, onClose }: { agent: Agent; onSaved(agent: Agent): void; onClose(): void }) {
  const [conflict, setConflict] = useState<ApiError | null>(null);
  const [current, setCurrent] = useState(agent);
  const [formKey, setFormKey] = useState(0);
  const toast = useToast();

  async function save(draft: AgentDraft) {
    const fields = changedFields(draftOf(current), draft);
    if (!fields.length) {
      onClose();
      return;
    }
    try {
      const updated = await api<Agent>(`/v1/${current.name}`, {
        method: "PATCH",
        query: { updateMask: fields.join(",") },
        body: { ...Object.fromEntries(fields.map((f) => [f, draft[f]])), etag: current.etag },
      });
      setConflict(null);
      setCurrent(updated);
      toast.success(`Saved ${updated.displayName} as version ${updated.version}`);
      onSaved(updated);
    } catch (err) {
      if (err instanceof ApiError && err.httpStatus === 409) setConflict(err);
      throw err;
    }
  }

  async function reload() {
    try {
      const fresh = await api<Agent>(`/v1/${agent.name}`);
      setCurrent(fresh);
      setConflict(null);
      setFormKey((k) => k + 1);
      onSaved(fresh);
    } catch (err) {
      toast.error(err, "Could not reload the agent");
    }
  }

  return (
    <section className="panel" aria-labelledby="edit-title">
      <h2 id="edit-title">
        Edit {current.displayName} <small>(version {current.version})</small>
      </h2>
      {conflict && (
        <div className="conflict" role="alert" data-testid="etag-conflict">
          <strong>Someone else saved this agent first.</strong> Your changes were not saved ({conflict.reason || "ABORTED"}
          {conflict.requestId ? `, request id ${conflict.requestId}` : ""}).{" "}
          <button type="button" onClick={reload}>
            Load the latest version
          </button>
        </div>
      )}
      <AgentForm key={formKey} initial={draftOf(current)} submitLabel="Save" onSubmit={save} onCancel={onClose} />
      <Versions agent={current} />
    </section>
  );
}

export function AgentsPage() {
  const { can } = useSession();
  const toast = useToast();
  const [tokens, setTokens] = useState<string[]>([""]);
  const [creating, setCreating] = useState(false);
  const [editing, setEditing] = useState<Agent | null>(null);
  const [deleting, setDeleting] = useState<Agent | null>(null);
  const [busy, setBusy] = useState(false);
  const pageToken = tokens[tokens.length - 1];
  const { data, error, loading, reload } = useLoad(
    () => api<{ agents: Agent[]; nextPageToken: string }>("/v1/agents", { query: { pageSize: PAGE_SIZE, pageToken } }),
    [pageToken],
  );
  const writable = can("SCOPE_WRITE");

  async function create(draft: AgentDraft) {
    const agent = await api<Agent>("/v1/agents", { method: "POST", body: draft });
    toast.success(`Created ${agent.displayName}`);
    setCreating(false);
    reload();
  }

  async function remove(agent: Agent) {
    setBusy(true);
    try {
      await api(`/v1/${agent.name}`, { method: "DELETE", query: { etag: agent.etag } });
      toast.success(`Deleted ${agent.displayName}`);
      setDeleting(null);
      if (editing?.name === agent.name) setEditing(null);
      reload();
    } catch (err) {
      toast.error(err, "Could not delete the agent");
    } finally {
      setBusy(false);
    }
  }

  const agents = data?.agents ?? [];
  return (
    <>
      <div className="page-head">
        <h1>Agents</h1>
        {writable && !creating && (
          <button type="button" className="primary" onClick={() => setCreating(true)}>
            New agent
          </button>
        )}
      </div>
      {creating && (
        <section className="panel" aria-labelledby="create-title">
          <h2 id="create-title">New agent</h2>
          <AgentForm initial={EMPTY} submitLabel="Create agent" onSubmit={create} onCancel={() => setCreating(false)} />
        </section>
      )}
      {editing && (
        <EditAgent
          key={editing.name}
          agent={editing}
          onSaved={(a) => {
            setEditing(a);
            reload();
          }}
          onClose={() => setEditing(null)}
        />
      )}
      {loading && !data && <Loading label="Loading agents…" />}
      {error != null && !loading && (
        <p className="state" role="alert">
          Agents could not be loaded: {(error as Error).message}{" "}
          <button type="button" onClick={reload}>
            Retry
          </button>
        </p>
      )}
      {data && agents.length === 0 && <Empty>No agents yet. Create one to start a session.</Empty>}
      {agents.length > 0 && (
        <div className="scroll">
        <table className="table" data-testid="agents-table">
          <caption className="sr-only">Agents</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Providers</th>
              <th scope="col">Version</th>
              <th scope="col">Updated</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {agents.map((agent) => (
              <tr key={agent.name}>
                <td>
                  <strong>{agent.displayName}</strong>
                  <br />
                  <code className="muted">{resourceId(agent.name)}</code>
                </td>
                <td>
                  {agent.primaryProvider}
                  {agent.fallbackProvider ? ` → ${agent.fallbackProvider}` : ""}
                </td>
                <td>{agent.version}</td>
                <td>{formatTime(agent.updateTime)}</td>
                <td className="actions">
                  <button type="button" onClick={() => setEditing(agent)} aria-label={`Edit ${agent.displayName}`}>
                    Edit
                  </button>
                  {writable && (
                    <button type="button" className="danger" onClick={() => setDeleting(agent)} aria-label={`Delete ${agent.displayName}`}>
                      Delete
                    </button>
                  )}
                </td>
              </tr>
            ))}
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
      {deleting && (
        <ConfirmDialog
          title={`Delete ${deleting.displayName}?`}
          confirmLabel="Delete agent"
          busy={busy}
          onConfirm={() => remove(deleting)}
          onCancel={() => setDeleting(null)}
        >
          <p>
            The agent disappears from lists. Sessions that already use it keep their pinned version. This cannot be
            undone.
          </p>
        </ConfirmDialog>
      )}
    </>
  );
}
