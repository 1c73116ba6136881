// Usage over a date range. Only aggregates cross the wire: the totals and four grouped
// summaries (GetUsageSummary), the provider performance table, and one page of events at a
// time, so the page costs the same on a tenant with a million events as on one with ten.
import { useEffect, useMemo, useState } from "react";
import { Bar, BarChart, CartesianGrid, Cell, Legend, Pie, PieChart, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { api } from "../api/client";
import type { Agent, ProviderPerformance, UsageEvent, UsageGroup, UsageSummary } from "../api/types";
import { Empty, Loading, useLoad } from "../components/ui";
import { durationMs, formatCount, formatMicros, formatMs, formatPercent, formatTime, micros, resourceId } from "../format";
import { useToast } from "../toast";

const GROUPS = ["DAY", "AGENT", "PROVIDER", "CHANNEL"] as const;
type Group = (typeof GROUPS)[number];
const COLORS = ["#2456a6", "#c2410c", "#15803d", "#7e22ce", "#0f766e", "#b91c1c", "#4d7c0f", "#a16207"];
const EVENTS_PAGE = 25;

function isoDay(date: Date): string {
  return date.toISOString().slice(0, 10);
}

/** The API's range: from the start of the first day to the end of the last (UTC). */
export function rangeOf(from: string, to: string): { startTime: string; endTime: string } {
  const end = new Date(`${to}T00:00:00Z`);
  end.setUTCDate(end.getUTCDate() + 1);
  return { startTime: `${from}T00:00:00Z`, endTime: end.toISOString().replace(".000Z", "Z") };
}

/** Chart rows: micro-dollars as dollars (a float only for drawing), turns as numbers. */
export function chartRows(groups: UsageGroup[], label: (key: string) => string = (k) => k) {
  return groups.map((g) => ({
    key: label(g.key),
    cost: Number(micros(g.totals.costMicros)) / 1e6,
    turns: Number(g.totals.turns),
  }));
}

function Totals({ summary }: { summary: UsageSummary }) {
  const t = summary.totals;
  const items: [string, string][] = [
    ["Cost", formatMicros(t?.costMicros)],
    ["Turns", formatCount(t?.turns)],
    ["Prompt tokens", formatCount(t?.promptTokens)],
    ["Completion tokens", formatCount(t?.completionTokens)],
    ["Audio transcribed", `${(t?.audioSeconds ?? 0).toFixed(1)} s`],
    ["Characters spoken", formatCount(t?.ttsCharacters)],
  ];
  return (
    <dl className="totals" data-testid="usage-totals">
      {items.map(([label, value]) => (
        <div key={label} className="total">
          <dt>{label}</dt>
          <dd data-testid={`total-${label.toLowerCase().replace(/ /g, "-")}`}>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

function GroupChart({ title, group, rows }: { title: string; group: Group; rows: ReturnType<typeof chartRows> }) {
  if (!rows.length)
    return (
      <figure className="chart">
        <figcaption>{title}</figcaption>
        <Empty>No usage in this range.</Empty>
      </figure>
    );
  const money = (v: unknown) => `$${Number(v).toFixed(4)}`;
  return (
    <figure className="chart" data-testid={`chart-${group.toLowerCase()}`}>
      <figcaption>{title}</figcaption>
      <div className="chart-box" role="img" aria-label={`${title}: ${rows.map((r) => `${r.key} ${money(r.cost)}`).join(", ")}`}>
        <ResponsiveContainer width="100%" height="100%">
          {group === "CHANNEL" ? (
            <PieChart>
              <Pie data={rows} dataKey="cost" nameKey="key" outerRadius="75%" isAnimationActive={false}>
                {rows.map((r, i) => (
                  <Cell key={r.key} fill={COLORS[i % COLORS.length]} />
                ))}
              </Pie>
              <Tooltip formatter={money} />
              <Legend />
            </PieChart>
          ) : (
            <BarChart data={rows} margin={{ left: 8, right: 8 }}>
              <CartesianGrid strokeDasharray="3 3" />
              <XAxis dataKey="key" tick={{ fontSize: 11 }} />
              <YAxis tickFormatter={(v: number) => `$${v}`} tick={{ fontSize: 11 }} width={64} />
              <Tooltip formatter={money} />
              <Bar dataKey="cost" name="Cost" fill={COLORS[0]} isAnimationActive={false} />
            </BarChart>
          )}
        </ResponsiveContainer>
      </div>
      <details>
        <summary>As a table</summary>
        <table className="table">
          <thead>
            <tr>
              <th scope="col">{group.toLowerCase()}</th>
              <th scope="col">Turns</th>
              <th scope="col">Cost</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <tr key={r.key}>
                <td>{r.key}</td>
                <td>{r.turns.toLocaleString("en-US")}</td>
                <td>{money(r.cost)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </figure>
  );
}

function Performance({ providers }: { providers: ProviderPerformance[] }) {
  if (!providers.length) return <Empty>No provider calls in this range.</Empty>;
  return (
    <div className="scroll">
      <table className="table" data-testid="provider-performance">
        <caption>Provider performance</caption>
        <thead>
          <tr>
            <th scope="col">Provider</th>
            <th scope="col">Attempts</th>
            <th scope="col">Failure rate</th>
            <th scope="col">Circuit-open skips</th>
            <th scope="col">Turns served</th>
            <th scope="col">Fallback rate</th>
            <th scope="col">p50</th>
            <th scope="col">p95</th>
          </tr>
        </thead>
        <tbody>
          {providers.map((p) => (
            <tr key={p.provider}>
              <th scope="row">{p.provider}</th>
              <td>{formatCount(p.attempts)}</td>
              <td>{formatPercent(p.failureRate)}</td>
              <td>{formatCount(p.circuitOpenSkips)}</td>
              <td>{formatCount(p.turnsServed)}</td>
              <td>{formatPercent(p.fallbackRate)}</td>
              <td>{formatMs(durationMs(p.latencyP50))}</td>
              <td>{formatMs(durationMs(p.latencyP95))}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Events({ range, agentName }: { range: { startTime: string; endTime: string }; agentName(key: string): string }) {
  const [tokens, setTokens] = useState<string[]>([""]);
  useEffect(() => {
    setTokens([""]);
  }, [range.startTime, range.endTime]);
  const pageToken = tokens[tokens.length - 1];
  const { data, loading, error } = useLoad(
    () => api<{ usageEvents: UsageEvent[]; nextPageToken: string }>("/v1/usageEvents", { query: { ...range, pageSize: EVENTS_PAGE, pageToken } }),
    [range.startTime, range.endTime, pageToken],
  );
  const events = data?.usageEvents ?? [];
  return (
    <section aria-labelledby="events-title">
      <h2 id="events-title">Events</h2>
      {loading && <Loading label="Loading events…" />}
      {error != null && <p role="alert">Events could not be loaded: {(error as Error).message}</p>}
      {!loading && data && !events.length && <Empty>No events in this range.</Empty>}
      {events.length > 0 && (
        <div className="scroll">
          <table className="table" data-testid="usage-events">
            <caption className="sr-only">Usage events, oldest first</caption>
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Agent</th>
                <th scope="col">Channel</th>
                <th scope="col">Provider</th>
                <th scope="col">Tokens</th>
                <th scope="col">Cost</th>
              </tr>
            </thead>
            <tbody>
              {events.map((e) => (
                <tr key={e.name}>
                  <td>{formatTime(e.eventTime)}</td>
                  <td>{agentName(e.agent)}</td>
                  <td>{e.channel.replace("CHANNEL_", "").toLowerCase()}</td>
                  <td>
                    {e.provider}
                    {e.delivery?.fallbackUsed ? " (fallback)" : ""}
                  </td>
                  <td>{formatCount(micros(e.promptTokens) + micros(e.completionTokens))}</td>
                  <td>{formatMicros(e.costMicros)}</td>
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
    </section>
  );
}

interface UsageData {
  totals: UsageSummary;
  groups: Record<Group, UsageGroup[]>;
}

export default function UsagePage() {
  const toast = useToast();
  const today = new Date();
  const monthAgo = new Date(today.getTime() - 29 * 86_400_000);
  // `#/usage?from=YYYY-MM-DD&to=YYYY-MM-DD` opens a range directly (and is kept in the URL).
  const initial = new URLSearchParams(window.location.hash.split("?")[1] ?? "");
  const day = /^\d{4}-\d{2}-\d{2}$/;
  const [from, setFrom] = useState(day.test(initial.get("from") ?? "") ? initial.get("from")! : isoDay(monthAgo));
  const [to, setTo] = useState(day.test(initial.get("to") ?? "") ? initial.get("to")! : isoDay(today));
  useEffect(() => {
    window.history.replaceState(null, "", `#/usage?from=${from}&to=${to}`);
  }, [from, to]);
  const range = useMemo(() => rangeOf(from, to), [from, to]);
  const invalid = from > to;
  const agents = useLoad(() => api<{ agents: Agent[] }>("/v1/agents", { query: { pageSize: 1000 } }).catch(() => ({ agents: [] as Agent[] })), []);
  const names = useMemo(() => new Map((agents.data?.agents ?? []).map((a) => [a.name, a.displayName])), [agents.data]);
  const agentName = (key: string) => names.get(key) ?? resourceId(key);

  const { data, loading, error, reload: reloadSummaries } = useLoad<UsageData>(async () => {
    if (invalid) throw new Error("The start date is after the end date.");
    // Four grouped summaries; each also carries the totals over the whole range.
    const grouped = await Promise.all(GROUPS.map((groupBy) => api<UsageSummary>("/v1/usage:summary", { query: { ...range, groupBy } })));
    return {
      totals: grouped[0],
      groups: Object.fromEntries(GROUPS.map((g, i) => [g, grouped[i].groups ?? []])) as Record<Group, UsageGroup[]>,
    };
  }, [range.startTime, range.endTime]);
  // The provider table is the costliest aggregate: it loads beside the rest, not before it.
  const performance = useLoad(
    () => (invalid ? Promise.resolve({ providers: [] }) : api<{ providers: ProviderPerformance[] }>("/v1/usage:providerPerformance", { query: range })),
    [range.startTime, range.endTime],
  );

  useEffect(() => {
    if (error && !invalid) toast.error(error, "Usage could not be loaded");
  }, [error, invalid, toast]);
  return (
    <div
      data-testid="usage-page"
      data-ready={data && !loading ? "true" : "false"}
      data-performance-ready={performance.data && !performance.loading ? "true" : "false"}
    >
      <div className="page-head">
        <h1>Usage</h1>
        <form className="range" onSubmit={(e) => e.preventDefault()}>
          <label>
            From <input type="date" value={from} max={to} onChange={(e) => e.target.value && setFrom(e.target.value)} />
          </label>
          <label>
            To <input type="date" value={to} min={from} onChange={(e) => e.target.value && setTo(e.target.value)} />
          </label>
          <button
            type="button"
            onClick={() => {
              reloadSummaries();
              performance.reload();
            }}
          >
            Refresh
          </button>
        </form>
      </div>
      {invalid && <p role="alert">The start date is after the end date.</p>}
      {loading && !data && <Loading label="Loading usage…" />}
      {data && (
        <>
          <Totals summary={data.totals} />
          <div className="charts">
            <GroupChart title="Cost by day" group="DAY" rows={chartRows(data.groups.DAY)} />
            <GroupChart title="Cost by agent" group="AGENT" rows={chartRows(data.groups.AGENT, agentName)} />
            <GroupChart title="Cost by provider" group="PROVIDER" rows={chartRows(data.groups.PROVIDER)} />
            <GroupChart title="Cost by channel" group="CHANNEL" rows={chartRows(data.groups.CHANNEL, (k) => k.replace("CHANNEL_", "").toLowerCase())} />
          </div>
        </>
      )}
      <h2>Providers</h2>
      {performance.loading && !performance.data && <Loading label="Loading provider performance…" />}
      {performance.error != null && <p role="alert">Provider performance could not be loaded: {(performance.error as Error).message}</p>}
      {performance.data && <Performance providers={performance.data.providers ?? []} />}
      {!invalid && <Events range={range} agentName={agentName} />}
    </div>
  );
}
