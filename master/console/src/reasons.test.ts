import { describe, expect, it } from "vitest";
import { formatCountdown, formatDuration, secondsUntil } from "./format";
import {
  eventKind,
  instanceEnded,
  jobType,
  marketText,
  queueReason,
  secondsLeft,
  taskEnded,
  waitedSeconds,
} from "./reasons";

describe("queue waits tick between polls", () => {
  it("adds the time since the API answered", () => {
    const fetchedAt = 1_000_000;
    expect(waitedSeconds(120, fetchedAt, fetchedAt)).toBe(120);
    expect(waitedSeconds(120, fetchedAt, fetchedAt + 2500)).toBe(122.5);
    expect(formatDuration(waitedSeconds(185, fetchedAt, fetchedAt + 2000))).toBe("3m 07s");
  });
  it("never goes backwards or below zero", () => {
    expect(waitedSeconds(10, 5000, 4000)).toBe(10);
    expect(waitedSeconds(-3, 5000, 5000)).toBe(0);
  });
  it("reads long waits in hours and days", () => {
    expect(formatDuration(waitedSeconds(2 * 3600 + 5 * 60, 0, 0))).toBe("2h 05m");
    expect(formatDuration(waitedSeconds(3 * 86_400 + 4 * 3600, 0, 0))).toBe("3d 4h");
  });
});

describe("idle countdowns", () => {
  it("count down to the deadline and stop at zero", () => {
    const now = Date.parse("2026-12-07T17:00:00Z");
    const left = secondsUntil("2026-12-07T17:01:30Z", now);
    expect(left).toBe(90);
    expect(formatCountdown(left)).toBe("1:30");
    expect(formatCountdown(secondsUntil("2026-12-07T17:01:30Z", now + 89_500))).toBe("0:01");
    expect(formatCountdown(secondsUntil("2026-12-07T16:59:50Z", now))).toBe("0:00");
    expect(secondsUntil(null, now)).toBeNull();
  });
  it("follow the master's clock, not the browser's", () => {
    const fetchedAt = 5_000_000; // the browser's clock, far from the master's
    const serverNow = "2026-12-07T17:00:00Z";
    expect(secondsLeft("2026-12-07T17:01:00Z", serverNow, fetchedAt, fetchedAt)).toBe(60);
    expect(secondsLeft("2026-12-07T17:01:00Z", serverNow, fetchedAt, fetchedAt + 15_000)).toBe(45);
    expect(secondsLeft("2026-12-07T17:01:00Z", serverNow, fetchedAt, fetchedAt + 70_000)).toBe(-10);
    expect(secondsLeft(null, serverNow, fetchedAt, fetchedAt)).toBeNull();
  });
});

describe("reason and kind texts", () => {
  it("names job types", () => {
    expect(jobType("TENSORBOARD")).toBe("TensorBoard");
    expect(jobType("EXPERIMENT")).toBe("Experiment");
    expect(jobType("WIDGET")).toBe("Widget");
  });
  it("words the provisioner's event kinds with an icon", () => {
    expect(eventKind("requested").text).toBe("launch");
    expect(eventKind("joined").text).toBe("join");
    expect(eventKind("draining").text).toBe("drain");
    expect(eventKind("terminated").text).toBe("terminate");
    expect(eventKind("terminate_failed").text).toBe("termination failed");
    expect(eventKind("launch_failed:capacity").text).toBe("launch failed: no capacity");
    expect(eventKind("launch_failed:quota").text).toBe("launch failed: over quota");
    expect(eventKind("launch_failed:odd").text).toBe("launch failed: odd");
    expect(eventKind("backoff").text).toBe("backoff");
    expect(eventKind("fallback").text).toMatch(/spot → on-demand/);
    expect(eventKind("brand_new_kind").text).toBe("brand new kind");
    for (const k of ["requested", "joined", "draining", "terminated", "launch_failed:config"]) {
      expect(eventKind(k).icon).not.toBe("");
    }
  });
  it("says the market and its fallback state", () => {
    expect(marketText("spot", { active: false, reason: null })).toBe("spot");
    expect(marketText("spot", { active: true, reason: "no spot capacity" })).toBe(
      "spot → on-demand fallback (no spot capacity)",
    );
    expect(marketText(undefined, null)).toBe("on-demand");
  });
  it("capitalises the queue reason and never leaves it blank", () => {
    expect(queueReason("launching 2 × g5.xlarge spot, 1 joined")).toBe(
      "Launching 2 × g5.xlarge spot, 1 joined",
    );
    expect(queueReason("  ")).toMatch(/scheduler/);
    expect(queueReason(null)).toMatch(/scheduler/);
  });
  it("knows which states have ended", () => {
    expect(taskEnded("STATE_TERMINATED")).toBe(true);
    expect(taskEnded("STATE_RUNNING")).toBe(false);
    expect(taskEnded("QUEUED")).toBe(false);
    expect(instanceEnded("terminated")).toBe(true);
    expect(instanceEnded("idle")).toBe(false);
  });
});
