import { useEffect, useRef, useState } from "react";
import { api, ApiError, newIdempotencyKey } from "../api/client";
import type { ConverseResponse, Session, VoiceLatency } from "../api/types";
import { fromBase64, recordingToWav, toBase64 } from "../audio";
import { DeliveryRecord } from "../components/Delivery";
import { SessionPicker } from "../components/SessionPicker";
import { Loading, Unavailable } from "../components/ui";
import { durationMs, formatMs } from "../format";
import { useToast } from "../toast";

// A request the voice service refuses without side effects (no audio, unknown session). What
// matters is who answers: the service (it exists) or the gateway (404/501/503: it does not).
const PROBE = "/v1/sessions/ses_00000000000000000000000000/voice:converse";

export async function probeVoice(): Promise<ApiError | null> {
  try {
    await api(PROBE, { method: "POST", body: {}, headers: { "Idempotency-Key": newIdempotencyKey() } });
    return null;
  } catch (err) {
    if (err instanceof ApiError && err.unavailable) return err;
    return null;
  }
}

const SERVER_LATENCY: [keyof VoiceLatency, string][] = [
  ["speechRecognized", "Speech recognized"],
  ["firstReplyToken", "First reply text"],
  ["firstReplyAudio", "First reply audio ready"],
  ["total", "Whole reply spoken"],
];

export interface LatencyRow {
  label: string;
  ms: number;
}

/** Where the time of a spoken turn went, from what the browser measured and the response. */
export function latencyBreakdown(measured: { recordMs: number; encodeMs: number; roundTripMs: number }, response: ConverseResponse): LatencyRow[] {
  const turnMs = durationMs(response.delivery?.latency);
  const rows: LatencyRow[] = [
    { label: "Your recording", ms: measured.recordMs },
    { label: "Preparing the audio (WAV) in the browser", ms: measured.encodeMs },
    { label: "Gateway round trip (upload, speech-to-text, turn, text-to-speech, download)", ms: measured.roundTripMs },
    { label: "  of which the agent's turn (provider calls)", ms: turnMs },
    { label: "  of which speech and transport", ms: Math.max(0, measured.roundTripMs - turnMs) },
  ];
  // The gateway's own timings (ConverseResponse.latency), each from when it had the whole utterance.
  const server = response.latency;
  if (server) {
    for (const [key, label] of SERVER_LATENCY) {
      const value = server[key];
      if (value) rows.push({ label: `  ${label} (server)`, ms: durationMs(value) });
    }
  }
  const reply = durationMs(response.replyAudio?.duration);
  if (reply) rows.push({ label: "Length of the spoken reply", ms: reply });
  return rows;
}

type Phase = "idle" | "recording" | "sending";

function Recorder({ session }: { session: Session }) {
  const toast = useToast();
  const [phase, setPhase] = useState<Phase>("idle");
  const [result, setResult] = useState<{ response: ConverseResponse; rows: LatencyRow[]; audioUrl: string | null } | null>(null);
  const recorder = useRef<MediaRecorder | null>(null);
  const started = useRef(0);

  useEffect(() => () => void (result?.audioUrl && URL.revokeObjectURL(result.audioUrl)), [result]);

  async function start() {
    let stream: MediaStream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      toast.error(err, "The microphone is not available");
      return;
    }
    const chunks: Blob[] = [];
    const rec = new MediaRecorder(stream);
    rec.ondataavailable = (e) => e.data.size && chunks.push(e.data);
    rec.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      void send(new Blob(chunks, { type: rec.mimeType }), performance.now() - started.current);
    };
    recorder.current = rec;
    started.current = performance.now();
    rec.start();
    setPhase("recording");
  }

  function stop() {
    recorder.current?.stop();
    setPhase("sending");
  }

  async function send(blob: Blob, recordMs: number) {
    try {
      const t0 = performance.now();
      const { wav } = await recordingToWav(blob);
      const t1 = performance.now();
      const response = await api<ConverseResponse>(`/v1/${session.name}/voice:converse`, {
        method: "POST",
        body: { audio: { content: toBase64(wav) } },
        headers: { "Idempotency-Key": newIdempotencyKey() },
      });
      const t2 = performance.now();
      const audio = response.replyAudio?.content;
      const audioUrl = audio ? URL.createObjectURL(new Blob([fromBase64(audio) as BlobPart], { type: "audio/wav" })) : null;
      setResult({ response, rows: latencyBreakdown({ recordMs, encodeMs: t1 - t0, roundTripMs: t2 - t1 }, response), audioUrl });
    } catch (err) {
      toast.error(err, "The spoken turn failed");
    } finally {
      setPhase("idle");
    }
  }

  return (
    <section className="panel" aria-label="Voice turn">
      <div className="actions">
        {phase !== "recording" ? (
          <button type="button" className="primary" onClick={start} disabled={phase === "sending"}>
            {phase === "sending" ? "Sending…" : "Record"}
          </button>
        ) : (
          <button type="button" className="danger" onClick={stop}>
            Stop and send
          </button>
        )}
        {phase === "recording" && (
          <span role="status" className="recording">
            Recording…
          </span>
        )}
      </div>
      {result && (
        <div className="voice-result" data-testid="voice-result">
          <p>
            <strong>You said:</strong> <span data-testid="transcript">{result.response.transcript}</span>
          </p>
          <p>
            <strong>Agent:</strong> <span data-testid="reply-text">{result.response.replyText}</span>
          </p>
          {result.audioUrl && <audio controls autoPlay src={result.audioUrl} data-testid="reply-audio" aria-label="The agent's spoken reply" />}
          <DeliveryRecord delivery={result.response.delivery} usage={result.response.usage} />
          <table className="table" data-testid="latency">
            <caption>Latency breakdown</caption>
            <tbody>
              {result.rows.map((r) => (
                <tr key={r.label}>
                  <th scope="row" className={r.label.startsWith("  ") ? "indent" : undefined}>
                    {r.label.trim()}
                  </th>
                  <td>{formatMs(r.ms)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

export function VoicePage() {
  const [session, setSession] = useState<Session | null>(null);
  const [probe, setProbe] = useState<{ done: boolean; error: ApiError | null }>({ done: false, error: null });
  useEffect(() => {
    void probeVoice().then((error) => setProbe({ done: true, error }));
  }, []);
  const recordable = typeof MediaRecorder !== "undefined" && !!navigator.mediaDevices;
  return (
    <>
      <h1>Voice</h1>
      <p className="muted">Record a question; the gateway transcribes it, runs the turn and speaks the reply.</p>
      {!probe.done && <Loading label="Checking the voice service…" />}
      {probe.error && <Unavailable feature="Voice" error={probe.error} />}
      {probe.done && !probe.error && (
        <>
          {!recordable && <p className="state">This browser cannot record audio.</p>}
          <SessionPicker channel="CHANNEL_VOICE" onSession={setSession} />
          {session && recordable && <Recorder key={session.name} session={session} />}
        </>
      )}
    </>
  );
}
