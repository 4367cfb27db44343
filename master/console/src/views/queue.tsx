// Queue: every waiting job in scheduling order, with the reason it waits in words.

import { useRef } from "preact/hooks";
import { getJson } from "../api";
import { ErrorBox, Loading } from "../components/ErrorBox";
import { type Column, Table } from "../components/Table";
import { formatDuration, formatTime } from "../format";
import { useNow, usePoll } from "../poll";
import { jobType, queueReason, waitedSeconds } from "../reasons";
import type { RouteProps } from "../routes";
import "../ops.css";

export interface QueuedJob {
  position: number;
  taskId: string;
  allocationId?: string | null;
  type: string;
  name: string | null;
  username: string;
  priority: number;
  slots: number;
  resourcePool: string;
  queuedTime: string;
  waitingSeconds: number;
  reason: string | null;
}

export function QueueView(_: RouteProps) {
  const fetchedAt = useRef(Date.now());
  const poll = usePoll(async (signal) => {
    const reply = await getJson<{ jobs: QueuedJob[] }>("/api/v1/queue", signal);
    fetchedAt.current = Date.now();
    return reply.jobs;
  }, 1000);
  const now = useNow(1000);
  const jobs = poll.data ?? [];

  const columns: Column<QueuedJob>[] = [
    { key: "position", label: "#", numeric: true, render: (j) => j.position },
    { key: "type", label: "Type", render: (j) => jobType(j.type) },
    { key: "name", label: "Name", render: (j) => j.name ?? <code>{j.taskId}</code> },
    { key: "owner", label: "Owner", render: (j) => j.username },
    { key: "priority", label: "Priority", numeric: true, render: (j) => j.priority },
    { key: "slots", label: "Slots", numeric: true, render: (j) => j.slots },
    { key: "pool", label: "Pool", render: (j) => j.resourcePool },
    {
      key: "waiting",
      label: "Waiting",
      numeric: true,
      render: (j) => {
        const s = waitedSeconds(j.waitingSeconds, fetchedAt.current, now);
        return (
          <span data-testid="queue-wait" data-seconds={Math.floor(s)} title={formatTime(j.queuedTime)}>
            {formatDuration(s)}
          </span>
        );
      },
    },
    { key: "reason", label: "Why it waits", render: (j) => queueReason(j.reason) },
  ];

  return (
    <section data-testid="view-queue">
      <h1>Queue</h1>
      <p class="muted">
        Jobs waiting for slots, in the order the scheduler will place them
        {jobs.length ? ` (${jobs.length} waiting)` : ""}.
      </p>
      <ErrorBox error={poll.error} what="load the queue" />
      {poll.data === undefined && !poll.error ? (
        <Loading what="the queue" />
      ) : (
        <Table
          testid="queue-table"
          columns={columns}
          rows={jobs}
          rowTestId={(j) => `job-row-${j.taskId}`}
          empty="Nothing is waiting: every job has its slots."
        />
      )}
    </section>
  );
}
