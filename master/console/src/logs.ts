import { request } from "./api";

// Reading the master's NDJSON log streams (`{"result": {...}}` per line) with fetch and a
// ReadableStream, so lines show as they are written.

export interface LogLine {
  id: number;
  timestamp: string | null;
  level: string;
  message: string;
}

/** Splits streamed text into whole lines; the unfinished tail waits for the next chunk. */
export class LineSplitter {
  private rest = "";

  push(chunk: string): string[] {
    const text = this.rest + chunk;
    const parts = text.split("\n");
    this.rest = parts.pop() ?? "";
    return parts.filter((p) => p.trim() !== "");
  }

  end(): string[] {
    const tail = this.rest.trim();
    this.rest = "";
    return tail ? [tail] : [];
  }
}

/** One NDJSON record as a LogLine, or null when it is not one (a keep-alive, an error object). */
export function parseLogRecord(text: string): LogLine | null {
  let record: unknown;
  try {
    record = JSON.parse(text);
  } catch {
    return null;
  }
  const result = (record as { result?: Record<string, unknown> })?.result;
  if (!result || typeof result !== "object") return null;
  const message = typeof result.message === "string" ? result.message : String(result.log ?? "");
  return {
    id: Number(result.id ?? 0),
    timestamp: typeof result.timestamp === "string" ? result.timestamp : null,
    level: typeof result.level === "string" ? result.level.replace(/^LOG_LEVEL_/, "") : "INFO",
    message: message.replace(/\r?\n$/, ""),
  };
}

/**
 * Streams `path` (an NDJSON log route with follow=true) into `onLines`, skipping lines with ids
 * at or below `afterId` (a reconnect replays from the start). Resolves when the stream ends
 * (the task ended) or `signal` aborts.
 */
export async function streamLogs(
  path: string,
  afterId: number,
  onLines: (lines: LogLine[]) => void,
  signal: AbortSignal,
): Promise<number> {
  let last = afterId;
  const response = await request(path, { signal });
  if (!response.body) throw new Error("this browser cannot read a streamed response");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const splitter = new LineSplitter();
  const take = (texts: string[]) => {
    const lines: LogLine[] = [];
    for (const text of texts) {
      const line = parseLogRecord(text);
      if (line && line.id > last) {
        lines.push(line);
        last = line.id;
      }
    }
    if (lines.length) onLines(lines);
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      take(splitter.push(value));
    }
    take(splitter.end());
  } finally {
    reader.releaseLock();
  }
  return last;
}

/** Where `query` occurs in `text`, case-insensitively: [start, end) pairs. */
export function findMatches(text: string, query: string): [number, number][] {
  if (!query) return [];
  const hay = text.toLowerCase();
  const needle = query.toLowerCase();
  const out: [number, number][] = [];
  let from = 0;
  for (;;) {
    const at = hay.indexOf(needle, from);
    if (at < 0) return out;
    out.push([at, at + needle.length]);
    from = at + needle.length;
  }
}
