import { useEffect, useRef, useState } from "preact/hooks";
import { getJson, qs } from "./api";
import { nextDelay } from "./poll";
import type { MetricGroup, SeriesLine, SeriesReply } from "./types";

// Learning curves kept in the browser and grown incrementally: the first request brings every
// point (downsampled by the master), later ones pass the reply's cursor as `after` and get only
// what was reported since, which is appended here.

export type Point = [number, number];

/** One line of a chart: a label for the legend and its [x, y] points. */
export interface ChartLine {
  label: string;
  points: Point[];
}

/** Whether two sets of lines hold the same points (by identity, or by value when small). */
export function samePoints(a: readonly ChartLine[], b: readonly ChartLine[]): boolean {
  if (a.length !== b.length) return false;
  let compared = 0;
  for (let i = 0; i < a.length; i++) {
    const pa = a[i].points;
    const pb = b[i].points;
    if (pa === pb) continue;
    if (pa.length !== pb.length) return false;
    compared += pa.length;
    if (compared > 5000) return false;
    for (let j = 0; j < pa.length; j++) {
      if (pa[j][0] !== pb[j][0] || pa[j][1] !== pb[j][1]) return false;
    }
  }
  return true;
}


export function seriesKey(trialId: number, group: string, name: string): string {
  return `${trialId}\u0000${group}\u0000${name}`;
}

export interface StoredSeries {
  trialId: number;
  group: MetricGroup;
  name: string;
  points: Point[];
}

export type SeriesStore = Map<string, StoredSeries>;

/**
 * `old` followed by `added`, sorted by batches. Points come sorted within each list; when the
 * new ones start before the old end (a restarted run re-reporting earlier batches) the merged
 * list is re-sorted, stably, so a later report of the same batch stays after the earlier one.
 */
export function mergePoints(old: readonly Point[], added: readonly Point[]): Point[] {
  if (added.length === 0) return old as Point[];
  if (old.length === 0) return added.slice();
  const merged = old.concat(added);
  if (added[0][0] >= old[old.length - 1][0]) return merged;
  return merged
    .map((p, i) => [p, i] as const)
    .sort((a, b) => a[0][0] - b[0][0] || a[1] - b[1])
    .map(([p]) => p);
}

/**
 * Applies a reply to a store: a full reply (no `after`) replaces it, an incremental one appends
 * each series' new points. Returns a new Map (the old one is not changed) so renders see it.
 */
export function applyReply(
  store: SeriesStore,
  series: readonly SeriesLine[],
  incremental: boolean,
): SeriesStore {
  const next: SeriesStore = incremental ? new Map(store) : new Map();
  for (const line of series) {
    const key = seriesKey(line.trialId, line.group, line.name);
    const have = next.get(key);
    const points = incremental && have ? mergePoints(have.points, line.points) : line.points;
    next.set(key, { trialId: line.trialId, group: line.group, name: line.name, points });
  }
  return next;
}

/** The series of one (group, name), one per trial, ordered by trial id. */
export function linesOf(store: SeriesStore, group: MetricGroup, name: string): StoredSeries[] {
  const out: StoredSeries[] = [];
  for (const s of store.values()) if (s.group === group && s.name === name) out.push(s);
  return out.sort((a, b) => a.trialId - b.trialId);
}

export function totalPoints(store: SeriesStore): number {
  let n = 0;
  for (const s of store.values()) n += s.points.length;
  return n;
}

/**
 * For a chosen metric name, the (group, name) pairs to chart: Determined reports a training
 * metric "loss" and its validation twin "validation_loss", so picking either shows both.
 */
export function chartPairs(
  picked: string,
  names: { training: string[]; validation: string[] },
): { group: MetricGroup; name: string }[] {
  const base = picked.startsWith("validation_") ? picked.slice("validation_".length) : picked;
  const out: { group: MetricGroup; name: string }[] = [];
  const training = [picked, base].find((n) => names.training.includes(n));
  if (training) out.push({ group: "training", name: training });
  const validation = [picked, `validation_${base}`].find((n) => names.validation.includes(n));
  if (validation) out.push({ group: "validation", name: validation });
  return out;
}

/** The names to request for a picked metric (it, its training twin and validation twin). */
export function pairCandidates(picked: string): string[] {
  if (!picked) return [];
  const base = picked.startsWith("validation_") ? picked.slice("validation_".length) : picked;
  return [...new Set([picked, base, `validation_${base}`])];
}

/** Every metric name once, validation names first (the searcher metric is usually one). */
export function allNames(names: { training: string[]; validation: string[] }): string[] {
  return [...new Set([...names.validation, ...names.training])];
}

export interface SeriesState {
  store: SeriesStore;
  names: { training: string[]; validation: string[] };
  error: Error | undefined;
  loaded: boolean;
}

const EMPTY_NAMES = { training: [] as string[], validation: [] as string[] };

/**
 * Polls `<base>/metrics/series` every `intervalMs` while the tab is visible: in full first (and
 * whenever `names` or `maxPoints` change, or a series outgrows `4 × maxPoints` from appending),
 * then incrementally with the cursor. `names` empty means every metric.
 */
export function useSeries(
  base: string,
  names: readonly string[],
  maxPoints: number,
  intervalMs = 1000,
  enabled = true,
): SeriesState {
  const [state, setState] = useState<SeriesState>({
    store: new Map(),
    names: EMPTY_NAMES,
    error: undefined,
    loaded: false,
  });
  const storeRef = useRef<SeriesStore>(new Map());
  const nameKey = names.join("\u0000");

  useEffect(() => {
    if (!enabled) return;
    let stopped = false;
    let cursor: number | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let controller: AbortController | undefined;
    storeRef.current = new Map();

    const tick = async () => {
      clearTimeout(timer);
      if (stopped || controller) return;
      controller = new AbortController();
      const incremental = cursor !== undefined;
      const began = performance.now();
      let tookMs = 0;
      try {
        const reply = await getJson<SeriesReply>(
          `${base}/metrics/series${qs({ name: [...names], maxPoints, after: cursor })}`,
          controller.signal,
        );
        if (stopped) return;
        let store = applyReply(storeRef.current, reply.series, incremental);
        cursor = reply.cursor;
        for (const s of store.values()) {
          if (s.points.length > 4 * maxPoints) {
            // Appending has outgrown the chart's resolution: fetch it whole, downsampled.
            cursor = undefined;
            break;
          }
        }
        storeRef.current = store;
        setState({ store, names: reply.names, error: undefined, loaded: true });
      } catch (err) {
        if (stopped || controller?.signal.aborted) return;
        setState((s) => ({ ...s, error: err instanceof Error ? err : new Error(String(err)) }));
      } finally {
        controller = undefined;
        tookMs = performance.now() - began;
        if (!stopped && !document.hidden) timer = setTimeout(tick, nextDelay(intervalMs, tookMs));
      }
    };
    const onVisibility = () => {
      if (document.hidden) clearTimeout(timer);
      else void tick();
    };
    document.addEventListener("visibilitychange", onVisibility);
    setState((s) => ({ ...s, store: new Map(), loaded: false }));
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
      controller?.abort();
      document.removeEventListener("visibilitychange", onVisibility);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [base, nameKey, maxPoints, intervalMs, enabled]);

  return state;
}
