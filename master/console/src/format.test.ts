import { describe, expect, it } from "vitest";
import {
  formatBytes,
  formatCountdown,
  formatDuration,
  formatMetric,
  formatPercent,
  formatRelative,
  formatUsd,
  secondsUntil,
} from "./format";

describe("formatDuration", () => {
  it("reads seconds, minutes, hours and days", () => {
    expect(formatDuration(0)).toBe("0s");
    expect(formatDuration(45.9)).toBe("45s");
    expect(formatDuration(187)).toBe("3m 07s");
    expect(formatDuration(2 * 3600 + 5 * 60 + 9)).toBe("2h 05m");
    expect(formatDuration(3 * 86400 + 4 * 3600 + 59)).toBe("3d 4h");
  });
  it("dashes what is missing and clamps negatives", () => {
    expect(formatDuration(null)).toBe("—");
    expect(formatDuration(undefined)).toBe("—");
    expect(formatDuration(Number.NaN)).toBe("—");
    expect(formatDuration(-3)).toBe("0s");
  });
});

describe("formatUsd", () => {
  it("shows a dollar or more to the cent with thousands separators", () => {
    expect(formatUsd(0)).toBe("$0.00");
    expect(formatUsd(1)).toBe("$1.00");
    expect(formatUsd(1.5)).toBe("$1.50");
    expect(formatUsd(1234567.891)).toBe("$1,234,567.89");
    expect(formatUsd(-2.345)).toBe("-$2.35");
    expect(formatUsd(0.99996)).toBe("$1.00");
  });
  it("shows every amount under a dollar to four decimals, whatever its size", () => {
    // The Cost page's total and idle side by side: "$0.0109" and "$0.0060", not "$0.01".
    expect(formatUsd(0.0109)).toBe("$0.0109");
    expect(formatUsd(0.006)).toBe("$0.0060");
    expect(formatUsd(0.01)).toBe("$0.0100");
    expect(formatUsd(0.5)).toBe("$0.5000");
    expect(formatUsd(0.98765)).toBe("$0.9877");
    expect(formatUsd(0.0042)).toBe("$0.0042");
    expect(formatUsd(0.00999)).toBe("$0.0100");
    expect(formatUsd(-0.005)).toBe("-$0.0050");
  });
  it("keeps two significant digits below a tenth of a cent", () => {
    expect(formatUsd(0.000123)).toBe("$0.00012");
    expect(formatUsd(0.0000045)).toBe("$0.0000045");
  });
  it("dashes what is missing", () => {
    expect(formatUsd(null)).toBe("—");
    expect(formatUsd(Number.POSITIVE_INFINITY)).toBe("—");
  });
});

describe("formatRelative", () => {
  const now = Date.parse("2026-12-07T12:00:00Z");
  it("reads the past", () => {
    expect(formatRelative("2026-12-07T11:59:58Z", now)).toBe("just now");
    expect(formatRelative("2026-12-07T11:59:48Z", now)).toBe("12s ago");
    expect(formatRelative("2026-12-07T11:55:00Z", now)).toBe("5 min ago");
    expect(formatRelative("2026-12-07T09:00:00Z", now)).toBe("3 h ago");
    expect(formatRelative("2026-12-05T11:00:00Z", now)).toBe("2 d ago");
  });
  it("reads the future", () => {
    expect(formatRelative("2026-12-07T12:04:30Z", now)).toBe("in 4 min");
  });
  it("dashes what is missing or unreadable", () => {
    expect(formatRelative(null, now)).toBe("—");
    expect(formatRelative("not a time", now)).toBe("—");
  });
});

describe("countdowns", () => {
  it("formats minutes and hours, never negative", () => {
    expect(formatCountdown(299)).toBe("4:59");
    expect(formatCountdown(59.2)).toBe("1:00");
    expect(formatCountdown(3723)).toBe("1:02:03");
    expect(formatCountdown(0)).toBe("0:00");
    expect(formatCountdown(-10)).toBe("0:00");
    expect(formatCountdown(null)).toBe("—");
  });
  it("counts seconds until a deadline", () => {
    const now = Date.parse("2026-12-07T12:00:00Z");
    expect(secondsUntil("2026-12-07T12:05:00.500Z", now)).toBe(300.5);
    expect(secondsUntil("2026-12-07T11:59:00Z", now)).toBe(-60);
    expect(secondsUntil(null, now)).toBeNull();
  });
});

describe("other formats", () => {
  it("formats metrics to four significant digits", () => {
    expect(formatMetric(0.123456)).toBe("0.1235");
    expect(formatMetric(1234.5678)).toBe("1235");
    expect(formatMetric(0)).toBe("0");
    expect(formatMetric(0.00001234)).toBe("1.234e-5");
    expect(formatMetric(null)).toBe("—");
  });
  it("formats percents and bytes", () => {
    expect(formatPercent(0.456)).toBe("46%");
    expect(formatPercent(null)).toBe("—");
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(3 * 1024 ** 3)).toBe("3.0 GiB");
  });
});
