import { useState } from "preact/hooks";
import { getJson, qs } from "../api";
import { useAuth } from "../auth";
import { ErrorBox, Loading } from "../components/ErrorBox";
import { ExperimentActions, LabelEditor } from "../components/ExperimentActions";
import { StateBadge } from "../components/StateBadge";
import { Table, type Column, type Sort } from "../components/Table";
import { formatDuration, formatMetric, formatPercent, formatRelative, formatTime, formatUsd, parseTime, plural } from "../format";
import { useNow, usePoll } from "../poll";
import type { Experiment, Pagination } from "../types";

const LIMIT = 200;

/** Columns the master sorts (Determined's sortBy names); the rest sort this page here. */
const SERVER_SORTS: Record<string, string> = {
  id: "SORT_BY_ID",
  name: "SORT_BY_NAME",
  state: "SORT_BY_STATE",
  progress: "SORT_BY_PROGRESS",
  user: "SORT_BY_USER",
  pool: "SORT_BY_RESOURCE_POOL",
  trials: "SORT_BY_NUM_TRIALS",
};

export const STATES: [string, string][] = [
  ["", "Any state"],
  ["STATE_ACTIVE", "Active"],
  ["STATE_PAUSED", "Paused"],
  ["STATE_STOPPING_COMPLETED", "Stopping"],
  ["STATE_STOPPING_KILLED", "Being killed"],
  ["STATE_COMPLETED", "Completed"],
  ["STATE_CANCELED", "Canceled"],
  ["STATE_ERROR", "Error"],
];

/** Seconds from start to end (or to now while it runs). */
export function experimentSeconds(e: { startTime: string; endTime?: string | null }, now: number) {
  const start = parseTime(e.startTime);
  if (!Number.isFinite(start)) return null;
  const end = e.endTime ? parseTime(e.endTime) : now;
  return Math.max(0, (end - start) / 1000);
}

export function ProgressCell({ progress, state }: { progress?: number | null; state: string }) {
  if (progress === null || progress === undefined) {
    return <span class="muted">{state === "STATE_COMPLETED" ? "100%" : "—"}</span>;
  }
  const value = Math.max(0, Math.min(1, progress));
  return (
    <span class="progress">
      <progress max={1} value={value} aria-hidden="true" />
      {formatPercent(value)}
    </span>
  );
}

export function ExperimentsView() {
  const { user } = useAuth();
  const now = useNow(1000);
  const [owner, setOwner] = useState("");
  const [state, setState] = useState("");
  const [label, setLabel] = useState("");
  const [archived, setArchived] = useState(false);
  const [sort, setSort] = useState<Sort>({ key: "id", desc: true });

  const serverSort = SERVER_SORTS[sort.key];
  const query = qs({
    users: owner || undefined,
    states: state || undefined,
    labels: label.trim() || undefined,
    archived: archived ? undefined : "false",
    sortBy: serverSort ?? "SORT_BY_ID",
    orderBy: (serverSort ? sort.desc : true) ? "ORDER_BY_DESC" : "ORDER_BY_ASC",
    limit: LIMIT,
  });
  const poll = usePoll(
    (signal) =>
      getJson<{ experiments: Experiment[]; pagination: Pagination }>(
        `/api/v1/experiments${query}`,
        signal,
      ),
    1000,
    [query],
  );
  const experiments = poll.data?.experiments ?? [];
  const total = poll.data?.pagination?.total ?? experiments.length;

  const columns: Column<Experiment>[] = [
    {
      key: "id",
      label: "ID",
      numeric: true,
      render: (e) => <a href={`#/experiments/${e.id}`}>{e.id}</a>,
      sortValue: (e) => e.id,
    },
    {
      key: "name",
      label: "Name",
      render: (e) => (
        <a href={`#/experiments/${e.id}`}>
          {e.name}
          {e.archived && <span class="tag"> archived</span>}
        </a>
      ),
      sortValue: (e) => e.name,
    },
    {
      key: "state",
      label: "State",
      render: (e) => <StateBadge state={e.state} title={e.stateReason ?? undefined} />,
      sortValue: (e) => e.state,
    },
    {
      key: "progress",
      label: "Progress",
      render: (e) => <ProgressCell progress={e.progress} state={e.state} />,
      sortValue: (e) => e.progress,
    },
    { key: "trials", label: "Trials", numeric: true, render: (e) => e.numTrials, sortValue: (e) => e.numTrials },
    {
      key: "duration",
      label: "Duration",
      numeric: true,
      render: (e) => (
        <span title={`started ${formatRelative(e.startTime, now)} (${formatTime(e.startTime)})`}>
          {formatDuration(experimentSeconds(e, now))}
        </span>
      ),
      sortValue: (e) => experimentSeconds(e, now),
    },
    { key: "pool", label: "Pool", render: (e) => e.resourcePool ?? "—", sortValue: (e) => e.resourcePool },
    {
      key: "metric",
      label: "Best metric",
      title: "The searcher metric and its best value so far (links to the best trial)",
      render: (e) => (
        <span class="stacked" title={e.bestTrialId ? `best: trial ${e.bestTrialId}` : undefined}>
          {e.bestTrialId ? (
            <a href={`#/trials/${e.bestTrialId}`}>{formatMetric(e.bestTrialSearcherMetric)}</a>
          ) : (
            formatMetric(e.bestTrialSearcherMetric)
          )}
          <small class="muted">{e.searcherMetric || "—"}</small>
        </span>
      ),
      sortValue: (e) => e.bestTrialSearcherMetric,
    },
    { key: "user", label: "User", render: (e) => e.username, sortValue: (e) => e.username },
    { key: "labels", label: "Labels", render: (e) => <LabelEditor e={e} onDone={poll.refresh} /> },
    {
      key: "cost",
      label: "Cost",
      title: "Cost so far",
      numeric: true,
      render: (e) => formatUsd(e.costUsd),
      sortValue: (e) => e.costUsd,
    },
    { key: "actions", label: "Actions", render: (e) => <ExperimentActions e={e} onDone={poll.refresh} /> },
  ];

  // The master sorted by a server column already; other columns sort this page here.
  let rows = experiments;
  if (!serverSort) {
    const column = columns.find((c) => c.key === sort.key);
    const value = column?.sortValue;
    if (value) {
      rows = [...rows].sort((a, b) => {
        const va = value(a);
        const vb = value(b);
        if (va === null || va === undefined || vb === null || vb === undefined) {
          return va === vb ? 0 : va === null || va === undefined ? 1 : -1;
        }
        const order = typeof va === "number" && typeof vb === "number" ? va - vb : String(va).localeCompare(String(vb));
        return sort.desc ? -order : order;
      });
    }
  }
  const users = [...new Set([user?.username ?? "", ...experiments.map((e) => e.username), owner])]
    .filter(Boolean)
    .sort();

  return (
    <section data-testid="view-experiments">
      <h1>Experiments</h1>
      <form class="toolbar" onSubmit={(ev) => ev.preventDefault()} aria-label="Filter experiments">
        <label>
          User
          <select id="filter-user" value={owner} onChange={(ev) => setOwner((ev.target as HTMLSelectElement).value)}>
            <option value="">Everyone</option>
            {users.map((u) => (
              <option key={u} value={u}>
                {u === user?.username ? `${u} (me)` : u}
              </option>
            ))}
          </select>
        </label>
        <label>
          State
          <select id="filter-state" value={state} onChange={(ev) => setState((ev.target as HTMLSelectElement).value)}>
            {STATES.map(([value, text]) => (
              <option key={value} value={value}>
                {text}
              </option>
            ))}
          </select>
        </label>
        <label>
          Label
          <input
            id="filter-label"
            type="search"
            placeholder="any label"
            value={label}
            onChange={(ev) => setLabel((ev.target as HTMLInputElement).value)}
          />
        </label>
        <label class="inline">
          <input type="checkbox" checked={archived} onChange={(ev) => setArchived((ev.target as HTMLInputElement).checked)} />
          Show archived
        </label>
        <span class="muted" aria-live="polite">
          {poll.data
            ? experiments.length === total
              ? plural(total, "experiment")
              : `${experiments.length} of ${plural(total, "experiment")}`
            : ""}
        </span>
      </form>
      <ErrorBox error={poll.error} what="load experiments" />
      {poll.loading && !poll.data ? (
        <Loading what="experiments" />
      ) : (
        <Table
          testid="experiments-table"
          columns={columns}
          rows={rows}
          rowTestId={(e) => `experiment-row-${e.id}`}
          rowKey={(e) => e.id}
          sort={sort}
          onSort={(next) => setSort(next.key === sort.key ? next : { key: next.key, desc: next.key === "id" })}
          empty={
            owner || state || label
              ? "No experiment matches these filters."
              : (
                  <>
                    No experiments yet. Create one with <code>det experiment create config.yaml .</code>
                  </>
                )
          }
        />
      )}
    </section>
  );
}
