// The one way the console talks to the gateway: same-origin JSON over fetch, the API key as a
// bearer token, and every error turned into an ApiError that carries the google.rpc.Status
// reason, field violations and request id (DESIGN §4).

export interface FieldViolation {
  field: string;
  description: string;
}

export class ApiError extends Error {
  constructor(
    readonly httpStatus: number,
    message: string,
    readonly reason: string,
    readonly requestId: string,
    readonly fieldViolations: FieldViolation[] = [],
    readonly code = 0,
    readonly offline = false,
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** The route or its service does not exist on this server (yet): Envoy's or auth's 404 for an
   * unknown method, UNIMPLEMENTED (501), or the service not running behind Envoy (503). */
  get unavailable(): boolean {
    if (this.httpStatus === 501) return true;
    if (this.httpStatus === 503) return this.reason === "SERVICE_UNAVAILABLE" || this.reason === "";
    if (this.httpStatus === 404) return this.reason === "METHOD_NOT_FOUND" || this.reason === "NOT_FOUND";
    return false;
  }

  /** Violations keyed by lowerCamelCase field path, as the form fields are named. */
  fieldErrors(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const v of this.fieldViolations) {
      const key = camelPath(v.field);
      out[key] = out[key] ? `${out[key]}; ${v.description}` : v.description;
    }
    return out;
  }
}

/** `agent.display_name` → `displayName` (the violation's leaf, in the JSON spelling). */
export function camelPath(field: string): string {
  const leaf = field.split(".").pop() ?? field;
  return leaf.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

interface StatusDetail {
  "@type"?: string;
  reason?: string;
  requestId?: string;
  fieldViolations?: FieldViolation[];
}

/** Builds an ApiError from a response body (google.rpc.Status JSON, or anything else). */
export function errorFromBody(httpStatus: number, body: unknown, headerRequestId: string): ApiError {
  let message = `HTTP ${httpStatus}`;
  let reason = "";
  let requestId = headerRequestId;
  let code = 0;
  const violations: FieldViolation[] = [];
  if (body && typeof body === "object") {
    const status = body as { code?: number; message?: string; details?: StatusDetail[] };
    if (typeof status.message === "string" && status.message) message = status.message;
    if (typeof status.code === "number") code = status.code;
    for (const d of status.details ?? []) {
      const type = d["@type"] ?? "";
      if (type.endsWith("google.rpc.ErrorInfo") && d.reason) reason = d.reason;
      if (type.endsWith("google.rpc.RequestInfo") && d.requestId) requestId = d.requestId;
      if (type.endsWith("google.rpc.BadRequest")) violations.push(...(d.fieldViolations ?? []));
    }
  }
  return new ApiError(httpStatus, message, reason, requestId, violations, code);
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  query?: Record<string, string | number | undefined>;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Overrides the stored key (the login form checks a key before keeping it). */
  key?: string;
}

type KeySource = () => string | null;
let keySource: KeySource = () => null;

/** The session's API key, read at each request (set by the session provider). */
export function setKeySource(source: KeySource): void {
  keySource = source;
}

export function buildUrl(path: string, query?: RequestOptions["query"]): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v !== undefined && v !== "") params.set(k, String(v));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

export function requestHeaders(options: RequestOptions): Headers {
  const headers = new Headers(options.headers);
  const key = options.key ?? keySource();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  if (options.body !== undefined) headers.set("Content-Type", "application/json");
  return headers;
}

/** fetch that turns a network failure into an offline ApiError. */
export async function send(path: string, options: RequestOptions = {}): Promise<Response> {
  try {
    return await fetch(buildUrl(path, options.query), {
      method: options.method ?? (options.body === undefined ? "GET" : "POST"),
      headers: requestHeaders(options),
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: options.signal,
    });
  } catch (err) {
    if (err instanceof DOMException && err.name === "AbortError") throw err;
    throw new ApiError(0, "The gateway cannot be reached: check your connection.", "OFFLINE", "", [], 14, true);
  }
}

export async function failure(response: Response): Promise<ApiError> {
  const requestId = response.headers.get("x-request-id") ?? "";
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return errorFromBody(response.status, body, requestId);
}

export async function api<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const response = await send(path, options);
  if (!response.ok) throw await failure(response);
  const text = await response.text();
  return (text ? JSON.parse(text) : {}) as T;
}

export function newIdempotencyKey(): string {
  return `console-${crypto.randomUUID()}`;
}
