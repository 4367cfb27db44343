import type { ChartLine } from "./series";

// The hyperparameter view: for each hyperparameter, its value in every trial against the
// trial's best searcher metric. Numbers go on a numeric axis; anything else is a category,
// spread a little around its index so trials with the same value do not hide each other.

/** {"optimizer": {"lr": 0.1}} → {"optimizer.lr": 0.1}. */
export function flattenHparams(hparams: Record<string, unknown>, prefix = ""): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(hparams ?? {})) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (value && typeof value === "object" && !Array.isArray(value)) {
      Object.assign(out, flattenHparams(value as Record<string, unknown>, path));
    } else {
      out[path] = value;
    }
  }
  return out;
}

function isNumber(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v);
}

/** A stable offset in [-0.3, 0.3) from a trial id (golden-ratio sequence). */
export function jitter(trialId: number): number {
  return (((trialId * 0.6180339887) % 1) - 0.5) * 0.6;
}

export interface HparamPlot {
  name: string;
  numeric: boolean;
  /** Category names when not numeric (x = index). */
  categories?: string[];
  line: ChartLine;
  /** Distinct values seen (a constant hyperparameter has 1). */
  distinct: number;
  /** The value of the first trial that has one (the value, when constant). */
  first: unknown;
}

export function hparamPlots(
  trials: readonly { id: number; hparams: Record<string, unknown>; metric: number | null | undefined }[],
): HparamPlot[] {
  const flat = trials.map((t) => ({ id: t.id, metric: t.metric, hp: flattenHparams(t.hparams) }));
  const names = [...new Set(flat.flatMap((t) => Object.keys(t.hp)))].sort();
  return names.map((name) => {
    const values = flat.map((t) => t.hp[name]).filter((v) => v !== undefined);
    const numeric = values.length > 0 && values.every(isNumber);
    const distinct = new Set(values.map((v) => JSON.stringify(v))).size;
    const first = values[0];
    const scored = flat.filter((t) => t.hp[name] !== undefined && isNumber(t.metric));
    if (numeric) {
      const points = scored
        .map((t) => [t.hp[name] as number, t.metric as number] as [number, number])
        .sort((a, b) => a[0] - b[0]);
      return { name, numeric, distinct, first, line: { label: "trials", points } };
    }
    const text = (v: unknown) => (typeof v === "string" ? v : JSON.stringify(v));
    const categories = [...new Set(values.map(text))].sort();
    const points = scored
      .map((t) => [categories.indexOf(text(t.hp[name])) + jitter(t.id), t.metric as number] as [number, number])
      .sort((a, b) => a[0] - b[0]);
    return { name, numeric, distinct, first, categories, line: { label: "trials", points } };
  });
}

/** Whether the experiment's config searches `path` ("a.b") on a log scale (`type: log`). */
export function isLogHparam(config: Record<string, unknown> | undefined, path: string): boolean {
  let node: unknown = config;
  for (const part of path.split(".")) {
    if (!node || typeof node !== "object") return false;
    node = (node as Record<string, unknown>)[part];
  }
  return !!node && typeof node === "object" && (node as { type?: unknown }).type === "log";
}
