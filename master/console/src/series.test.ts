import { describe, expect, it } from "vitest";
import {
  allNames,
  applyReply,
  chartPairs,
  linesOf,
  mergePoints,
  pairCandidates,
  samePoints,
  totalPoints,
  type Point,
  type SeriesStore,
} from "./series";
import type { SeriesLine } from "./types";

function line(trialId: number, name: string, points: Point[], group = "validation"): SeriesLine {
  return {
    trialId,
    group: group as SeriesLine["group"],
    name,
    points,
    total: points.length,
    downsampled: false,
  };
}

describe("mergePoints", () => {
  it("appends points that come after the old ones", () => {
    expect(
      mergePoints(
        [
          [1, 0.9],
          [2, 0.8],
        ],
        [
          [3, 0.7],
          [4, 0.6],
        ],
      ),
    ).toEqual([
      [1, 0.9],
      [2, 0.8],
      [3, 0.7],
      [4, 0.6],
    ]);
  });
  it("keeps equal batches in report order and re-sorts a restarted run's earlier batches", () => {
    expect(
      mergePoints(
        [
          [10, 1],
          [20, 2],
        ],
        [
          [15, 3],
          [20, 4],
        ],
      ),
    ).toEqual([
      [10, 1],
      [15, 3],
      [20, 2],
      [20, 4],
    ]);
  });
  it("handles empty sides", () => {
    const old: Point[] = [[1, 1]];
    expect(mergePoints(old, [])).toBe(old);
    expect(mergePoints([], [[2, 2]])).toEqual([[2, 2]]);
  });
});

describe("applyReply", () => {
  it("replaces the store on a full reply and appends on an incremental one", () => {
    let store: SeriesStore = new Map();
    store = applyReply(store, [line(1, "loss", [[100, 1]]), line(2, "loss", [[100, 2]])], false);
    expect(totalPoints(store)).toBe(2);
    const before = store;
    store = applyReply(store, [line(1, "loss", [[200, 0.5]]), line(3, "loss", [[100, 3]])], true);
    expect(before.size).toBe(2); // the old map is left alone (renders compare identity)
    expect(totalPoints(store)).toBe(4);
    expect(linesOf(store, "validation", "loss").map((s) => [s.trialId, s.points.length])).toEqual([
      [1, 2],
      [2, 1],
      [3, 1],
    ]);
    store = applyReply(store, [line(1, "loss", [[50, 9]])], false);
    expect(totalPoints(store)).toBe(1);
  });
  it("keeps groups apart", () => {
    const store = applyReply(
      new Map(),
      [line(1, "loss", [[1, 1]], "training"), line(1, "loss", [[1, 2]], "validation")],
      false,
    );
    expect(linesOf(store, "training", "loss")[0].points).toEqual([[1, 1]]);
    expect(linesOf(store, "validation", "loss")[0].points).toEqual([[1, 2]]);
  });
});

describe("metric pairs", () => {
  const names = { training: ["loss", "lr"], validation: ["validation_loss", "accuracy"] };
  it("pairs a training metric with its validation twin either way", () => {
    expect(chartPairs("validation_loss", names)).toEqual([
      { group: "training", name: "loss" },
      { group: "validation", name: "validation_loss" },
    ]);
    expect(chartPairs("loss", names)).toEqual(chartPairs("validation_loss", names));
  });
  it("charts a metric of one group alone", () => {
    expect(chartPairs("accuracy", names)).toEqual([{ group: "validation", name: "accuracy" }]);
    expect(chartPairs("lr", names)).toEqual([{ group: "training", name: "lr" }]);
    expect(chartPairs("nothing", names)).toEqual([]);
  });
  it("asks for the twins and lists every name once", () => {
    expect(pairCandidates("validation_loss")).toEqual(["validation_loss", "loss"]);
    expect(pairCandidates("loss")).toEqual(["loss", "validation_loss"]);
    expect(pairCandidates("")).toEqual([]);
    expect(allNames({ training: ["loss"], validation: ["validation_loss", "loss"] })).toEqual([
      "validation_loss",
      "loss",
    ]);
  });
});

describe("samePoints", () => {
  it("knows unchanged lines by identity or by value", () => {
    const pts: Point[] = [[1, 2]];
    expect(samePoints([{ label: "a", points: pts }], [{ label: "a", points: pts }])).toBe(true);
    expect(samePoints([{ label: "a", points: [[1, 2]] }], [{ label: "a", points: [[1, 2]] }])).toBe(true);
    expect(samePoints([{ label: "a", points: [[1, 2]] }], [{ label: "a", points: [[1, 3]] }])).toBe(false);
    expect(samePoints([{ label: "a", points: pts }], [])).toBe(false);
    expect(samePoints([{ label: "a", points: [[1, 2]] }], [{ label: "a", points: [[1, 2], [2, 2]] }])).toBe(false);
  });
});
