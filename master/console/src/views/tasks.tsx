// Tasks: commands, shells, notebooks and TensorBoards — state, owner, pool, idle countdown;
// open a ready notebook/TensorBoard through the proxy (one-use ticket), kill (owner or admin).

import { useState } from "preact/hooks";
import { getJson, openTask, postJson } from "../api";
import { mayChange, useAuth } from "../auth";
import { Countdown } from "../components/Countdown";
import { ErrorBox, Loading } from "../components/ErrorBox";
import { StateBadge } from "../components/StateBadge";
import { type Column, Table } from "../components/Table";
import { formatRelative, formatTime, parseTime } from "../format";
import { usePoll } from "../poll";
import { jobType, taskEnded } from "../reasons";
import type { RouteProps } from "../routes";
import "../ops.css";

export interface TaskItem {
  id: string;
  description: string;
  state: string;
  username: string;
  resourcePool: string;
  startTime?: string | null;
  endTime?: string | null;
  isReady?: boolean;
  idleTimeout?: string;
  idleDeadline?: string | null;
  exitStatus?: string | null;
}

export interface TaskRow extends TaskItem {
  type: "COMMAND" | "SHELL" | "NOTEBOOK" | "TENSORBOARD";
}

const KINDS = [
  { type: "COMMAND", path: "commands" },
  { type: "SHELL", path: "shells" },
  { type: "NOTEBOOK", path: "notebooks" },
  { type: "TENSORBOARD", path: "tensorboards" },
] as const;

/** How many ended tasks show unless "Show all ended" is ticked. */
const ENDED_SHOWN = 20;

async function loadTasks(signal: AbortSignal): Promise<TaskRow[]> {
  const replies = await Promise.all(
    KINDS.map((k) =>
      getJson<Record<string, TaskItem[]>>(`/api/v1/${k.path}`, signal).then((body) =>
        (body[k.path] ?? []).map((t) => ({ ...t, type: k.type }) as TaskRow),
      ),
    ),
  );
  return replies.flat();
}

/** Live tasks first (newest first), then ended ones by end time, newest first. */
export function orderTasks(rows: TaskRow[]): TaskRow[] {
  const started = (t: TaskRow) => parseTime(t.startTime) || 0;
  const ended = (t: TaskRow) => parseTime(t.endTime) || started(t);
  const live = rows.filter((t) => !taskEnded(t.state)).sort((a, b) => started(b) - started(a));
  const done = rows.filter((t) => taskEnded(t.state)).sort((a, b) => ended(b) - ended(a));
  return [...live, ...done];
}

const opensInBrowser = (t: TaskRow) => t.type === "NOTEBOOK" || t.type === "TENSORBOARD";

export function TasksView(_: RouteProps) {
  const { user } = useAuth();
  const poll = usePoll(loadTasks, 1000);
  const [allEnded, setAllEnded] = useState(false);
  const [actionError, setActionError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState<string | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);

  const open = async (t: TaskRow) => {
    setActionError(undefined);
    try {
      await openTask(t.id);
    } catch (err) {
      setActionError(err);
    }
  };
  // Kill asks once more inline (no window.confirm: it blocks the page and test drivers
  // dismiss it).
  const kill = async (t: TaskRow) => {
    const path = KINDS.find((k) => k.type === t.type)?.path;
    if (!path) return;
    setConfirming(null);
    setActionError(undefined);
    setBusy(t.id);
    try {
      await postJson(`/api/v1/${path}/${encodeURIComponent(t.id)}/kill`);
      poll.refresh();
    } catch (err) {
      setActionError(err);
    } finally {
      setBusy(null);
    }
  };

  const rows = orderTasks(poll.data ?? []);
  const live = rows.filter((t) => !taskEnded(t.state));
  const ended = rows.filter((t) => taskEnded(t.state));
  const shown = allEnded ? rows : [...live, ...ended.slice(0, ENDED_SHOWN)];

  const columns: Column<TaskRow>[] = [
    { key: "type", label: "Type", render: (t) => jobType(t.type), sortValue: (t) => t.type },
    {
      key: "description",
      label: "Description",
      render: (t) => t.description,
      sortValue: (t) => t.description,
    },
    {
      key: "state",
      label: "State",
      render: (t) => (
        <>
          <StateBadge state={t.state} title={t.exitStatus ?? undefined} />
          {opensInBrowser(t) && !taskEnded(t.state) && (
            <span class="muted small"> {t.isReady ? "· ready" : "· not ready yet"}</span>
          )}
        </>
      ),
      sortValue: (t) => t.state,
    },
    {
      key: "idle",
      label: "Idle timeout",
      title: "Time left before an idle task is killed",
      render: (t) =>
        taskEnded(t.state) ? (
          "—"
        ) : t.idleDeadline ? (
          <Countdown deadline={t.idleDeadline} />
        ) : (
          <span class="muted">
            {!t.idleTimeout || t.idleTimeout === "off" ? "off" : `${t.idleTimeout}, in use`}
          </span>
        ),
    },
    {
      key: "actions",
      label: "Actions",
      render: (t) =>
        taskEnded(t.state) ? null : (
          <span class="actions">
            {opensInBrowser(t) && t.isReady && (
              <button type="button" onClick={() => void open(t)}>
                Open
              </button>
            )}
            {mayChange(user, t.username) &&
              (confirming === t.id ? (
                <>
                  <button type="button" class="danger" onClick={() => void kill(t)}>
                    Kill {jobType(t.type).toLowerCase()}
                  </button>
                  <button type="button" class="secondary" onClick={() => setConfirming(null)}>
                    Keep
                  </button>
                </>
              ) : (
                <button
                  type="button"
                  class="danger"
                  disabled={busy === t.id}
                  onClick={() => setConfirming(t.id)}
                >
                  Kill
                </button>
              ))}
          </span>
        ),
    },
    { key: "owner", label: "Owner", render: (t) => t.username, sortValue: (t) => t.username },
    { key: "pool", label: "Pool", render: (t) => t.resourcePool, sortValue: (t) => t.resourcePool },
    {
      key: "started",
      label: "Started",
      render: (t) => <span title={formatTime(t.startTime)}>{formatRelative(t.startTime)}</span>,
      sortValue: (t) => parseTime(t.startTime),
    },
    {
      key: "id",
      label: "ID",
      render: (t) => <code title={t.id}>{t.id.slice(0, 8)}</code>,
      sortValue: (t) => t.id,
    },
  ];

  return (
    <section data-testid="view-tasks">
      <h1>Tasks</h1>
      <p class="muted">
        Commands, shells, notebooks and TensorBoards. {live.length} live, {ended.length} ended.
      </p>
      <ErrorBox error={actionError} />
      <ErrorBox error={poll.error} what="load tasks" />
      {poll.data === undefined && !poll.error ? (
        <Loading what="tasks" />
      ) : (
        <>
          <Table
            testid="tasks-table"
            columns={columns}
            rows={shown}
            rowTestId={(t) => `task-row-${t.id}`}
            rowClass={(t) => (taskEnded(t.state) ? "ended" : undefined)}
            empty="No tasks. Start one with `det cmd run`, `det notebook start` or `det shell start`."
          />
          {ended.length > ENDED_SHOWN && (
            <label class="check">
              <input
                type="checkbox"
                checked={allEnded}
                onChange={(e) => setAllEnded(e.currentTarget.checked)}
              />{" "}
              Show all {ended.length} ended tasks
            </label>
          )}
        </>
      )}
    </section>
  );
}
