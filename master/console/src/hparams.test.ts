import { describe, expect, it } from "vitest";
import { flattenHparams, hparamPlots, isLogHparam, jitter } from "./hparams";

describe("hparamPlots", () => {
  const trials = [
    { id: 1, hparams: { lr: 0.1, opt: { name: "adam" }, layers: 2 }, metric: 0.5 },
    { id: 2, hparams: { lr: 0.01, opt: { name: "sgd" }, layers: 2 }, metric: 0.3 },
    { id: 3, hparams: { lr: 0.001, opt: { name: "adam" }, layers: 2 }, metric: null },
  ];
  it("flattens nested hyperparameters", () => {
    expect(flattenHparams({ a: 1, b: { c: "x", d: { e: true } } })).toEqual({
      a: 1,
      "b.c": "x",
      "b.d.e": true,
    });
  });
  it("puts numbers on a numeric axis, sorted, leaving out unscored trials", () => {
    const lr = hparamPlots(trials).find((p) => p.name === "lr")!;
    expect(lr.numeric).toBe(true);
    expect(lr.distinct).toBe(3);
    expect(lr.line.points).toEqual([
      [0.01, 0.3],
      [0.1, 0.5],
    ]);
  });
  it("spreads categories around their index", () => {
    const opt = hparamPlots(trials).find((p) => p.name === "opt.name")!;
    expect(opt.numeric).toBe(false);
    expect(opt.categories).toEqual(["adam", "sgd"]);
    const xs = opt.line.points.map((p) => p[0]);
    expect(xs).toHaveLength(2);
    expect(Math.round(xs[0])).toBe(0); // adam, trial 1
    expect(Math.round(xs[1])).toBe(1); // sgd, trial 2
    expect(Math.abs(jitter(1))).toBeLessThan(0.31);
  });
  it("reports constant hyperparameters", () => {
    expect(hparamPlots(trials).find((p) => p.name === "layers")!.distinct).toBe(1);
  });
});

describe("isLogHparam", () => {
  it("finds log-scale hyperparameters, nested too", () => {
    const config = {
      lr: { type: "log", minval: -4, maxval: -1, base: 10 },
      opt: { momentum: { type: "double", minval: 0, maxval: 1 }, decay: { type: "log" } },
      layers: 3,
    };
    expect(isLogHparam(config, "lr")).toBe(true);
    expect(isLogHparam(config, "opt.decay")).toBe(true);
    expect(isLogHparam(config, "opt.momentum")).toBe(false);
    expect(isLogHparam(config, "layers")).toBe(false);
    expect(isLogHparam(config, "missing.path")).toBe(false);
    expect(isLogHparam(undefined, "lr")).toBe(false);
  });
});
