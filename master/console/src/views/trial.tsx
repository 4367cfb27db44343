import { useState } from "preact/hooks";
import { downloadTo, getJson } from "../api";
import { ErrorBox, Loading } from "../components/ErrorBox";
import { MetricCharts } from "../components/MetricCharts";
import { LogView } from "../components/LogView";
import { StateBadge } from "../components/StateBadge";
import { Table, type Column } from "../components/Table";
import { formatBytes, formatDuration, formatInt, formatMetric, formatRelative } from "../format";
import { flattenHparams } from "../hparams";
import { useNow, usePoll } from "../poll";
import type { RouteProps } from "../routes";
import { useSeries } from "../series";
import type { Checkpoint, MetricGroup, Trial } from "../types";
import { trialSeconds } from "./experiment";

const ENDED = new Set(["STATE_COMPLETED", "STATE_CANCELED", "STATE_ERROR", "STATE_DELETED"]);

export function checkpointBytes(c: Checkpoint): number {
  return Object.values(c.resources ?? {}).reduce((sum, size) => sum + (Number(size) || 0), 0);
}

export function checkpointBatches(c: Checkpoint): number | null {
  const meta = c.metadata ?? {};
  const value = c.totalBatches ?? c.stepsCompleted ?? meta.steps_completed ?? meta.stepsCompleted;
  return typeof value === "number" ? value : null;
}

function DownloadButton({ c }: { c: Checkpoint }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const ready = c.state === "STATE_COMPLETED";
  return (
    <span class="actions">
      <button
        type="button"
        class="small"
        disabled={!ready || busy}
        title={ready ? "Download its files as a tar, through the master" : `It is ${c.state}: only completed checkpoints have files`}
        onClick={async () => {
          setBusy(true);
          setError("");
          try {
            await downloadTo(`/api/v1/checkpoints/${encodeURIComponent(c.uuid)}/content`, `checkpoint-${c.uuid}.tar`);
          } catch (err) {
            setError(err instanceof Error ? err.message : String(err));
          } finally {
            setBusy(false);
          }
        }}
      >
        {busy ? "Downloading…" : "Download"}
      </button>
      {error && (
        <span role="alert" class="inline-error">
          {error}
        </span>
      )}
    </span>
  );
}

export function TrialView({ params }: RouteProps) {
  const id = Number(params.id);
  const now = useNow(1000);
  const trial = usePoll((signal) => getJson<{ trial: Trial }>(`/api/v1/trials/${id}`, signal), 1000, [id]);
  const checkpoints = usePoll(
    (signal) => getJson<{ checkpoints: Checkpoint[] }>(`/api/v1/trials/${id}/checkpoints`, signal),
    2000,
    [id],
  );
  const [logScale, setLogScale] = useState(false);
  const series = useSeries(`/api/v1/trials/${id}`, [], 2000, 1000, Number.isInteger(id));
  const t = trial.data?.trial;

  if (!Number.isInteger(id) || id <= 0) {
    return (
      <section data-testid="view-trial">
        <ErrorBox error={new Error(`"${params.id}" is not a trial id`)} />
      </section>
    );
  }
  if (!t) {
    return (
      <section data-testid="view-trial">
        <h1>Trial {id}</h1>
        <ErrorBox error={trial.error} what={`load trial ${id}`} />
        {!trial.error && <Loading what="the trial" />}
      </section>
    );
  }
  const live = !ENDED.has(t.state);
  const hparams = flattenHparams(t.hparams ?? {});
  const charts: { group: MetricGroup; name: string }[] = [
    ...series.names.training.map((name) => ({ group: "training" as const, name })),
    ...series.names.validation.map((name) => ({ group: "validation" as const, name })),
  ];
  const latest = t.latestValidation ?? t.latestValidationMetric;
  const columns: Column<Checkpoint>[] = [
    { key: "uuid", label: "UUID", render: (c) => <code>{c.uuid}</code>, sortValue: (c) => c.uuid },
    { key: "batches", label: "Batches", numeric: true, render: (c) => formatInt(checkpointBatches(c)), sortValue: (c) => checkpointBatches(c) },
    { key: "state", label: "State", render: (c) => <StateBadge state={c.state} />, sortValue: (c) => c.state },
    { key: "size", label: "Size", numeric: true, render: (c) => formatBytes(checkpointBytes(c)), sortValue: (c) => checkpointBytes(c) },
    {
      key: "metric",
      label: "Searcher metric",
      numeric: true,
      render: (c) => formatMetric(c.training?.searcherMetric),
      sortValue: (c) => c.training?.searcherMetric,
    },
    {
      key: "time",
      label: "Reported",
      render: (c) => <span title={c.reportTime ?? undefined}>{formatRelative(c.reportTime, now)}</span>,
      sortValue: (c) => c.reportTime,
    },
    { key: "download", label: "Files", render: (c) => <DownloadButton c={c} /> },
  ];

  return (
    <section data-testid="view-trial">
      <p class="crumbs">
        <a href="#/experiments">Experiments</a> › <a href={`#/experiments/${t.experimentId}`}>Experiment {t.experimentId}</a> ›
      </p>
      <h1>Trial {t.id}</h1>
      <dl class="facts">
        <div><dt>State</dt><dd><StateBadge state={t.state} title={t.stateReason ?? undefined} /></dd></div>
        <div><dt>Batches</dt><dd>{formatInt(t.totalBatchesProcessed)}</dd></div>
        <div><dt>Best searcher metric</dt><dd>{formatMetric(t.searcherMetricValue)}</dd></div>
        <div>
          <dt>Latest validation</dt>
          <dd>
            {latest
              ? Object.entries(latest.metrics?.avgMetrics ?? {})
                  .filter(([, v]) => typeof v === "number")
                  .slice(0, 3)
                  .map(([k, v]) => `${k} ${formatMetric(v as number)}`)
                  .join(", ") || "—"
              : "—"}
          </dd>
        </div>
        <div><dt>Restarts</dt><dd>{t.restarts}</dd></div>
        <div><dt>Duration</dt><dd>{formatDuration(trialSeconds(t, now))}</dd></div>
      </dl>
      {t.stateReason && <p class="muted">{t.stateReason}</p>}
      <ErrorBox error={trial.error} what="refresh the trial" />

      <h2>Metrics</h2>
      <div class="toolbar">
        <label class="inline">
          <input type="checkbox" checked={logScale} onChange={(ev) => setLogScale((ev.target as HTMLInputElement).checked)} />
          Log scale
        </label>
        <span class="muted">x: batches · drag to zoom, double-click to reset</span>
      </div>
      <ErrorBox error={series.error} what="load the metrics" />
      {!series.loaded && !series.error && <Loading what="the metrics" />}
      {series.loaded && charts.length === 0 && <p class="muted">No metrics reported yet.</p>}
      <MetricCharts store={series.store} charts={charts} logScale={logScale} />

      <h2>Hyperparameters</h2>
      {Object.keys(hparams).length === 0 ? (
        <p class="muted">None.</p>
      ) : (
        <div class="table-scroll narrow">
          <table data-testid="hparams-table">
            <tbody>
              {Object.entries(hparams).map(([k, v]) => (
                <tr key={k}>
                  <th scope="row">{k}</th>
                  <td>{typeof v === "string" ? v : JSON.stringify(v)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}

      <h2>Checkpoints</h2>
      <ErrorBox error={checkpoints.error} what="load the checkpoints" />
      <Table
        testid="checkpoints-table"
        columns={columns}
        rows={checkpoints.data?.checkpoints ?? []}
        rowTestId={(c) => `checkpoint-row-${c.uuid}`}
        rowKey={(c) => c.uuid}
        initialSort={{ key: "batches", desc: true }}
        empty={checkpoints.loading ? "Loading checkpoints…" : "No checkpoints yet."}
      />

      <h2>Logs</h2>
      <LogView path={`/api/v1/trials/${id}/logs`} live={live} testid="trial-logs" />
    </section>
  );
}

