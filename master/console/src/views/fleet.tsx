// Fleet (admin): every instance alive and recently ended — what it costs, what it is doing, when
// idleness will end it, and why it exists.

import { useRef, useState } from "preact/hooks";
import { getJson, qs } from "../api";
import { ErrorBox, Loading } from "../components/ErrorBox";
import { StateBadge } from "../components/StateBadge";
import { type Column, Table } from "../components/Table";
import {
  formatCountdown,
  formatDuration,
  formatTime,
  formatUsd,
} from "../format";
import { useNow, usePoll } from "../poll";
import { instanceEnded, secondsLeft } from "../reasons";
import type { RouteProps } from "../routes";
import "../ops.css";

export interface Instance {
  id: string;
  resourcePool: string;
  provider: string;
  instanceType: string;
  zone: string | null;
  market: string;
  pricePerHour: number;
  slots: number;
  state: string;
  launchedTime: string;
  joinedTime: string | null;
  terminatedTime: string | null;
  uptimeSeconds: number;
  costUsd: number;
  agentId: string | null;
  idleSince: string | null;
  idleDeadline: string | null;
  launchReason: string | null;
  terminationReason: string | null;
  allocations: string[];
}

interface FleetReply {
  now: string;
  instances: Instance[];
}

/** Cloud prices have tenths of a cent ($0.526/h); totals use formatUsd. */
function price(usd: number): string {
  return `$${usd.toFixed(usd >= 100 ? 2 : 3)}/h`;
}

const WINDOWS = [
  { seconds: 3600, label: "last hour" },
  { seconds: 86_400, label: "last day" },
  { seconds: 7 * 86_400, label: "last 7 days" },
];

/** The idle-termination cell: always present, `data-seconds` only while idle. */
function IdleCell({ row, reply, fetchedAt }: { row: Instance; reply: FleetReply; fetchedAt: number }) {
  const now = useNow(1000);
  const left = row.state === "idle" ? secondsLeft(row.idleDeadline, reply.now, fetchedAt, now) : null;
  if (left === null) {
    return (
      <span data-testid="idle-countdown" class="muted">
        —
      </span>
    );
  }
  const whole = Math.max(0, Math.ceil(left));
  return (
    <span
      data-testid="idle-countdown"
      data-seconds={whole}
      class="countdown"
      title={`terminates when idle until ${formatTime(row.idleDeadline)}`}
    >
      <span aria-hidden="true">◷ </span>
      {whole > 0 ? formatCountdown(left) : "terminating now"}
    </span>
  );
}

function Uptime({ row, fetchedAt }: { row: Instance; fetchedAt: number }) {
  const now = useNow(1000);
  const ticking = instanceEnded(row.state) ? 0 : Math.max(0, now - fetchedAt) / 1000;
  return <>{formatDuration(row.uptimeSeconds + ticking)}</>;
}

function Why({ row }: { row: Instance }) {
  return (
    <span data-testid="why" class="why">
      <span>{row.launchReason || "launched before reasons were recorded"}</span>
      {row.allocations.length > 0 && (
        <span class="muted small">
          {" "}
          · running {row.allocations.map((a) => a.slice(0, 8)).join(", ")}
        </span>
      )}
      {row.terminationReason && (
        <span class="ended-why">
          <br />
          <span aria-hidden="true">✕ </span>ended: {row.terminationReason}
        </span>
      )}
    </span>
  );
}

export function FleetView(_: RouteProps) {
  const [endedWithin, setEndedWithin] = useState(86_400);
  const [pool, setPool] = useState("");
  const fetchedAt = useRef(Date.now());
  const poll = usePoll(
    async (signal) => {
      const reply = await getJson<FleetReply>(
        `/api/v1/instances${qs({ endedWithin })}`,
        signal,
      );
      fetchedAt.current = Date.now();
      return reply;
    },
    1000,
    [endedWithin],
  );
  const reply = poll.data;
  const all = reply?.instances ?? [];
  const pools = [...new Set(all.map((i) => i.resourcePool))].sort();
  const rows = pool ? all.filter((i) => i.resourcePool === pool) : all;
  const alive = rows.filter((i) => !instanceEnded(i.state));
  const hourly = alive.reduce((sum, i) => sum + i.pricePerHour, 0);

  const columns: Column<Instance>[] = [
    { key: "id", label: "Instance", render: (i) => <code>{i.id}</code> },
    { key: "state", label: "State", render: (i) => <StateBadge state={i.state} /> },
    {
      key: "idle",
      label: "Idle ends it in",
      render: (i) => (reply ? <IdleCell row={i} reply={reply} fetchedAt={fetchedAt.current} /> : null),
    },
    { key: "price", label: "$/h", numeric: true, render: (i) => price(i.pricePerHour) },
    {
      key: "cost",
      label: "Cost so far",
      numeric: true,
      render: (i) => <span data-usd={i.costUsd}>{formatUsd(i.costUsd)}</span>,
    },
    {
      key: "uptime",
      label: "Uptime",
      numeric: true,
      render: (i) => <Uptime row={i} fetchedAt={fetchedAt.current} />,
    },
    { key: "pool", label: "Pool", render: (i) => i.resourcePool },
    { key: "type", label: "Type", render: (i) => `${i.instanceType} · ${i.slots} slots` },
    { key: "zone", label: "Zone", render: (i) => i.zone || "—" },
    { key: "market", label: "Market", render: (i) => i.market },
    { key: "why", label: "Why it exists", render: (i) => <Why row={i} /> },
  ];

  return (
    <section data-testid="view-fleet">
      <h1>Fleet</h1>
      <div class="toolbar">
        <label>
          Pool{" "}
          <select value={pool} onChange={(e) => setPool(e.currentTarget.value)}>
            <option value="">all pools</option>
            {pools.map((p) => (
              <option key={p} value={p}>
                {p}
              </option>
            ))}
          </select>
        </label>
        <label>
          Ended in the{" "}
          <select value={endedWithin} onChange={(e) => setEndedWithin(Number(e.currentTarget.value))}>
            {WINDOWS.map((w) => (
              <option key={w.seconds} value={w.seconds}>
                {w.label}
              </option>
            ))}
          </select>
        </label>
      </div>
      {reply && (
        <p class="summary">
          <strong>{alive.length}</strong> alive, costing <strong>{price(hourly)}</strong>
          ; {rows.length - alive.length} ended. As of {formatTime(reply.now)}.
        </p>
      )}
      <ErrorBox error={poll.error} what="load the fleet" />
      {!reply && !poll.error ? (
        <Loading what="instances" />
      ) : (
        <Table
          testid="fleet-table"
          columns={columns}
          rows={rows}
          rowTestId={(i) => `instance-row-${i.id}`}
          rowClass={(i) => (instanceEnded(i.state) ? "ended" : undefined)}
          empty="No instances: elastic pools launch them when work is queued."
        />
      )}
    </section>
  );
}
