import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { formatTime } from "../format";
import { findMatches, streamLogs, type LogLine } from "../logs";
import { ErrorBox } from "./ErrorBox";

/** The most lines drawn at once (the newest); search looks through every line kept. */
const SHOWN = 5000;
/** The most lines kept in memory. */
const KEPT = 200_000;

function Highlighted({ text, query }: { text: string; query: string }) {
  const matches = findMatches(text, query);
  if (matches.length === 0) return <>{text}</>;
  const parts = [];
  let at = 0;
  for (const [start, end] of matches) {
    if (start > at) parts.push(text.slice(at, start));
    parts.push(<mark key={start}>{text.slice(start, end)}</mark>);
    at = end;
  }
  parts.push(text.slice(at));
  return <>{parts}</>;
}

/**
 * A task's logs streamed live from an NDJSON `follow=true` route: Follow keeps the view at the
 * newest line; search filters the lines shown and highlights the matches; "Jump to end".
 * `live` is whether the task may still write (a stream that ends while live is reopened).
 */
export function LogView({ path, live, testid }: { path: string; live: boolean; testid: string }) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [follow, setFollow] = useState(true);
  const [query, setQuery] = useState("");
  const [error, setError] = useState<unknown>(undefined);
  const [streaming, setStreaming] = useState(false);
  const pre = useRef<HTMLPreElement>(null);
  const buffer = useRef<LogLine[]>([]);
  const liveRef = useRef(live);
  liveRef.current = live;

  useEffect(() => {
    const controller = new AbortController();
    let last = 0;
    let flushTimer: ReturnType<typeof setTimeout> | undefined;
    let retry: ReturnType<typeof setTimeout> | undefined;
    const flush = () => {
      flushTimer = undefined;
      const added = buffer.current;
      buffer.current = [];
      if (added.length) setLines((old) => old.concat(added).slice(-KEPT));
    };
    const run = async () => {
      setStreaming(true);
      try {
        last = await streamLogs(
          `${path}${path.includes("?") ? "&" : "?"}follow=true`,
          last,
          (added) => {
            buffer.current.push(...added);
            flushTimer ??= setTimeout(flush, 100);
          },
          controller.signal,
        );
        setError(undefined);
      } catch (err) {
        if (controller.signal.aborted) return;
        setError(err);
      } finally {
        if (!controller.signal.aborted) setStreaming(false);
      }
      // The master ends a followed stream when the task ends; while it lives (a dropped
      // connection, a restart), open it again and skip what was already shown.
      if (!controller.signal.aborted && liveRef.current) retry = setTimeout(run, 2000);
    };
    void run();
    return () => {
      controller.abort();
      clearTimeout(flushTimer);
      clearTimeout(retry);
    };
  }, [path]);

  // The page around re-renders every second (clocks): filter only when lines or query change.
  const shown = useMemo(
    () => (query ? lines.filter((l) => findMatches(l.message, query).length > 0) : lines),
    [lines, query],
  );
  const visible = useMemo(() => (shown.length > SHOWN ? shown.slice(-SHOWN) : shown), [shown]);

  const rendered = useMemo(
    () =>
      visible.map((line) => (
          <div
            key={line.id}
            class={line.level === "ERROR" || line.level === "CRITICAL" ? "log-line log-error" : "log-line"}
            title={line.timestamp ? `${formatTime(line.timestamp)} · ${line.level}` : line.level}
          >
            <Highlighted text={line.message} query={query} />
          </div>
        )),
    [visible, query],
  );

  const jumpToEnd = () => {
    const el = pre.current;
    if (el) el.scrollTop = el.scrollHeight;
  };
  useLayoutEffect(() => {
    if (follow) jumpToEnd();
  }, [visible.length, follow, lines]);

  return (
    <div class="logview">
      <div class="toolbar">
        <label class="inline">
          <input
            type="checkbox"
            checked={follow}
            onChange={(ev) => setFollow((ev.target as HTMLInputElement).checked)}
          />
          Follow
        </label>
        <input
          type="search"
          aria-label="Search logs"
          placeholder="Search logs"
          value={query}
          onInput={(ev) => setQuery((ev.target as HTMLInputElement).value)}
        />
        <button type="button" onClick={jumpToEnd}>
          Jump to end
        </button>
        <span class="muted" aria-live="polite">
          {query ? `${shown.length} of ${lines.length} lines match` : `${lines.length} lines`}
          {shown.length > SHOWN ? ` (showing the last ${SHOWN})` : ""}
          {streaming ? " · live" : live ? " · reconnecting" : " · ended"}
        </span>
      </div>
      <ErrorBox error={error} what="read the logs" />
      <pre
        class="logs"
        data-testid={testid}
        ref={pre}
        tabIndex={0}
        aria-label="Logs"
        onScroll={(ev) => {
          const el = ev.currentTarget as HTMLPreElement;
          const atEnd = el.scrollHeight - el.scrollTop - el.clientHeight < 8;
          if (follow && !atEnd) setFollow(false);
        }}
      >
        {rendered}
        {lines.length === 0 && <span class="muted">{streaming ? "Waiting for the first line…" : "No logs."}</span>}
        {lines.length > 0 && shown.length === 0 && <span class="muted">No line contains “{query}”.</span>}
      </pre>
    </div>
  );
}
