import { describe, expect, it } from "vitest";
import { costCsvName } from "./csv";

describe("costCsvName", () => {
  const range = {
    since: new Date(Date.UTC(2026, 11, 7, 17, 0, 0)),
    until: new Date(Date.UTC(2026, 11, 7, 18, 0, 0, 500)),
  };
  it("says the grouping and the range in UTC", () => {
    expect(costCsvName(range, "pool")).toBe(
      "flotilla-cost-by-pool-20261207T170000Z-20261207T180000Z.csv",
    );
  });
  it("marks time series by bucket", () => {
    expect(costCsvName(range, "user", "hour")).toMatch(/^flotilla-cost-by-user-hourly-/);
    expect(costCsvName(range, "label", "day")).toMatch(/^flotilla-cost-by-label-daily-/);
  });
  it("keeps file names safe", () => {
    expect(costCsvName(range, "a/b c")).toMatch(/^flotilla-cost-by-a-b-c-/);
  });
});
