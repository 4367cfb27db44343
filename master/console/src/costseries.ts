// The Cost view's data: the API's buckets as stacked chart layers (the biggest groups, the
// rest as "other", idle last) and the range a view's totals are for.

import type { CostLayer } from "./components/CostChart";

export interface CostGroup {
  key: string;
  usd: number;
  slotHours: number;
  idle: boolean;
}

export interface CostReport {
  since: string;
  until: string;
  groupBy: string;
  totalUsd: number;
  idleUsd: number;
  instanceHours?: number;
  efficiency?: number | null;
  paidSlotHours?: number;
  allocatedSlotHours?: number;
  groups: CostGroup[];
}

export interface CostBucket {
  start: string;
  end: string;
  totalUsd: number;
  idleUsd: number;
  groups: CostGroup[];
}

export interface CostSeries {
  since: string;
  until: string;
  bucket: "hour" | "day";
  groupBy: string;
  totalUsd: number;
  idleUsd: number;
  buckets: CostBucket[];
}

/** A bucket's length in seconds. */
export const BUCKET_SECONDS: Record<CostSeries["bucket"], number> = { hour: 3600, day: 86_400 };

/** The chart's x range in epoch seconds: the requested since..until, padded by half a bucket
 * on each side. Bars sit at their (clipped) buckets' middles and are at most a bucket wide, so
 * each is drawn whole, and the axis shows the range asked for however many buckets came back
 * (uPlot's own range for a single x value spans years). Null if the reply's since/until are
 * not timestamps (the chart then ranges over its data). */
export function chartXRange(
  series: Pick<CostSeries, "since" | "until" | "bucket">,
): [number, number] | null {
  const since = Date.parse(series.since) / 1000;
  const until = Date.parse(series.until) / 1000;
  if (!Number.isFinite(since) || !Number.isFinite(until) || until < since) return null;
  const half = BUCKET_SECONDS[series.bucket] / 2;
  return [since - half, until + half];
}

/** Groups beyond this many are summed into one "other" layer. */
export const MAX_LAYERS = 8;

/** Stacked layers for a series: groups by their total over the range, biggest first (at the
 * bottom), at most MAX_LAYERS of them, then "other", then idle. */
export function costLayers(series: CostSeries, max = MAX_LAYERS): CostLayer[] {
  const totals = new Map<string, number>();
  let anyIdle = false;
  for (const bucket of series.buckets) {
    for (const g of bucket.groups) {
      if (g.idle) anyIdle = true;
      else totals.set(g.key, (totals.get(g.key) ?? 0) + g.usd);
    }
  }
  const ranked = [...totals.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const kept = ranked.slice(0, ranked.length > max ? max - 1 : max).map(([k]) => k);
  const keptSet = new Set(kept);
  const values = (pick: (g: CostGroup) => boolean) =>
    series.buckets.map((b) => b.groups.filter(pick).reduce((sum, g) => sum + g.usd, 0));
  const layers: CostLayer[] = kept.map((key) => ({
    key,
    label: key,
    values: values((g) => !g.idle && g.key === key),
  }));
  if (ranked.length > kept.length) {
    layers.push({
      key: "\u0000other",
      label: `${ranked.length - kept.length} others`,
      values: values((g) => !g.idle && !keptSet.has(g.key)),
    });
  }
  if (anyIdle) {
    layers.push({ key: "\u0000idle", label: "idle", idle: true, values: values((g) => g.idle) });
  }
  return layers;
}

/** The table's rows: the groups as the API orders them, the idle row last. */
export function tableRows(report: CostReport): CostGroup[] {
  return [...report.groups.filter((g) => !g.idle), ...report.groups.filter((g) => g.idle)];
}

/** A group's share of the total, 0..1 (null when nothing was spent). */
export function share(usd: number, total: number): number | null {
  return total > 0 ? usd / total : null;
}
