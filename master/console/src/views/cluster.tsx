// Cluster (admin): one card per resource pool — what it buys, how big it is and may grow, what
// waits for it, how provisioning is going (backoffs with their reasons) — and its agents' slots.

import { getJson } from "../api";
import { ErrorBox, Loading } from "../components/ErrorBox";
import { StateBadge } from "../components/StateBadge";
import { formatCountdown, formatDuration, formatRelative, formatTime } from "../format";
import { usePoll } from "../poll";
import { marketText } from "../reasons";
import type { RouteProps } from "../routes";
import "../ops.css";

interface Backoff {
  offer: string;
  until: string | null;
  failures: number;
  reason: string;
}

interface Provisioning {
  provider: string;
  instanceType: string;
  spot?: boolean;
  market?: string;
  status: string;
  degraded: string | null;
  pendingSlots: number;
  lastPass: string | null;
  minInstances?: number;
  maxInstances?: number;
  maxIdleAgentPeriod?: number | null;
  fallback?: { active: boolean; reason: string | null } | null;
  instances: { id: string; state: string }[];
  backoffs: Backoff[];
}

export interface Pool {
  name: string;
  description: string;
  type: string;
  numAgents: number;
  slotsAvailable: number;
  slotsUsed: number;
  minAgents: number;
  maxAgents: number;
  slotsPerAgent: number;
  instanceType: string;
  stats: { queuedCount: number; scheduledCount: number };
  provisioning: Provisioning | null;
}

interface Slot {
  id: string;
  device: { type: string; brand: string };
  enabled: boolean;
  draining: boolean;
  container: { id: string; parent: string; state: string } | null;
}

export interface Agent {
  id: string;
  enabled: boolean;
  draining: boolean;
  resourcePools: string[];
  slots: Record<string, Slot>;
  idleSince: string | null;
  registeredTime: string;
  instance: { instanceType: string; market: string; zone: string | null } | null;
}

/** An agent's state in words: draining / disabled / busy n of m / idle. */
export function agentState(agent: Agent): { state: string; detail: string } {
  const slots = Object.values(agent.slots);
  const busy = slots.filter((s) => s.container).length;
  const use = `${busy} of ${slots.length} slots busy`;
  if (agent.draining) return { state: "DRAINING", detail: use };
  if (!agent.enabled) return { state: "DISABLED", detail: use };
  return busy ? { state: "BUSY", detail: use } : { state: "IDLE", detail: use };
}

function Stat({ label, value, testid }: { label: string; value: string | number; testid?: string }) {
  return (
    <div class="stat" data-testid={testid}>
      <dt>{label}</dt>
      <dd>{value}</dd>
    </div>
  );
}

function AgentList({ agents, maxIdle }: { agents: Agent[]; maxIdle: number | null }) {
  if (agents.length === 0) return <p class="muted">No agents connected.</p>;
  return (
    <ul class="agents" aria-label="Agents">
      {agents.map((agent) => {
        const { state, detail } = agentState(agent);
        const slots = Object.values(agent.slots).sort((a, b) => Number(a.id) - Number(b.id));
        return (
          <li key={agent.id} data-testid={`agent-${agent.id}`}>
            <div>
              <code>{agent.id}</code> <StateBadge state={state} />{" "}
              <span class="muted small">
                {detail}
                {agent.idleSince && !slots.some((s) => s.container) && (
                  <IdleFor since={agent.idleSince} maxIdle={maxIdle} />
                )}
              </span>
            </div>
            <ul class="slots" aria-label={`Slots of ${agent.id}`}>
              {slots.map((slot) => (
                <li
                  key={slot.id}
                  class={slot.container ? "slot busy" : "slot free"}
                  title={slot.container ? `task ${slot.container.parent}` : "free"}
                >
                  <span aria-hidden="true">{slot.container ? "■" : "□"} </span>
                  {slot.device.type.replace(/^TYPE_/, "").toLowerCase()} {slot.id}:{" "}
                  {slot.container ? `busy (${slot.container.parent.slice(0, 8)})` : "free"}
                </li>
              ))}
            </ul>
          </li>
        );
      })}
    </ul>
  );
}

/** ", idle for 42s (ends in 0:18)": how long an agent has idled and, in an elastic pool, when
 * its instance will be ended for it. */
function IdleFor({ since, maxIdle }: { since: string; maxIdle: number | null }) {
  const idle = (Date.now() - Date.parse(since)) / 1000;
  const left = maxIdle === null ? null : maxIdle - idle;
  return (
    <>
      , idle for {formatDuration(idle)}
      {left !== null && ` (ends in ${formatCountdown(left)})`}
    </>
  );
}

function PoolCard({ pool, agents }: { pool: Pool; agents: Agent[] }) {
  const p = pool.provisioning;
  const market = p ? marketText(p.market ?? (p.spot ? "spot" : "on-demand"), p.fallback) : "—";
  const current = p ? p.instances.filter((i) => i.state !== "terminated").length : pool.numAgents;
  const min = p?.minInstances ?? pool.minAgents;
  const max = p?.maxInstances ?? pool.maxAgents;
  return (
    <article class="card pool-card" data-testid={`pool-card-${pool.name}`}>
      <header>
        <h2>{pool.name}</h2>
        <span class="muted">{pool.description}</span>
      </header>
      <dl class="stats">
        <Stat label="Provider" value={p ? p.provider : "static (agents join by themselves)"} />
        <Stat label="Instance type" value={p?.instanceType || pool.instanceType || "—"} />
        <Stat label="Market" value={market} testid="pool-market" />
        <Stat label="Instances (min / current / max)" value={`${min} / ${current} / ${max}`} />
        <Stat label="Slots allocated / total" value={`${pool.slotsUsed} / ${pool.slotsAvailable}`} />
        <Stat
          label="Queued demand"
          value={`${pool.stats.queuedCount} job${pool.stats.queuedCount === 1 ? "" : "s"}${
            p ? `, ${p.pendingSlots} slots` : ""
          }`}
        />
        {p?.maxIdleAgentPeriod != null && (
          <Stat label="Idle instances end after" value={formatDuration(p.maxIdleAgentPeriod)} />
        )}
      </dl>
      {p && (
        <div class="provisioning">
          <p>
            <strong>Provisioning:</strong> {p.status || "no pass yet"}
            {p.lastPass && (
              <span class="muted small" title={formatTime(p.lastPass)}>
                {" "}
                (checked {formatRelative(p.lastPass)})
              </span>
            )}
          </p>
          {p.degraded && (
            <p class="warn-text">
              <span aria-hidden="true">⚠ </span>Degraded: {p.degraded}
            </p>
          )}
          {p.fallback?.active && (
            <p class="warn-text" data-testid="pool-fallback">
              <span aria-hidden="true">↘ </span>Falling back to on-demand
              {p.fallback.reason ? `: ${p.fallback.reason}` : ""}
            </p>
          )}
          {p.fallback && !p.fallback.active && p.fallback.reason && (
            <p class="warn-text" data-testid="pool-fallback">
              <span aria-hidden="true">⚠ </span>Spot: {p.fallback.reason}
            </p>
          )}
          {p.backoffs.length > 0 && (
            <ul class="backoffs" aria-label="Backoffs">
              {p.backoffs.map((b) => (
                <li key={b.offer}>
                  <span aria-hidden="true">‖ </span>
                  Backing off <code>{b.offer}</code>
                  {b.until ? ` until ${formatTime(b.until)}` : ""}
                  {b.failures ? ` after ${b.failures} failure${b.failures === 1 ? "" : "s"}` : ""}:{" "}
                  {b.reason}
                </li>
              ))}
            </ul>
          )}
        </div>
      )}
      <h3>Agents</h3>
      <AgentList agents={agents} maxIdle={p?.maxIdleAgentPeriod ?? null} />
    </article>
  );
}

export function ClusterView(_: RouteProps) {
  const poll = usePoll(async (signal) => {
    const [pools, agents] = await Promise.all([
      getJson<{ resourcePools: Pool[] }>("/api/v1/resource-pools", signal),
      getJson<{ agents: Agent[] }>("/api/v1/agents", signal),
    ]);
    return { pools: pools.resourcePools, agents: agents.agents };
  }, 1000);
  const data = poll.data;
  return (
    <section data-testid="view-cluster">
      <h1>Cluster</h1>
      <ErrorBox error={poll.error} what="load the resource pools" />
      {!data && !poll.error ? (
        <Loading what="resource pools" />
      ) : (
        <div class="cards">
          {(data?.pools ?? []).map((pool) => (
            <PoolCard
              key={pool.name}
              pool={pool}
              agents={(data?.agents ?? []).filter((a) => a.resourcePools.includes(pool.name))}
            />
          ))}
        </div>
      )}
    </section>
  );
}
