import { describe, expect, it } from "vitest";
import { type Agent, agentState } from "./views/cluster";
import { type TaskRow, orderTasks } from "./views/tasks";

function task(id: string, state: string, startTime: string, endTime?: string): TaskRow {
  return {
    id,
    type: "COMMAND",
    description: id,
    state,
    username: "u",
    resourcePool: "default",
    startTime,
    endTime: endTime ?? null,
  };
}

describe("orderTasks", () => {
  it("lists live tasks newest first, then ended ones by when they ended", () => {
    const rows = orderTasks([
      task("old-live", "STATE_RUNNING", "2026-12-07T10:00:00Z"),
      task("ended-early", "STATE_TERMINATED", "2026-12-07T09:00:00Z", "2026-12-07T09:30:00Z"),
      task("queued", "STATE_QUEUED", "2026-12-07T11:00:00Z"),
      task("ended-late", "STATE_TERMINATED", "2026-12-07T08:00:00Z", "2026-12-07T11:30:00Z"),
    ]);
    expect(rows.map((r) => r.id)).toEqual(["queued", "old-live", "ended-late", "ended-early"]);
  });
});

function agent(slots: boolean[], flags: Partial<Agent> = {}): Agent {
  const entries = slots.map((busy, i) => [
    `/agents/a/slots/${i}`,
    {
      id: String(i),
      device: { type: "TYPE_CPU", brand: "cpu" },
      enabled: true,
      draining: false,
      container: busy ? { id: `c${i}`, parent: `t${i}`, state: "STATE_RUNNING" } : null,
    },
  ]);
  return {
    id: "a",
    enabled: true,
    draining: false,
    resourcePools: ["default"],
    slots: Object.fromEntries(entries),
    idleSince: null,
    registeredTime: "2026-12-07T10:00:00Z",
    instance: null,
    ...flags,
  };
}

describe("agentState", () => {
  it("says busy, idle, draining or disabled with the slots in use", () => {
    expect(agentState(agent([true, false]))).toEqual({ state: "BUSY", detail: "1 of 2 slots busy" });
    expect(agentState(agent([false, false])).state).toBe("IDLE");
    expect(agentState(agent([true], { draining: true })).state).toBe("DRAINING");
    expect(agentState(agent([false], { enabled: false })).state).toBe("DISABLED");
  });
});
