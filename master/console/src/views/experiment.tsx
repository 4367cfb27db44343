import { useMemo, useState } from "preact/hooks";
import { getJson } from "../api";
import { Chart } from "../components/Chart";
import { ErrorBox, Loading } from "../components/ErrorBox";
import { MetricCharts } from "../components/MetricCharts";
import { ExperimentActions, LabelEditor } from "../components/ExperimentActions";
import { StateBadge } from "../components/StateBadge";
import { Table, type Column } from "../components/Table";
import { formatDuration, formatInt, formatMetric, formatUsd } from "../format";
import { hparamPlots, isLogHparam } from "../hparams";
import { useNow, usePoll } from "../poll";
import type { RouteProps } from "../routes";
import { allNames, chartPairs, pairCandidates, useSeries } from "../series";
import type { Experiment, MetricsWorkload, Trial } from "../types";
import { experimentSeconds, ProgressCell } from "./experiments";

/** Points per series to ask for: about a chart's width in all, fewer per trial when many. */
export function pointsPerSeries(trials: number): number {
  return Math.max(100, Math.min(1000, Math.round(20000 / Math.max(1, trials))));
}

/** A trial's value of `metric` in a validation workload (Determined's shape). */
export function workloadMetric(w: MetricsWorkload | null | undefined, metric: string | undefined) {
  if (!w || !metric) return null;
  const value = w.metrics?.avgMetrics?.[metric];
  return typeof value === "number" ? value : null;
}

export function trialSeconds(t: Trial, now: number): number | null {
  if (typeof t.duration === "number") return t.duration;
  return experimentSeconds(t, now);
}

function configText(reply: ExperimentReply): string {
  const original = reply.experiment.originalConfig;
  if (original && original.trim()) return original;
  return JSON.stringify(reply.config ?? reply.experiment.config ?? {}, null, 2);
}

interface ExperimentReply {
  experiment: Experiment;
  config?: Record<string, unknown>;
}

export function ExperimentView({ params }: RouteProps) {
  const id = Number(params.id);
  const now = useNow(1000);
  const exp = usePoll((signal) => getJson<ExperimentReply>(`/api/v1/experiments/${id}`, signal), 1000, [id]);
  const trials = usePoll(
    (signal) => getJson<{ trials: Trial[] }>(`/api/v1/experiments/${id}/trials?limit=0`, signal),
    1000,
    [id],
  );
  const e = exp.data?.experiment;
  const trialList = trials.data?.trials ?? [];
  const [picked, setPicked] = useState<string>("");
  const [logScale, setLogScale] = useState(false);
  const metric = picked || e?.searcherMetric || "";
  const maxPoints = pointsPerSeries(e?.numTrials ?? trialList.length);
  const series = useSeries(`/api/v1/experiments/${id}`, pairCandidates(metric), maxPoints, 1000, !!metric);
  const names = allNames(series.names);
  const pairs = chartPairs(metric, series.names);

  const hp = useMemo(
    () => hparamPlots(trialList.map((t) => ({ id: t.id, hparams: t.hparams, metric: t.searcherMetricValue }))),
    [trials.data],
  );

  const varying = hp.filter((plot) => plot.distinct > 1);
  const constant = hp.filter((plot) => plot.distinct <= 1);

  if (!Number.isInteger(id) || id <= 0) {
    return (
      <section data-testid="view-experiment">
        <ErrorBox error={new Error(`"${params.id}" is not an experiment id`)} />
      </section>
    );
  }
  if (!e) {
    return (
      <section data-testid="view-experiment">
        <h1>Experiment {id}</h1>
        <ErrorBox error={exp.error} what={`load experiment ${id}`} />
        {!exp.error && <Loading what="the experiment" />}
      </section>
    );
  }

  const searcherMetric = e.searcherMetric;
  const columns: Column<Trial>[] = [
    { key: "id", label: "Trial", numeric: true, render: (t) => <a href={`#/trials/${t.id}`}>{t.id}</a>, sortValue: (t) => t.id },
    { key: "state", label: "State", render: (t) => <StateBadge state={t.state} title={t.stateReason ?? undefined} />, sortValue: (t) => t.state },
    { key: "batches", label: "Batches", numeric: true, render: (t) => formatInt(t.totalBatchesProcessed), sortValue: (t) => t.totalBatchesProcessed },
    {
      key: "best",
      label: `Best ${searcherMetric ?? "metric"}`,
      numeric: true,
      render: (t) => formatMetric(t.searcherMetricValue ?? workloadMetric(t.bestValidation ?? t.bestValidationMetric, searcherMetric)),
      sortValue: (t) => t.searcherMetricValue ?? workloadMetric(t.bestValidation ?? t.bestValidationMetric, searcherMetric),
    },
    {
      key: "latest",
      label: `Latest ${searcherMetric ?? "metric"}`,
      numeric: true,
      render: (t) => formatMetric(workloadMetric(t.latestValidation ?? t.latestValidationMetric, searcherMetric)),
      sortValue: (t) => workloadMetric(t.latestValidation ?? t.latestValidationMetric, searcherMetric),
    },
    { key: "restarts", label: "Restarts", numeric: true, render: (t) => t.restarts, sortValue: (t) => t.restarts },
    { key: "checkpoints", label: "Checkpoints", numeric: true, render: (t) => t.checkpointCount ?? 0, sortValue: (t) => t.checkpointCount },
    {
      key: "duration",
      label: "Duration",
      numeric: true,
      render: (t) => formatDuration(trialSeconds(t, now)),
      sortValue: (t) => trialSeconds(t, now),
    },
    {
      key: "hparams",
      label: "Hyperparameters",
      render: (t) => (
        <span class="muted hp-summary">
          {Object.entries(t.hparams ?? {})
            .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : String(v)}`)
            .join(", ")}
        </span>
      ),
    },
  ];

  return (
    <section data-testid="view-experiment">
      <p class="crumbs">
        <a href="#/experiments">Experiments</a> ›
      </p>
      <h1>
        Experiment {e.id} · {e.name}
      </h1>
      <dl class="facts">
        <div><dt>State</dt><dd><StateBadge state={e.state} title={e.stateReason ?? undefined} /></dd></div>
        <div><dt>Progress</dt><dd><ProgressCell progress={e.progress} state={e.state} /></dd></div>
        <div><dt>Duration</dt><dd>{formatDuration(experimentSeconds(e, now))}</dd></div>
        <div><dt>Cost so far</dt><dd data-testid="experiment-cost" data-usd={e.costUsd ?? ""}>{formatUsd(e.costUsd)}</dd></div>
        <div><dt>User</dt><dd>{e.username}</dd></div>
        <div><dt>Pool</dt><dd>{e.resourcePool || "—"}</dd></div>
        <div><dt>Searcher</dt><dd>{e.searcherType || "—"} on {searcherMetric || "—"}</dd></div>
        <div>
          <dt>Best</dt>
          <dd>
            {e.bestTrialId ? (
              <a href={`#/trials/${e.bestTrialId}`}>
                {formatMetric(e.bestTrialSearcherMetric)} (trial {e.bestTrialId})
              </a>
            ) : (
              "—"
            )}
          </dd>
        </div>
        <div><dt>Trials</dt><dd>{e.numTrials}</dd></div>
      </dl>
      {e.stateReason && <p class="muted">{e.stateReason}</p>}
      <div class="toolbar">
        <ExperimentActions e={e} onDone={exp.refresh} />
        <LabelEditor e={e} onDone={exp.refresh} />
      </div>
      <ErrorBox error={exp.error} what="refresh the experiment" />

      <h2>Learning curves</h2>
      <div class="toolbar">
        <label>
          Metric
          <select
            data-testid="metric-select"
            value={metric}
            onChange={(ev) => setPicked((ev.target as HTMLSelectElement).value)}
          >
            {!names.includes(metric) && metric && <option value={metric}>{metric}</option>}
            {names.map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </label>
        <label class="inline">
          <input
            type="checkbox"
            checked={logScale}
            onChange={(ev) => setLogScale((ev.target as HTMLInputElement).checked)}
          />
          Log scale
        </label>
        <span class="muted">x: batches · one line per trial · drag to zoom, double-click to reset</span>
      </div>
      <ErrorBox error={series.error} what="load the metrics" />
      {!series.loaded && !series.error && <Loading what="the metrics" />}
      {series.loaded && pairs.length === 0 && (
        <p class="muted">No {metric || "metric"} reported yet; the charts appear with the first report.</p>
      )}
      <MetricCharts store={series.store} charts={pairs} logScale={logScale} />

      <h2>Trials</h2>
      <ErrorBox error={trials.error} what="load the trials" />
      <Table
        testid="trials-table"
        columns={columns}
        rows={trialList}
        rowTestId={(t) => `trial-row-${t.id}`}
        rowKey={(t) => t.id}
        initialSort={{ key: "id", desc: false }}
        empty={trials.loading ? "Loading trials…" : "No trials yet: the searcher creates them once the experiment is scheduled."}
      />

      <h2>Hyperparameters</h2>
      {hp.length === 0 && <p class="muted">No hyperparameters.</p>}
      {varying.length > 0 && (
        <>
          <p class="muted">
            Each hyperparameter's value in every trial against the trial's best{" "}
            {searcherMetric || "searcher metric"}.
          </p>
          <div class="charts">
            {varying.map((plot) => (
              <Chart
                key={plot.name}
                testid={`chart-hparam-${plot.name}`}
                title={plot.name}
                kind="scatter"
                unit="trial"
                xLabel={plot.name}
                yLabel={searcherMetric}
                xCategories={plot.categories}
                xLog={plot.numeric && isLogHparam(e.hyperparameters, plot.name)}
                lines={[plot.line]}
                height={200}
              />
            ))}
          </div>
        </>
      )}
      {constant.length > 0 && (
        <p class="constants">
          <span class="muted">
            {trialList.length > 1 ? "The same in every trial: " : "Values: "}
          </span>
          {constant.map((plot, i) => (
            <span key={plot.name}>
              {i > 0 && ", "}
              <code>
                {plot.name} = {typeof plot.first === "string" ? plot.first : JSON.stringify(plot.first)}
              </code>
            </span>
          ))}
        </p>
      )}

      <h2>Configuration</h2>
      <pre class="block" data-testid="experiment-config">{configText(exp.data!)}</pre>
    </section>
  );
}
