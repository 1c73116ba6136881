// Pick an agent, then start a new session with it or resume one of its recent sessions. Shared
// by the text (Try it) and voice pages; the choice survives switching pages.
import { useEffect, useState } from "react";
import { api } from "../api/client";
import type { Agent, Session } from "../api/types";
import { formatTime, resourceId } from "../format";
import { useToast } from "../toast";
import { Empty, Loading, useLoad } from "./ui";

const CHOICE = "vocalbridge.session";

export function SessionPicker({ channel, onSession }: { channel: "CHANNEL_TEXT" | "CHANNEL_VOICE"; onSession(s: Session | null): void }) {
  const toast = useToast();
  const agents = useLoad(() => api<{ agents: Agent[] }>("/v1/agents", { query: { pageSize: 100 } }), []);
  const [agent, setAgent] = useState<string>(() => sessionStorage.getItem(`${CHOICE}.agent`) ?? "");
  const [session, setSession] = useState<string>(() => sessionStorage.getItem(CHOICE) ?? "");
  const [starting, setStarting] = useState(false);
  const sessions = useLoad(
    () =>
      agent
        ? api<{ sessions: Session[] }>("/v1/sessions", { query: { agent, pageSize: 20 } })
        : Promise.resolve({ sessions: [] as Session[] }),
    [agent],
  );

  const list = agents.data?.agents ?? [];
  useEffect(() => {
    if (!agent && list.length) setAgent(list[0].name);
  }, [agent, list]);

  const recent = sessions.data?.sessions ?? [];
  const chosen = recent.find((s) => s.name === session) ?? null;
  useEffect(() => {
    onSession(chosen);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [chosen?.name]);

  function pickAgent(name: string) {
    setAgent(name);
    setSession("");
    sessionStorage.setItem(`${CHOICE}.agent`, name);
  }

  function pickSession(name: string) {
    setSession(name);
    sessionStorage.setItem(CHOICE, name);
  }

  async function start() {
    setStarting(true);
    try {
      const created = await api<Session>("/v1/sessions", { method: "POST", body: { agent, channel } });
      sessions.setData({ sessions: [created, ...recent] });
      pickSession(created.name);
    } catch (err) {
      toast.error(err, "Could not start a session");
    } finally {
      setStarting(false);
    }
  }

  if (agents.loading) return <Loading label="Loading agents…" />;
  if (!list.length) return <Empty>No agents yet: create one on the Agents page first.</Empty>;
  return (
    <div className="card picker">
      <div className="field">
        <label htmlFor="pick-agent">Agent</label>
        <select id="pick-agent" value={agent} onChange={(e) => pickAgent(e.target.value)}>
          {list.map((a) => (
            <option key={a.name} value={a.name}>
              {a.displayName} ({a.primaryProvider}
              {a.fallbackProvider ? ` → ${a.fallbackProvider}` : ""})
            </option>
          ))}
        </select>
      </div>
      <div className="field">
        <label htmlFor="pick-session">Session</label>
        <select id="pick-session" value={chosen?.name ?? ""} onChange={(e) => pickSession(e.target.value)}>
          <option value="">{recent.length ? "Choose a recent session…" : "No sessions yet"}</option>
          {recent.map((s) => (
            <option key={s.name} value={s.name}>
              {resourceId(s.name)} · v{s.agentVersion} · {formatTime(s.updateTime)}
            </option>
          ))}
        </select>
      </div>
      <button type="button" className="primary" onClick={start} disabled={starting || !agent}>
        {starting ? "Starting…" : "New session"}
      </button>
    </div>
  );
}
