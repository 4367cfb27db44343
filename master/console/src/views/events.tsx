// Scale events (admin): the provisioners' timeline — launches, joins, drains, terminations,
// launch failures, backoffs, fallbacks — newest first, each with its reason.

import { useState } from "preact/hooks";
import { getJson, qs } from "../api";
import { ErrorBox, Loading } from "../components/ErrorBox";
import { type Column, Table } from "../components/Table";
import { formatRelative, formatTime } from "../format";
import { usePoll } from "../poll";
import { eventKind } from "../reasons";
import type { RouteProps } from "../routes";
import "../ops.css";

export interface ScaleEvent {
  id: number;
  time: string;
  resourcePool: string;
  instanceId: string | null;
  kind: string;
  reason: string;
}

/** Kinds master/provisioning.py and provisioner/loop.py record (more appear as they are seen). */
const KNOWN_KINDS = [
  "requested",
  "joined",
  "adopted",
  "draining",
  "terminated",
  "terminate_failed",
  "launch_failed:",
];

const LIMITS = [100, 500, 1000];

export function EventsView(_: RouteProps) {
  const [pool, setPool] = useState("");
  const [kind, setKind] = useState("");
  const [limit, setLimit] = useState(100);
  const [seenKinds, setSeenKinds] = useState<string[]>([]);
  const pools = usePoll(
    (signal) =>
      getJson<{ resourcePools: { name: string }[] }>("/api/v1/resource-pools", signal).then((r) =>
        r.resourcePools.map((p) => p.name),
      ),
    10_000,
  );
  const poll = usePoll(
    async (signal) => {
      const reply = await getJson<{ events: ScaleEvent[] }>(
        `/api/v1/scale-events${qs({ pool, kind, limit })}`,
        signal,
      );
      const fresh = reply.events.map((e) => e.kind).filter((k) => !seenKinds.includes(k));
      if (fresh.length) setSeenKinds((old) => [...new Set([...old, ...fresh])]);
      return reply.events;
    },
    1000,
    [pool, kind, limit],
  );
  const kinds = [...new Set([...KNOWN_KINDS, ...seenKinds])];
  const events = poll.data ?? [];

  const columns: Column<ScaleEvent>[] = [
    {
      key: "time",
      label: "Time",
      render: (e) => (
        <time dateTime={e.time} title={formatRelative(e.time)}>
          {formatTime(e.time)}
        </time>
      ),
    },
    { key: "pool", label: "Pool", render: (e) => e.resourcePool },
    {
      key: "instance",
      label: "Instance",
      render: (e) => (e.instanceId ? <code>{e.instanceId}</code> : <span class="muted">—</span>),
    },
    {
      key: "kind",
      label: "Event",
      render: (e) => {
        const k = eventKind(e.kind);
        return (
          <span class={`event-kind tone-${k.tone}`} title={e.kind}>
            <span aria-hidden="true">{k.icon} </span>
            {k.text}
          </span>
        );
      },
    },
    {
      key: "reason",
      label: "Reason",
      render: (e) => (
        <span class="event-reason" data-testid="event-reason">
          {e.reason}
        </span>
      ),
    },
  ];

  return (
    <section data-testid="view-events">
      <h1>Scale events</h1>
      <div class="toolbar">
        <label>
          Pool{" "}
          <select value={pool} onChange={(e) => setPool(e.currentTarget.value)}>
            <option value="">all pools</option>
            {(pools.data ?? []).map((p) => (
              <option key={p} value={p}>
                {p}
              </option>
            ))}
          </select>
        </label>
        <label>
          Kind{" "}
          <select value={kind} onChange={(e) => setKind(e.currentTarget.value)}>
            <option value="">all kinds</option>
            {kinds.map((k) => (
              <option key={k} value={k}>
                {k === "launch_failed:" ? "launch failed (any reason)" : eventKind(k).text}
              </option>
            ))}
          </select>
        </label>
        <label>
          Show{" "}
          <select value={limit} onChange={(e) => setLimit(Number(e.currentTarget.value))}>
            {LIMITS.map((n) => (
              <option key={n} value={n}>
                newest {n}
              </option>
            ))}
          </select>
        </label>
      </div>
      <ErrorBox error={poll.error} what="load scale events" />
      {poll.data === undefined && !poll.error ? (
        <Loading what="scale events" />
      ) : (
        <Table
          testid="events-table"
          columns={columns}
          rows={events}
          rowTestId={(e) => `event-row-${e.id}`}
          empty={
            pool || kind
              ? "No events match these filters."
              : "No scale events yet: elastic pools record them as they launch and end instances."
          }
        />
      )}
    </section>
  );
}
