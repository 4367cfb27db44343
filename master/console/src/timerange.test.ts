import { describe, expect, it } from "vitest";
import {
  chooseBucket,
  costQuery,
  parseLocalInput,
  presetRange,
  rfc3339,
  toLocalInput,
  validateRange,
} from "./timerange";

const now = new Date(2026, 11, 7, 17, 30, 15, 400); // local time

describe("presetRange", () => {
  it("ends now (to the second) and spans the preset", () => {
    const hour = presetRange("hour", now);
    expect(hour.until.getTime()).toBe(new Date(2026, 11, 7, 17, 30, 15).getTime());
    expect(hour.until.getTime() - hour.since.getTime()).toBe(3600_000);
    const day = presetRange("day", now);
    expect(day.until.getTime() - day.since.getTime()).toBe(86_400_000);
    const week = presetRange("week", now);
    expect(week.until.getTime() - week.since.getTime()).toBe(7 * 86_400_000);
  });
});

describe("chooseBucket", () => {
  const span = (h: number) => ({ since: new Date(0), until: new Date(h * 3600_000) });
  it("uses hours up to three days and days beyond", () => {
    expect(chooseBucket(span(1))).toBe("hour");
    expect(chooseBucket(span(24))).toBe("hour");
    expect(chooseBucket(span(72))).toBe("hour");
    expect(chooseBucket(span(73))).toBe("day");
    expect(chooseBucket(span(24 * 7))).toBe("day");
  });
});

describe("datetime-local values", () => {
  it("round-trips to the minute in local time", () => {
    const text = toLocalInput(now);
    expect(text).toBe("2026-12-07T17:30");
    expect(parseLocalInput(text)?.getTime()).toBe(new Date(2026, 11, 7, 17, 30).getTime());
  });
  it("accepts seconds and rejects what is not a date", () => {
    expect(parseLocalInput("2026-12-07T17:30:59")?.getSeconds()).toBe(59);
    expect(parseLocalInput("")).toBeNull();
    expect(parseLocalInput("yesterday")).toBeNull();
    expect(parseLocalInput("2026-02-30T10:00")).toBeNull();
    expect(parseLocalInput("2026-12-07T24:10")).toBeNull();
    expect(parseLocalInput("2026-12-07T10:60")).toBeNull();
  });
});

describe("validateRange", () => {
  it("accepts a range in the past", () => {
    const r = validateRange("2026-12-07T10:00", "2026-12-07T12:00", now);
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.range.until.getTime() - r.range.since.getTime()).toBe(7200_000);
  });
  it("names the field that is missing or wrong", () => {
    expect(validateRange("", "2026-12-07T12:00", now)).toMatchObject({ ok: false, field: "since" });
    expect(validateRange("2026-12-07T10:00", "", now)).toMatchObject({ ok: false, field: "until" });
  });
  it("refuses since at or after until", () => {
    const r = validateRange("2026-12-07T12:00", "2026-12-07T12:00", now);
    expect(r).toMatchObject({ ok: false, field: "since" });
    if (!r.ok) expect(r.error).toMatch(/before until/);
    expect(validateRange("2026-12-07T13:00", "2026-12-07T12:00", now).ok).toBe(false);
  });
  it("refuses a range that starts in the future", () => {
    const r = validateRange("2026-12-08T10:00", "2026-12-08T12:00", now);
    expect(r).toMatchObject({ ok: false, field: "since" });
    if (!r.ok) expect(r.error).toMatch(/future/);
  });
  it("refuses a range longer than a year", () => {
    const r = validateRange("2024-01-01T00:00", "2026-12-07T12:00", now);
    expect(r).toMatchObject({ ok: false });
    if (!r.ok) expect(r.error).toMatch(/366 days/);
  });
});

describe("the API's query", () => {
  it("sends RFC 3339 UTC without milliseconds", () => {
    const d = new Date(Date.UTC(2026, 11, 7, 17, 0, 0, 123));
    expect(rfc3339(d)).toBe("2026-12-07T17:00:00Z");
    const q = new URLSearchParams(
      costQuery({ since: d, until: new Date(d.getTime() + 3600_000) }, "user", { bucket: "hour" }),
    );
    expect(q.get("since")).toBe("2026-12-07T17:00:00Z");
    expect(q.get("until")).toBe("2026-12-07T18:00:00Z");
    expect(q.get("groupBy")).toBe("user");
    expect(q.get("bucket")).toBe("hour");
  });
});
