import { describe, expect, it } from "vitest";
import { findMatches, LineSplitter, parseLogRecord } from "./logs";

describe("LineSplitter", () => {
  it("keeps an unfinished line for the next chunk", () => {
    const s = new LineSplitter();
    expect(s.push('{"a":1}\n{"b"')).toEqual(['{"a":1}']);
    expect(s.push(':2}\n\n{"c":3}')).toEqual(['{"b":2}']);
    expect(s.end()).toEqual(['{"c":3}']);
    expect(s.end()).toEqual([]);
  });
});

describe("parseLogRecord", () => {
  it("reads the master's log records", () => {
    const line = parseLogRecord(
      JSON.stringify({
        result: { id: "42", timestamp: "2026-12-07T12:00:00Z", level: "LOG_LEVEL_ERROR", message: "boom\n" },
      }),
    );
    expect(line).toEqual({ id: 42, timestamp: "2026-12-07T12:00:00Z", level: "ERROR", message: "boom" });
  });
  it("ignores what is not a record", () => {
    expect(parseLogRecord("not json")).toBeNull();
    expect(parseLogRecord('{"error": {"message": "x"}}')).toBeNull();
  });
});

describe("findMatches", () => {
  it("finds every case-insensitive occurrence", () => {
    expect(findMatches("Loss 0.5, loss 0.4", "loss")).toEqual([
      [0, 4],
      [10, 14],
    ]);
    expect(findMatches("abc", "")).toEqual([]);
    expect(findMatches("aaa", "aa")).toEqual([[0, 2]]);
  });
});
