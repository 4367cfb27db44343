// Time ranges for the Cost view: presets, the custom since/until inputs (datetime-local, in the
// browser's time zone), their validation, and the bucket size of the time series.

export type Preset = "hour" | "day" | "week";
export type Bucket = "hour" | "day";

export interface Range {
  since: Date;
  until: Date;
}

export const PRESETS: { id: Preset; label: string; ms: number }[] = [
  { id: "hour", label: "Last hour", ms: 3600_000 },
  { id: "day", label: "Last day", ms: 86_400_000 },
  { id: "week", label: "Last 7 days", ms: 7 * 86_400_000 },
];

/** The longest range the view asks for (the API has no limit; a chart of years says little). */
export const MAX_RANGE_DAYS = 366;
/** Ranges up to this long are drawn in hour buckets, longer ones in day buckets. */
export const HOURLY_UP_TO_MS = 3 * 86_400_000;

/** The range a preset button selects, ending now (to the second). */
export function presetRange(preset: Preset, now: Date): Range {
  const found = PRESETS.find((p) => p.id === preset);
  if (!found) throw new Error(`unknown preset ${preset}`);
  const until = new Date(Math.floor(now.getTime() / 1000) * 1000);
  return { since: new Date(until.getTime() - found.ms), until };
}

/** Hour buckets for ranges up to three days (at most 72 bars), day buckets beyond. */
export function chooseBucket(range: Range): Bucket {
  return range.until.getTime() - range.since.getTime() <= HOURLY_UP_TO_MS ? "hour" : "day";
}

const pad = (n: number) => String(n).padStart(2, "0");

/** A date as an `<input type="datetime-local">` value in local time, to the minute. */
export function toLocalInput(date: Date): string {
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}`
  );
}

/** A datetime-local value ("2026-12-07T17:05" or with ":ss") read as local time; null if
 * it is not one. */
export function parseLocalInput(value: string): Date | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?$/.exec(value.trim());
  if (!m) return null;
  const [y, mo, d, h, mi, s] = m.slice(1).map((v) => (v === undefined ? 0 : Number(v)));
  const date = new Date(y, mo - 1, d, h, mi, s);
  // Reject values the Date constructor rolled over (2026-02-30 → March 2).
  if (date.getFullYear() !== y || date.getMonth() !== mo - 1 || date.getDate() !== d) return null;
  if (h > 23 || mi > 59 || s > 59) return null;
  return date;
}

export type Checked =
  | { ok: true; range: Range }
  | { ok: false; field: "since" | "until"; error: string };

/** The custom range typed into #cost-since / #cost-until, or what is wrong with it. */
export function validateRange(since: string, until: string, now: Date): Checked {
  const s = parseLocalInput(since);
  if (!s) return { ok: false, field: "since", error: "Since: enter a date and time" };
  const u = parseLocalInput(until);
  if (!u) return { ok: false, field: "until", error: "Until: enter a date and time" };
  if (s.getTime() >= u.getTime()) {
    return { ok: false, field: "since", error: "Since must be before until" };
  }
  if (s.getTime() > now.getTime()) {
    return { ok: false, field: "since", error: "Since is in the future: nothing has cost anything yet" };
  }
  if (u.getTime() - s.getTime() > MAX_RANGE_DAYS * 86_400_000) {
    return {
      ok: false,
      field: "since",
      error: `The range is longer than ${MAX_RANGE_DAYS} days: choose a shorter one`,
    };
  }
  return { ok: true, range: { since: s, until: u } };
}

/** RFC 3339 UTC to the second, as the API takes it ("2026-12-07T17:05:00Z"). */
export function rfc3339(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** The query string the cost endpoints take for a range and grouping. */
export function costQuery(range: Range, groupBy: string, extra: Record<string, string> = {}) {
  const params = new URLSearchParams({
    since: rfc3339(range.since),
    until: rfc3339(range.until),
    groupBy,
    ...extra,
  });
  return params.toString();
}
