// Formatting shared by every view. Pure functions (unit-tested in format.test.ts).

const DASH = "—";

/** Seconds as "45s", "3m 07s", "2h 05m", "3d 4h"; null/NaN as a dash. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return DASH;
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad2(s % 60)}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${pad2(m % 60)}m`;
  const d = Math.floor(h / 24);
  return `${d}d ${h % 24}h`;
}

/** A countdown as "4:59", "1:02:03"; past deadlines read "0:00". */
export function formatCountdown(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return DASH;
  const s = Math.max(0, Math.ceil(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  return h > 0 ? `${h}:${pad2(m)}:${pad2(rest)}` : `${m}:${pad2(rest)}`;
}

/**
 * Dollars, one rule everywhere: a dollar or more to the cent with thousands separators
 * ("$1,234.56"); under a dollar to four decimals ("$0.0109", "$0.5000") and, below a tenth of
 * a cent, two significant digits ("$0.00012") so small costs never read as free and figures
 * side by side (a total and its idle part) have the same precision; zero is "$0.00".
 */
export function formatUsd(usd: number | null | undefined): string {
  if (usd === null || usd === undefined || !Number.isFinite(usd)) return DASH;
  const sign = usd < 0 ? "-" : "";
  const abs = Math.abs(usd);
  if (abs > 0 && abs < 1) {
    const digits = Math.min(8, Math.max(4, 1 - Math.floor(Math.log10(abs))));
    const text = abs.toFixed(digits);
    // $0.99996 rounds to a dollar: shown as one, to the cent.
    if (Number(text) < 1) return `${sign}$${text}`;
  }
  const [whole, cents] = abs.toFixed(2).split(".");
  return `${sign}$${whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",")}.${cents}`;
}

/** "$0.42/h" for prices. */
export function formatUsdPerHour(usd: number | null | undefined): string {
  return usd === null || usd === undefined ? DASH : `${formatUsd(usd)}/h`;
}

/** Milliseconds since the epoch from an RFC 3339 string (NaN when missing or unreadable). */
export function parseTime(ts: string | null | undefined): number {
  return ts ? Date.parse(ts) : NaN;
}

/** A timestamp in the reader's local time, "2026-12-07 17:39:19". */
export function formatTime(ts: string | number | null | undefined): string {
  const ms = typeof ts === "number" ? ts : parseTime(ts);
  if (!Number.isFinite(ms)) return DASH;
  const d = new Date(ms);
  return (
    `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`
  );
}

/** "just now", "12s ago", "5 min ago", "3 h ago", "2 d ago", or "in 4 min" for the future. */
export function formatRelative(ts: string | number | null | undefined, now = Date.now()): string {
  const ms = typeof ts === "number" ? ts : parseTime(ts);
  if (!Number.isFinite(ms)) return DASH;
  const delta = (now - ms) / 1000;
  const abs = Math.abs(delta);
  if (abs < 5) return "just now";
  let text: string;
  if (abs < 60) text = `${Math.floor(abs)}s`;
  else if (abs < 3600) text = `${Math.floor(abs / 60)} min`;
  else if (abs < 86400) text = `${Math.floor(abs / 3600)} h`;
  else text = `${Math.floor(abs / 86400)} d`;
  return delta >= 0 ? `${text} ago` : `in ${text}`;
}

/** Seconds from `now` until `ts` (negative once past); null when there is no deadline. */
export function secondsUntil(ts: string | null | undefined, now = Date.now()): number | null {
  const ms = parseTime(ts);
  return Number.isFinite(ms) ? (ms - now) / 1000 : null;
}

/** A metric value with 4 significant digits; tiny/huge ones in exponent form. */
export function formatMetric(value: number | null | undefined): string {
  if (value === null || value === undefined) return DASH;
  if (!Number.isFinite(value)) return String(value);
  if (value === 0) return "0";
  const abs = Math.abs(value);
  if (abs >= 1e6 || abs < 1e-4) return value.toExponential(3);
  return String(Number(value.toPrecision(4)));
}

/** 0.4567 → "46%"; values are fractions 0..1. */
export function formatPercent(fraction: number | null | undefined, digits = 0): string {
  if (fraction === null || fraction === undefined || !Number.isFinite(fraction)) return DASH;
  return `${(fraction * 100).toFixed(digits)}%`;
}

/** Bytes as "512 B", "1.5 KiB", "2.0 GiB". */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return DASH;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** 12345 → "12,345". */
export function formatInt(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return DASH;
  return Math.round(n).toLocaleString("en-US");
}

/** "1 experiment", "3 experiments" (regular plurals only). */
export function plural(n: number, word: string): string {
  return `${formatInt(n)} ${word}${n === 1 ? "" : "s"}`;
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}
