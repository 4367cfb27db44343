import { describe, expect, it } from "vitest";
import type uPlot from "uplot";
import { costChartOptions, stack, usdTicks } from "./components/CostChart";
import { type CostSeries, chartXRange, costLayers, share, tableRows } from "./costseries";

const g = (key: string, usd: number, idle = false) => ({ key, usd, slotHours: usd, idle });

function series(buckets: ReturnType<typeof g>[][]): CostSeries {
  return {
    since: "2026-12-07T00:00:00Z",
    until: "2026-12-07T03:00:00Z",
    bucket: "hour",
    groupBy: "user",
    totalUsd: 0,
    idleUsd: 0,
    buckets: buckets.map((groups, i) => ({
      start: `2026-12-07T0${i}:00:00Z`,
      end: `2026-12-07T0${i + 1}:00:00Z`,
      totalUsd: groups.reduce((s, x) => s + x.usd, 0),
      idleUsd: groups.filter((x) => x.idle).reduce((s, x) => s + x.usd, 0),
      groups,
    })),
  };
}

describe("costLayers", () => {
  it("orders groups by their total, idle last, zero where a bucket lacks a group", () => {
    const layers = costLayers(
      series([[g("alice", 1), g("idle", 0.5, true)], [g("bob", 3), g("alice", 1)], []]),
    );
    expect(layers.map((l) => l.label)).toEqual(["bob", "alice", "idle"]);
    expect(layers[0].values).toEqual([0, 3, 0]);
    expect(layers[1].values).toEqual([1, 1, 0]);
    expect(layers[2]).toMatchObject({ idle: true, values: [0.5, 0, 0] });
  });
  it("sums the smallest groups into one layer past the limit, keeping every dollar", () => {
    const groups = ["a", "b", "c", "d", "e"].map((k, i) => g(k, 10 - i));
    const layers = costLayers(series([groups]), 3);
    expect(layers.map((l) => l.label)).toEqual(["a", "b", "3 others"]);
    expect(layers[2].values).toEqual([8 + 7 + 6]);
    const total = layers.reduce((s, l) => s + l.values[0], 0);
    expect(total).toBe(10 + 9 + 8 + 7 + 6);
  });
  it("keeps exactly the limit when there are no more groups", () => {
    const layers = costLayers(series([[g("a", 1), g("b", 2), g("c", 3)]]), 3);
    expect(layers.map((l) => l.label)).toEqual(["c", "b", "a"]);
  });
});

describe("stack", () => {
  it("draws the running total first so every layer shows", () => {
    const sums = stack([
      { key: "a", label: "a", values: [1, 2] },
      { key: "b", label: "b", values: [3, 0] },
    ]);
    expect(sums).toEqual([
      [4, 2],
      [1, 2],
    ]);
  });
});

describe("table rows", () => {
  it("puts idle last and computes shares", () => {
    const rows = tableRows({
      since: "",
      until: "",
      groupBy: "pool",
      totalUsd: 4,
      idleUsd: 1,
      groups: [g("idle", 1, true), g("gpu", 3)],
    });
    expect(rows.map((r) => r.key)).toEqual(["gpu", "idle"]);
    expect(share(1, 4)).toBe(0.25);
    expect(share(1, 0)).toBeNull();
  });
});

describe("usdTicks", () => {
  it("gives each tick a distinct label", () => {
    expect(usdTicks([0, 0.005, 0.01, 0.015])).toEqual(["$0.000", "$0.005", "$0.010", "$0.015"]);
    expect(usdTicks([0, 0.5, 1])).toEqual(["$0.00", "$0.50", "$1.00"]);
    expect(usdTicks([0, 20, 40])).toEqual(["$0.00", "$20.00", "$40.00"]);
  });
});

describe("the chart's x range", () => {
  const t = (iso: string) => Date.parse(iso) / 1000;

  it("covers the requested range padded by half a bucket, however many buckets", () => {
    // One clipped hourly bucket (18:44..18:46): the axis is that range ± 30 min, not years.
    const short = { since: "2026-12-07T18:44:00Z", until: "2026-12-07T18:46:00Z", bucket: "hour" as const };
    expect(chartXRange(short)).toEqual([t("2026-12-07T18:14:00Z"), t("2026-12-07T19:16:00Z")]);
    // A week of daily buckets: ± 12 h.
    const week = { since: "2026-12-01T06:00:00Z", until: "2026-12-08T06:00:00Z", bucket: "day" as const };
    expect(chartXRange(week)).toEqual([t("2026-11-30T18:00:00Z"), t("2026-12-08T18:00:00Z")]);
    // Three hourly buckets from the series helper: 00:00..03:00 ± 30 min.
    expect(chartXRange(series([[], [], []]))).toEqual([
      t("2026-12-06T23:30:00Z"),
      t("2026-12-07T03:30:00Z"),
    ]);
  });

  it("is null when the reply's range is not two ordered timestamps", () => {
    expect(chartXRange({ since: "", until: "", bucket: "hour" })).toBeNull();
    expect(
      chartXRange({ since: "2026-12-07T03:00:00Z", until: "2026-12-07T01:00:00Z", bucket: "hour" }),
    ).toBeNull();
  });

  it("is the x scale's range in the uPlot options, read on each redraw", () => {
    let range: [number, number] | null = [100, 200];
    const layers = [{ key: "a", label: "a", values: [1] }];
    const opts = costChartOptions(layers, ["red"], () => range, 800, 240);
    const x = opts.scales?.x;
    expect(x?.time).toBe(true);
    const fn = x?.range as (u: uPlot, min: number, max: number) => [number, number];
    expect(typeof fn).toBe("function");
    const u = {} as uPlot;
    // A single data point (uPlot's own range would span years around it).
    expect(fn(u, 150, 150)).toEqual([100, 200]);
    range = [300, 500];
    expect(fn(u, 150, 150)).toEqual([300, 500]);
    range = null;
    expect(fn(u, 10, 20)).toEqual([10, 20]);
    expect(opts.series).toHaveLength(2);
  });
});
