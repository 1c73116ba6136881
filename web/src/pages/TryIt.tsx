import { useEffect, useRef, useState, type FormEvent } from "react";
import { api, newIdempotencyKey } from "../api/client";
import { streamJson } from "../api/sse";
import type { Delivery, Message, Session, StreamEvent, Usage } from "../api/types";
import { DeliveryRecord } from "../components/Delivery";
import { SessionPicker } from "../components/SessionPicker";
import { Loading } from "../components/ui";
import { useSession } from "../session";
import { useToast } from "../toast";

export interface Turn {
  key: string;
  role: "USER" | "ASSISTANT";
  content: string;
  streaming?: boolean;
  failed?: boolean;
  delivery?: Delivery | null;
  usage?: Usage | null;
}

/** Folds one stream event into the reply being built (a `restart` discards what came before). */
export function applyEvent(turn: Turn, event: StreamEvent): Turn {
  if (event.assistantMessage || event.usage || event.delivery) {
    return {
      ...turn,
      content: event.assistantMessage?.content ?? turn.content,
      delivery: event.delivery ?? turn.delivery,
      usage: event.usage ?? turn.usage,
      streaming: false,
    };
  }
  const base = event.restart ? "" : turn.content;
  return { ...turn, content: base + (event.textDelta ?? "") };
}

function fromMessage(m: Message): Turn {
  return { key: m.name, role: m.role === "USER" ? "USER" : "ASSISTANT", content: m.content, failed: m.status === "MESSAGE_STATUS_FAILED" };
}

export function Chat({ session }: { session: Session }) {
  const toast = useToast();
  const { can } = useSession();
  const [turns, setTurns] = useState<Turn[]>([]);
  const [loading, setLoading] = useState(true);
  const [text, setText] = useState("");
  const [sending, setSending] = useState(false);
  const endRef = useRef<HTMLLIElement>(null);

  useEffect(() => {
    let live = true;
    setLoading(true);
    api<{ messages: Message[] }>(`/v1/${session.name}/messages`, { query: { pageSize: 200 } })
      .then((r) => live && setTurns(r.messages.map(fromMessage)))
      .catch((err: unknown) => live && toast.error(err, "Could not load the conversation"))
      .finally(() => live && setLoading(false));
    return () => {
      live = false;
    };
  }, [session.name, toast]);

  useEffect(() => {
    // Chromium's scrollIntoView returns a promise: not a cleanup for React.
    void endRef.current?.scrollIntoView?.({ block: "nearest" });
  }, [turns]);

  async function send(event: FormEvent) {
    event.preventDefault();
    const content = text.trim();
    if (!content) return;
    const id = newIdempotencyKey();
    setText("");
    setSending(true);
    const replyKey = `${id}-reply`;
    setTurns((all) => [...all, { key: id, role: "USER", content }, { key: replyKey, role: "ASSISTANT", content: "", streaming: true }]);
    const update = (fn: (t: Turn) => Turn) => setTurns((all) => all.map((t) => (t.key === replyKey ? fn(t) : t)));
    try {
      await streamJson<StreamEvent>(
        `/v1/${session.name}/messages:stream`,
        { body: { content }, headers: { "Idempotency-Key": id } },
        (e) => update((t) => applyEvent(t, e)),
      );
      update((t) => ({ ...t, streaming: false }));
    } catch (err) {
      update((t) => ({ ...t, streaming: false, failed: true, content: t.content || "No reply." }));
      toast.error(err, "The turn failed");
    } finally {
      setSending(false);
    }
  }

  return (
    <section className="chat" aria-label="Conversation">
      {loading ? (
        <Loading label="Loading the conversation…" />
      ) : (
        <ol className="messages" aria-live="polite" data-testid="messages">
          {turns.length === 0 && <li className="state state-empty">No messages yet: say hello.</li>}
          {turns.map((t) => (
            <li key={t.key} className={`bubble ${t.role === "USER" ? "user" : "assistant"}${t.failed ? " failed" : ""}`}>
              <span className="sr-only">{t.role === "USER" ? "You" : "Agent"}: </span>
              <span className="content" data-testid={t.role === "ASSISTANT" ? "reply" : undefined}>
                {t.content}
                {t.streaming && <span className="cursor" aria-hidden="true" />}
              </span>
              {t.role === "ASSISTANT" && (t.delivery || t.usage) && <DeliveryRecord delivery={t.delivery} usage={t.usage} />}
            </li>
          ))}
          <li ref={endRef} aria-hidden="true" className="end" />
        </ol>
      )}
      <form className="composer" onSubmit={send}>
        <label htmlFor="composer-input" className="sr-only">
          Message
        </label>
        <textarea
          id="composer-input"
          rows={2}
          value={text}
          placeholder={can("SCOPE_WRITE") ? "Type a message; Enter sends, Shift+Enter adds a line" : "This key cannot send turns (read only)"}
          disabled={!can("SCOPE_WRITE")}
          onChange={(e) => setText(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey) {
              e.preventDefault();
              e.currentTarget.form?.requestSubmit();
            }
          }}
        />
        <button type="submit" className="primary" disabled={sending || !text.trim()}>
          {sending ? "Sending…" : "Send"}
        </button>
      </form>
    </section>
  );
}

export function TryItPage() {
  const [session, setSession] = useState<Session | null>(null);
  return (
    <>
      <h1>Try it</h1>
      <SessionPicker channel="CHANNEL_TEXT" onSession={setSession} />
      {session ? <Chat key={session.name} session={session} /> : <p className="state state-empty">Start a new session or pick one to chat.</p>}
    </>
  );
}
