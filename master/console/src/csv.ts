// "Download CSV" on the Cost view saves the API's format=csv (fetched with the CSRF header by
// api.downloadTo, since a plain link would not carry it) under a name that says what it holds.

import type { Range } from "./timerange";

const stamp = (d: Date) =>
  d
    .toISOString()
    .replace(/\.\d{3}Z$/, "Z")
    .replace(/[-:]/g, "");

/** "flotilla-cost-by-pool-20261207T170000Z-20261207T180000Z.csv" (with "-hourly" /
 * "-daily" for a time series). */
export function costCsvName(range: Range, groupBy: string, bucket?: "hour" | "day"): string {
  const safe = groupBy.replace(/[^a-z0-9]+/gi, "-").toLowerCase() || "all";
  const series = bucket ? (bucket === "hour" ? "-hourly" : "-daily") : "";
  return `flotilla-cost-by-${safe}${series}-${stamp(range.since)}-${stamp(range.until)}.csv`;
}
