import { describe, expect, it } from "vitest";
import { ApiError, camelPath, errorFromBody } from "./api/client";
import { SseParser } from "./api/sse";
import { encodeWav, fromBase64, toBase64 } from "./audio";
import { dollarsToMicros, durationMs, formatMicros } from "./format";
import { changedFields, draftOf } from "./pages/Agents";
import { budgetUsed } from "./pages/Limits";
import { applyEvent, type Turn } from "./pages/TryIt";
import { chartRows, rangeOf } from "./pages/Usage";
import { latencyBreakdown } from "./pages/Voice";

describe("money", () => {
  it("formats micro-dollars exactly, without floats", () => {
    expect(formatMicros("84")).toBe("$0.000084");
    expect(formatMicros("1234567")).toBe("$1.234567");
    expect(formatMicros("9007199254740993")).toBe("$9,007,199,254.740993");
    expect(formatMicros(undefined)).toBe("$0.000000");
  });
  it("reads dollars typed by a person", () => {
    expect(dollarsToMicros("12.5")).toBe("12500000");
    expect(dollarsToMicros("$100")).toBe("100000000");
    expect(dollarsToMicros("0.0000001")).toBeNull();
    expect(dollarsToMicros("ten")).toBeNull();
  });
  it("reads protobuf durations", () => {
    expect(durationMs("0.012s")).toBeCloseTo(12);
    expect(durationMs("3s")).toBe(3000);
    expect(durationMs(null)).toBe(0);
  });
});

describe("errors", () => {
  const status = {
    code: 3,
    message: "invalid agent",
    details: [
      { "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "INVALID_ARGUMENT", domain: "vocalbridge.dev" },
      {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        fieldViolations: [
          { field: "agent.primary_provider", description: "unknown provider" },
          { field: "agent.display_name", description: "is required" },
        ],
      },
      { "@type": "type.googleapis.com/google.rpc.RequestInfo", requestId: "req-1" },
    ],
  };

  it("carries the reason, the request id and the field violations of a google.rpc.Status", () => {
    const err = errorFromBody(400, status, "header-id");
    expect(err.reason).toBe("INVALID_ARGUMENT");
    expect(err.requestId).toBe("req-1");
    expect(err.fieldErrors()).toEqual({ primaryProvider: "unknown provider", displayName: "is required" });
    expect(camelPath("agent.fallback_provider")).toBe("fallbackProvider");
  });

  it("tells a missing API from a missing resource", () => {
    const gateway404 = errorFromBody(404, { code: 5, message: "x", details: [{ "@type": "google.rpc.ErrorInfo", reason: "METHOD_NOT_FOUND" }] }, "");
    const resource404 = errorFromBody(404, { code: 5, message: "x", details: [{ "@type": "google.rpc.ErrorInfo", reason: "SESSION_NOT_FOUND" }] }, "");
    const down = errorFromBody(503, { code: 14, message: "x", details: [{ "@type": "google.rpc.ErrorInfo", reason: "SERVICE_UNAVAILABLE" }] }, "");
    const exhausted = errorFromBody(503, { code: 14, message: "x", details: [{ "@type": "google.rpc.ErrorInfo", reason: "PROVIDERS_EXHAUSTED" }] }, "");
    expect([gateway404.unavailable, resource404.unavailable, down.unavailable, exhausted.unavailable]).toEqual([true, false, true, false]);
    expect(new ApiError(501, "", "", "").unavailable).toBe(true);
  });
});

describe("server-sent events", () => {
  it("joins events split across chunks and ignores other fields", () => {
    const parser = new SseParser();
    expect(parser.push('data: {"textDelta":"Hel')).toEqual([]);
    expect(parser.push('lo"}\n\nevent: x\ndata: {"textDelta":" there"}\r\n\r\ndata: {"us')).toEqual([{ textDelta: "Hello" }, { textDelta: " there" }]);
    expect(parser.push('age":{"costMicros":"84"}}\n\n')).toEqual([{ usage: { costMicros: "84" } }]);
  });

  it("builds the reply from deltas, restarts, and the final event", () => {
    let turn: Turn = { key: "k", role: "ASSISTANT", content: "", streaming: true };
    turn = applyEvent(turn, { textDelta: "Hel" });
    turn = applyEvent(turn, { textDelta: "XX", restart: true });
    turn = applyEvent(turn, { textDelta: "lo" });
    expect(turn.content).toBe("XXlo");
    turn = applyEvent(turn, {
      assistantMessage: { name: "m", role: "ASSISTANT", content: "XXlo", status: "", channel: "", createTime: "" },
      usage: { promptTokens: 1, completionTokens: 2, costMicros: "84", audioSeconds: 0, ttsCharacters: "0" },
    });
    expect(turn.streaming).toBe(false);
    expect(turn.usage?.costMicros).toBe("84");
  });
});

describe("audio", () => {
  it("writes a 16-bit PCM mono WAV", () => {
    const wav = encodeWav(new Float32Array([0, 1, -1, 0.5]), 16000);
    const view = new DataView(wav.buffer);
    expect(new TextDecoder().decode(wav.slice(0, 4))).toBe("RIFF");
    expect(new TextDecoder().decode(wav.slice(8, 12))).toBe("WAVE");
    expect(view.getUint16(22, true)).toBe(1);
    expect(view.getUint32(24, true)).toBe(16000);
    expect(view.getUint16(34, true)).toBe(16);
    expect(view.getUint32(40, true)).toBe(8);
    expect([view.getInt16(44, true), view.getInt16(46, true), view.getInt16(48, true)]).toEqual([0, 32767, -32768]);
    expect(fromBase64(toBase64(wav))).toEqual(wav);
  });

  it("breaks a spoken turn's latency down, with the server's own timings", () => {
    const rows = latencyBreakdown(
      { recordMs: 2000, encodeMs: 15, roundTripMs: 900 },
      {
        transcript: "hi",
        replyText: "hello",
        delivery: { provider: "vendorA", model: "", fallbackUsed: false, attempts: [], latency: "0.300s" },
        latency: { speechRecognized: "0.150s", firstReplyToken: "0.200s", firstReplyAudio: "0.450s", total: "0.800s" },
      } as never,
    );
    const byLabel = Object.fromEntries(rows.map((r) => [r.label.trim(), r.ms]));
    expect(byLabel["of which speech and transport"]).toBeCloseTo(600);
    expect(byLabel["Speech recognized (server)"]).toBeCloseTo(150);
    expect(byLabel["First reply audio ready (server)"]).toBeCloseTo(450);
  });
});

describe("pages' pure parts", () => {
  it("sends only the changed agent fields as the update mask", () => {
    const before = draftOf({ displayName: "A", systemPrompt: "p", primaryProvider: "vendorA", fallbackProvider: "", model: "" } as never);
    expect(changedFields(before, { ...before, systemPrompt: "q", model: "m" })).toEqual(["systemPrompt", "model"]);
  });
  it("asks for whole UTC days", () => {
    expect(rangeOf("2026-11-01", "2026-11-30")).toEqual({ startTime: "2026-11-01T00:00:00Z", endTime: "2026-12-01T00:00:00Z" });
  });
  it("charts cost in dollars from micros", () => {
    expect(chartRows([{ key: "vendorA", totals: { turns: "3", costMicros: "1500000" } as never }])).toEqual([{ key: "vendorA", cost: 1.5, turns: 3 }]);
  });
  it("shows a budget's use including what turns in flight reserved", () => {
    expect(budgetUsed({ limitMicros: "1000000", usage: { spentMicros: "250000", reservedMicros: "250000" } })).toBe(0.5);
    expect(budgetUsed({ limitMicros: "0", usage: { spentMicros: "5" } })).toBe(0);
    expect(budgetUsed({ limitMicros: "10", usage: { spentMicros: "50" } })).toBe(1);
    expect(budgetUsed({ limitMicros: "10" })).toBe(0);
  });
});
