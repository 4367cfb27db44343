import { linesOf, type SeriesStore } from "../series";
import type { MetricGroup } from "../types";
import { Chart } from "./Chart";

/** One learning-curve chart per (group, metric), one line per trial, x in batches. */
export function MetricCharts({
  store,
  charts,
  logScale,
}: {
  store: SeriesStore;
  charts: readonly { group: MetricGroup; name: string }[];
  logScale: boolean;
}) {
  return (
    <div class="charts">
      {charts.map(({ group, name }) => (
        <Chart
          key={`${group}-${name}`}
          testid={`chart-${group}-${name}`}
          title={`${name} (${group})`}
          xLabel="batches"
          yLabel={name}
          logScale={logScale}
          lines={linesOf(store, group, name).map((s) => ({ label: `trial ${s.trialId}`, points: s.points }))}
        />
      ))}
    </div>
  );
}
