import { useCallback, useEffect, useRef, useState } from "preact/hooks";

export interface Poll<T> {
  data: T | undefined;
  error: Error | undefined;
  loading: boolean;
  /** Fetch now (after an action), without waiting for the next tick. */
  refresh: () => void;
}

/**
 * The wait before the next poll: `intervalMs`, or as long as the last call took when that was
 * longer, so a slow master is never kept busy by one open page more than half the time.
 */
export function nextDelay(intervalMs: number, lastCallMs: number): number {
  return Math.max(intervalMs, lastCallMs);
}

/**
 * Calls `fn` now and then every `intervalMs` after the previous call settles (never two at
 * once; see nextDelay), while the tab is visible; a hidden tab stops polling and a visible one
 * fetches at once.
 * `deps` restart it (a new id, a new filter). The last good data stays while an error shows.
 */
export function usePoll<T>(
  fn: (signal: AbortSignal) => Promise<T>,
  intervalMs = 1000,
  deps: readonly unknown[] = [],
): Poll<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<Error | undefined>(undefined);
  const [loading, setLoading] = useState(true);
  const fnRef = useRef(fn);
  fnRef.current = fn;
  const kick = useRef<() => void>(() => {});

  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let inFlight: AbortController | undefined;
    setData(undefined);
    setError(undefined);
    setLoading(true);

    let lastCallMs = 0;
    const schedule = () => {
      if (stopped || document.hidden) return;
      clearTimeout(timer);
      timer = setTimeout(tick, nextDelay(intervalMs, lastCallMs));
    };
    const tick = async () => {
      clearTimeout(timer);
      if (stopped || inFlight) return;
      const controller = new AbortController();
      inFlight = controller;
      const began = performance.now();
      try {
        const value = await fnRef.current(controller.signal);
        if (stopped) return;
        setData(value);
        setError(undefined);
      } catch (err) {
        if (stopped || controller.signal.aborted) return;
        setError(err instanceof Error ? err : new Error(String(err)));
      } finally {
        if (inFlight === controller) inFlight = undefined;
        lastCallMs = performance.now() - began;
        if (!stopped) {
          setLoading(false);
          schedule();
        }
      }
    };
    const onVisibility = () => {
      if (document.hidden) clearTimeout(timer);
      else void tick();
    };
    kick.current = () => void tick();
    document.addEventListener("visibilitychange", onVisibility);
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
      inFlight?.abort();
      document.removeEventListener("visibilitychange", onVisibility);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [intervalMs, ...deps]);

  const refresh = useCallback(() => kick.current(), []);
  return { data, error, loading, refresh };
}

/** Re-renders every `ms` (countdowns, relative times) while mounted. */
export function useNow(ms = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const id = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(id);
  }, [ms]);
  return now;
}
