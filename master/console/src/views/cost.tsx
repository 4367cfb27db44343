// Cost: what the fleet cost over a range, grouped by pool, user, experiment, label or instance;
// the idle money (slots paid for that ran nothing), efficiency, a time series, and CSV export.
// Admins see the whole fleet; others their own allocations. The totals are GET /api/v1/cost's
// for the exact range shown (data-since / data-until on #cost-range).

import { useState } from "preact/hooks";
import { downloadTo, getJson } from "../api";
import { useAuth } from "../auth";
import { CostChart } from "../components/CostChart";
import { ErrorBox, Loading } from "../components/ErrorBox";
import { type Column, Table } from "../components/Table";
import { formatPercent, formatTime, formatUsd } from "../format";
import {
  type CostGroup,
  type CostReport,
  type CostSeries,
  chartXRange,
  costLayers,
  share,
  tableRows,
} from "../costseries";
import { costCsvName } from "../csv";
import { usePoll } from "../poll";
import type { RouteProps } from "../routes";
import {
  type Preset,
  PRESETS,
  type Range,
  chooseBucket,
  costQuery,
  presetRange,
  toLocalInput,
  validateRange,
} from "../timerange";
import "../ops.css";

const GROUPS = [
  { id: "pool", label: "Pool" },
  { id: "user", label: "User" },
  { id: "experiment", label: "Experiment" },
  { id: "label", label: "Label" },
  { id: "instance", label: "Instance" },
];

interface Loaded {
  range: Range;
  bucket: "hour" | "day";
  report: CostReport;
  series: CostSeries | undefined;
  seriesError: unknown;
}

function Totals({ report, admin }: { report: CostReport; admin: boolean }) {
  const eff = report.efficiency;
  return (
    <dl class="totals" id="cost-range" data-since={report.since} data-until={report.until}>
      <div class="stat big">
        <dt>Total</dt>
        <dd data-testid="cost-total" data-usd={report.totalUsd}>
          {formatUsd(report.totalUsd)}
        </dd>
      </div>
      <div class="stat big">
        <dt>Idle (paid, ran nothing)</dt>
        <dd data-testid="cost-idle" data-usd={report.idleUsd}>
          {admin ? (
            <>
              {formatUsd(report.idleUsd)}
              {report.totalUsd > 0 && (
                <span class="muted small">
                  {" "}
                  ({formatPercent(report.idleUsd / report.totalUsd, 1)})
                </span>
              )}
            </>
          ) : (
            <span class="muted small">a fleet figure: admins see it</span>
          )}
        </dd>
      </div>
      <div class="stat big">
        <dt title="Allocated slot-hours ÷ paid slot-hours">Efficiency</dt>
        <dd data-testid="cost-efficiency" data-value={eff ?? ""}>
          {eff !== null && eff !== undefined
            ? formatPercent(eff, 1)
            : admin
              ? "— (nothing paid)"
              : <span class="muted small">a fleet figure: admins see it</span>}
          {eff != null && report.paidSlotHours != null && report.allocatedSlotHours != null && (
            <span class="muted small">
              {" "}
              {report.allocatedSlotHours.toFixed(2)} of {report.paidSlotHours.toFixed(2)} slot-h
            </span>
          )}
        </dd>
      </div>
    </dl>
  );
}

export function CostView(_: RouteProps) {
  const { user } = useAuth();
  const [preset, setPreset] = useState<Preset | null>("day");
  const [sinceText, setSinceText] = useState("");
  const [untilText, setUntilText] = useState("");
  const [groupBy, setGroupBy] = useState("pool");
  const [downloadError, setDownloadError] = useState<unknown>(undefined);

  const custom = preset === null ? validateRange(sinceText, untilText, new Date()) : null;
  const poll = usePoll<Loaded | null>(
    async (signal) => {
      let range: Range;
      if (preset) range = presetRange(preset, new Date());
      else if (custom?.ok) range = custom.range;
      else return null;
      const bucket = chooseBucket(range);
      // The totals do not wait on (or fail with) the chart's series.
      const seriesReply = getJson<CostSeries>(
        `/api/v1/cost/series?${costQuery(range, groupBy, { bucket })}`,
        signal,
      ).then(
        (series) => ({ series, seriesError: undefined }),
        (seriesError: unknown) => ({ series: undefined, seriesError }),
      );
      const report = await getJson<CostReport>(`/api/v1/cost?${costQuery(range, groupBy)}`, signal);
      return { range, bucket, report, ...(await seriesReply) };
    },
    1000,
    [preset, sinceText, untilText, groupBy],
  );
  const data = poll.data ?? undefined;
  const shownRange = data?.range ?? (preset ? presetRange(preset, new Date()) : undefined);
  const sinceValue = preset && shownRange ? toLocalInput(shownRange.since) : sinceText;
  const untilValue = preset && shownRange ? toLocalInput(shownRange.until) : untilText;

  const editRange = (field: "since" | "until", value: string) => {
    // The first edit turns the preset into a custom range starting from what was shown.
    const since = field === "since" ? value : sinceValue;
    const until = field === "until" ? value : untilValue;
    setPreset(null);
    setSinceText(since);
    setUntilText(until);
  };

  const download = async (kind: "groups" | "series") => {
    if (!data) return;
    setDownloadError(undefined);
    const bucket = data.bucket;
    const path =
      kind === "groups"
        ? `/api/v1/cost?${costQuery(data.range, groupBy, { format: "csv" })}`
        : `/api/v1/cost/series?${costQuery(data.range, groupBy, { bucket, format: "csv" })}`;
    try {
      await downloadTo(path, costCsvName(data.range, groupBy, kind === "series" ? bucket : undefined));
    } catch (err) {
      setDownloadError(err);
    }
  };
  const csvHref = data ? `/api/v1/cost?${costQuery(data.range, groupBy, { format: "csv" })}` : "#";

  const total = data?.report.totalUsd ?? 0;
  const columns: Column<CostGroup>[] = [
    {
      key: "key",
      label: GROUPS.find((g) => g.id === groupBy)?.label ?? "Group",
      render: (g) =>
        g.idle ? (
          <span class="idle-row-label">
            <span aria-hidden="true">◌ </span>idle — paid for, ran nothing
          </span>
        ) : groupBy === "experiment" && /^\d+$/.test(g.key) ? (
          <a href={`#/experiments/${g.key}`}>experiment {g.key}</a>
        ) : (
          g.key
        ),
    },
    {
      key: "usd",
      label: "Cost",
      numeric: true,
      render: (g) => <span data-usd={g.usd}>{formatUsd(g.usd)}</span>,
      sortValue: (g) => g.usd,
    },
    {
      key: "share",
      label: "Share",
      numeric: true,
      render: (g) => formatPercent(share(g.usd, total), 1),
      sortValue: (g) => g.usd,
    },
    {
      key: "slotHours",
      label: "Slot-hours",
      numeric: true,
      render: (g) => g.slotHours.toFixed(2),
      sortValue: (g) => g.slotHours,
    },
  ];

  const layers = data?.series ? costLayers(data.series) : [];
  const rangeError = custom && !custom.ok ? custom : null;

  return (
    <section data-testid="view-cost">
      <h1>Cost</h1>
      {user && !user.admin && (
        <p class="muted">
          Your own work's cost (the slots your tasks held). Admins see the whole fleet and idle
          money.
        </p>
      )}
      <div class="toolbar cost-controls" role="group" aria-label="Range and grouping">
        <span class="presets">
          {PRESETS.map((p) => (
            <button
              key={p.id}
              type="button"
              class={preset === p.id ? "preset active" : "preset secondary"}
              aria-pressed={preset === p.id}
              onClick={() => setPreset(p.id)}
            >
              {p.label}
            </button>
          ))}
        </span>
        <label>
          Since{" "}
          <input
            id="cost-since"
            type="datetime-local"
            value={sinceValue}
            aria-invalid={rangeError?.field === "since"}
            onChange={(e) => editRange("since", e.currentTarget.value)}
          />
        </label>
        <label>
          Until{" "}
          <input
            id="cost-until"
            type="datetime-local"
            value={untilValue}
            aria-invalid={rangeError?.field === "until"}
            onChange={(e) => editRange("until", e.currentTarget.value)}
          />
        </label>
        <label>
          Group by{" "}
          <select id="cost-group" value={groupBy} onChange={(e) => setGroupBy(e.currentTarget.value)}>
            {GROUPS.map((g) => (
              <option key={g.id} value={g.id}>
                {g.label.toLowerCase()}
              </option>
            ))}
          </select>
        </label>
      </div>
      {rangeError && (
        <div class="error-box" role="alert">
          {rangeError.error}
        </div>
      )}
      <ErrorBox error={poll.error} what="load costs" />
      <ErrorBox error={downloadError} what="download the CSV" />
      {!data ? (
        !poll.error && !rangeError && <Loading what="costs" />
      ) : (
        <>
          <p class="muted small">
            {formatTime(data.report.since)} → {formatTime(data.report.until)}, in{" "}
            {data.bucket === "hour" ? "hourly" : "daily"} buckets
            {preset ? " (moves with the clock)" : ""}.
          </p>
          <Totals report={data.report} admin={!!user?.admin} />
          <ErrorBox error={data.seriesError} what="load the cost time series" />
          {data.series && (
            <CostChart
              testid="chart-cost-usd"
              title={`Cost per ${data.bucket} by ${groupBy}`}
              starts={data.series.buckets.map((b) => Date.parse(b.start) / 1000)}
              ends={data.series.buckets.map((b) => Date.parse(b.end) / 1000)}
              layers={layers}
              xRange={chartXRange(data.series)}
            />
          )}
          <Table
            testid="cost-table"
            columns={columns}
            rows={tableRows(data.report)}
            rowTestId={(g) => (g.idle ? "cost-row-idle" : `cost-row-${g.key}`)}
            rowKey={(g) => (g.idle ? "\u0000idle" : g.key)}
            rowClass={(g) => (g.idle ? "idle-row" : undefined)}
            empty="Nothing cost anything in this range."
          />
          <p class="actions">
            <a
              href={csvHref}
              download={costCsvName(data.range, groupBy)}
              onClick={(e) => {
                e.preventDefault();
                void download("groups");
              }}
            >
              Download CSV
            </a>
            <a
              href="#"
              onClick={(e) => {
                e.preventDefault();
                void download("series");
              }}
            >
              Download {data.bucket === "hour" ? "hourly" : "daily"} series CSV
            </a>
          </p>
        </>
      )}
    </section>
  );
}
