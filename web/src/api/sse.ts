// Server-Sent Events over a POST (EventSource can only GET): Envoy's transcoder streams a
// server-streaming RPC as `data: {json}\n\n` events. An error after the stream started
// arrives as an event carrying a google.rpc.Status.
import { ApiError, errorFromBody, failure, send, type RequestOptions } from "./client";

/** Splits an SSE byte stream into the JSON values of its `data:` fields. */
export class SseParser {
  private buffer = "";

  push(chunk: string): unknown[] {
    this.buffer += chunk.replace(/\r\n/g, "\n");
    const events: unknown[] = [];
    let end: number;
    while ((end = this.buffer.indexOf("\n\n")) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) events.push(JSON.parse(data));
    }
    return events;
  }
}

function isStatus(value: unknown): value is { code: number; message: string } {
  return !!value && typeof value === "object" && "code" in value && "message" in value && !("textDelta" in value);
}

/** POSTs `body` and calls `onEvent` for each event; rejects with an ApiError on failure. */
export async function streamJson<E>(
  path: string,
  options: RequestOptions,
  onEvent: (event: E) => void,
): Promise<void> {
  const response = await send(path, { ...options, method: "POST" });
  if (!response.ok) throw await failure(response);
  const requestId = response.headers.get("x-request-id") ?? "";
  if (!response.body) throw new ApiError(response.status, "The reply had no body.", "", requestId);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    for (const event of parser.push(value)) {
      if (isStatus(event)) throw errorFromBody(500, event, requestId);
      onEvent(event as E);
    }
  }
}
