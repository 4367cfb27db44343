import { describe, expect, it } from "vitest";
import { nextDelay } from "./poll";

describe("nextDelay", () => {
  it("polls at the interval while calls are quick", () => {
    expect(nextDelay(1000, 40)).toBe(1000);
  });
  it("waits as long as a slow call took", () => {
    expect(nextDelay(1000, 20_000)).toBe(20_000);
  });
});
