// The JSON shapes of the API (protobuf JSON mapping: lowerCamelCase, int64 as strings,
// Timestamp and Duration as strings), as generated into gen/openapi.json.

export type Scope = "SCOPE_READ" | "SCOPE_WRITE" | "SCOPE_ADMIN" | "SCOPE_OPERATOR";

export interface CallerIdentity {
  tenant: string;
  apiKey: string;
  scopes: Scope[];
  expireTime?: string | null;
}

export interface ModelParameters {
  temperature?: number;
  topP?: number;
  maxOutputTokens?: number;
}

export interface VoiceSettings {
  voice?: string;
  wordsPerMinute?: number;
}

export interface Agent {
  name: string;
  displayName: string;
  systemPrompt: string;
  primaryProvider: string;
  fallbackProvider: string;
  model: string;
  parameters?: ModelParameters | null;
  voice?: VoiceSettings | null;
  version: number;
  etag: string;
  createTime: string;
  updateTime: string;
}

export interface AgentVersion {
  name: string;
  version: number;
  displayName: string;
  systemPrompt: string;
  primaryProvider: string;
  fallbackProvider: string;
  model: string;
  createTime: string;
}

export interface Session {
  name: string;
  agent: string;
  agentVersion: number;
  channel: string;
  createTime: string;
  updateTime: string;
}

export interface Message {
  name: string;
  role: "USER" | "ASSISTANT" | "ROLE_UNSPECIFIED";
  content: string;
  status: string;
  channel: string;
  createTime: string;
}

export interface Attempt {
  provider: string;
  outcome: string;
  latency: string;
  backoff: string;
  errorMessage: string;
}

export interface Delivery {
  provider: string;
  model: string;
  fallbackUsed: boolean;
  attempts: Attempt[];
  latency: string;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  costMicros: string;
  audioSeconds: number;
  ttsCharacters: string;
}

export interface StreamEvent {
  textDelta?: string;
  restart?: boolean;
  userMessage?: Message | null;
  assistantMessage?: Message | null;
  delivery?: Delivery | null;
  usage?: Usage | null;
}

export interface UsageTotals {
  turns: string;
  promptTokens: string;
  completionTokens: string;
  audioSeconds: number;
  ttsCharacters: string;
  costMicros: string;
}

export interface UsageGroup {
  key: string;
  totals: UsageTotals;
}

export interface UsageSummary {
  totals: UsageTotals | null;
  groups: UsageGroup[];
}

export interface ProviderPerformance {
  provider: string;
  attempts: string;
  failedAttempts: string;
  failureRate: number;
  circuitOpenSkips: string;
  turnsServed: string;
  turnsStarted: string;
  turnsFallenBack: string;
  fallbackRate: number;
  latencyP50: string | null;
  latencyP95: string | null;
}

export interface UsageEvent {
  name: string;
  agent: string;
  session: string;
  channel: string;
  provider: string;
  model: string;
  promptTokens: string;
  completionTokens: string;
  audioSeconds: number;
  ttsCharacters: string;
  costMicros: string;
  eventTime: string;
  delivery?: Delivery | null;
}

export interface ApiKey {
  name: string;
  displayName: string;
  prefix: string;
  scopes: Scope[];
  secret: string;
  createTime: string;
  expireTime?: string | null;
  revokeTime?: string | null;
  /** When the key was last used, to the minute (recorded a few seconds late); absent if never. */
  lastUseTime?: string | null;
  /** The key that replaced this one by rotation. */
  successor?: string;
}

export interface Audio {
  content: string;
  sampleRateHertz?: number;
  duration?: string | null;
}

/** Where the time of a spoken turn went, from when the gateway had the whole utterance. */
export interface VoiceLatency {
  speechRecognized?: string | null;
  firstReplyToken?: string | null;
  firstReplyAudio?: string | null;
  total?: string | null;
}

export interface ConverseResponse {
  transcript: string;
  replyText: string;
  replyAudio?: Audio | null;
  delivery?: Delivery | null;
  usage?: Usage | null;
  latency?: VoiceLatency | null;
}
