// Words for the ops views: job types, scale event kinds, markets, queue reasons and waits.

export interface Label {
  icon: string;
  text: string;
  /** A CSS modifier for the badge: ok | busy | warn | bad | off. */
  tone: "ok" | "busy" | "warn" | "bad" | "off";
}

const JOB_TYPES: Record<string, string> = {
  EXPERIMENT: "Experiment",
  COMMAND: "Command",
  SHELL: "Shell",
  NOTEBOOK: "Notebook",
  TENSORBOARD: "TensorBoard",
};

/** "NOTEBOOK" → "Notebook"; unknown types keep their name in lower case. */
export function jobType(type: string): string {
  return JOB_TYPES[type] ?? type.charAt(0) + type.slice(1).toLowerCase();
}

const FAILURES: Record<string, string> = {
  capacity: "no capacity",
  quota: "over quota",
  throttle: "throttled",
  config: "configuration error",
  transient: "transient error",
};

/** A scale event's kind (as master/provisioning.py records it) as an icon and words. */
export function eventKind(kind: string): Label {
  const [base, detail] = kind.split(":", 2);
  switch (base) {
    case "requested":
    case "launch":
    case "launched":
      return { icon: "↑", text: "launch", tone: "busy" };
    case "joined":
    case "join":
      return { icon: "⇥", text: "join", tone: "ok" };
    case "adopted":
      return { icon: "⇥", text: "adopted", tone: "ok" };
    case "draining":
    case "drain":
      return { icon: "◑", text: "drain", tone: "warn" };
    case "terminated":
    case "terminate":
      return { icon: "✕", text: "terminate", tone: "off" };
    case "terminate_failed":
      return { icon: "⚠", text: "termination failed", tone: "bad" };
    case "launch_failed": {
      const why = detail ? FAILURES[detail] ?? detail : "";
      return { icon: "⚠", text: why ? `launch failed: ${why}` : "launch failed", tone: "bad" };
    }
    case "capacity_failure":
    case "capacity failure":
      return { icon: "⚠", text: "capacity failure", tone: "bad" };
    case "backoff":
      return { icon: "‖", text: "backoff", tone: "warn" };
    case "fallback":
      return { icon: "↘", text: "spot → on-demand fallback", tone: "warn" };
    default:
      return { icon: "•", text: kind.replace(/_/g, " "), tone: "off" };
  }
}

/** The market a pool buys in, with its fallback state, in words. */
export function marketText(
  market: string | null | undefined,
  fallback: { active: boolean; reason: string | null } | null | undefined,
): string {
  const base = market ?? "on-demand";
  if (fallback?.active) {
    return `${base} → on-demand fallback${fallback.reason ? ` (${fallback.reason})` : ""}`;
  }
  return base;
}

/** A queue reason as shown: the API's words, or a sentence when it gave none. */
export function queueReason(reason: string | null | undefined): string {
  const r = (reason ?? "").trim();
  return r ? r.charAt(0).toUpperCase() + r.slice(1) : "Waiting for the scheduler's next pass";
}

/** How long a job has waited, now: the API's waitingSeconds plus the time since it answered,
 * so the figure ticks between polls. */
export function waitedSeconds(waitingSeconds: number, fetchedAt: number, now: number): number {
  return Math.max(0, waitingSeconds + Math.max(0, now - fetchedAt) / 1000);
}

/** Instance states that no longer cost money (shown dimmed, after the live ones). */
export function instanceEnded(state: string): boolean {
  return state === "terminated";
}

/** Task states after which there is nothing to kill or open. */
export function taskEnded(state: string): boolean {
  const s = state.replace(/^STATE_/, "").toUpperCase();
  return ["TERMINATED", "COMPLETED", "ERROR", "CANCELED", "KILLED"].includes(s);
}

/** Seconds until `deadline` by the master's clock: the reply's `now` plus the time since it
 * came, so a browser whose clock is off still counts down what the master will do. */
export function secondsLeft(
  deadline: string | null | undefined,
  serverNow: string,
  fetchedAt: number,
  now: number,
): number | null {
  const end = deadline ? Date.parse(deadline) : NaN;
  const base = Date.parse(serverNow);
  if (Number.isNaN(end) || Number.isNaN(base)) return null;
  return (end - base - Math.max(0, now - fetchedAt)) / 1000;
}
