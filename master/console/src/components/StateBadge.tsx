// A state as text with an icon and a colour: readable without the colour.

type Tone = "ok" | "run" | "warn" | "bad" | "idle";

const TONES: Record<string, { tone: Tone; icon: string }> = {
  ACTIVE: { tone: "run", icon: "▶" },
  RUNNING: { tone: "run", icon: "▶" },
  BUSY: { tone: "run", icon: "▶" },
  PULLING: { tone: "run", icon: "⇣" },
  STARTING: { tone: "run", icon: "↻" },
  QUEUED: { tone: "idle", icon: "⋯" },
  PENDING: { tone: "idle", icon: "⋯" },
  IDLE: { tone: "idle", icon: "◌" },
  PAUSED: { tone: "warn", icon: "❚❚" },
  DRAINING: { tone: "warn", icon: "⇥" },
  TERMINATING: { tone: "warn", icon: "⊘" },
  STOPPING_COMPLETED: { tone: "warn", icon: "■" },
  STOPPING_CANCELED: { tone: "warn", icon: "■" },
  STOPPING_KILLED: { tone: "warn", icon: "■" },
  STOPPING_ERROR: { tone: "bad", icon: "■" },
  COMPLETED: { tone: "ok", icon: "✓" },
  TERMINATED: { tone: "idle", icon: "✓" },
  CANCELED: { tone: "idle", icon: "✕" },
  KILLED: { tone: "idle", icon: "✕" },
  ERROR: { tone: "bad", icon: "!" },
  DELETING: { tone: "warn", icon: "✕" },
  DELETED: { tone: "idle", icon: "✕" },
};

/** "STATE_STOPPING_COMPLETED" → "stopping completed". */
export function stateText(state: string): string {
  return state
    .replace(/^(STATE_|RUN_STATE_|TASK_STATE_)/, "")
    .toLowerCase()
    .replace(/_/g, " ");
}

export function StateBadge({ state, title }: { state: string; title?: string }) {
  const key = state.replace(/^(STATE_|RUN_STATE_|TASK_STATE_)/, "").toUpperCase();
  const { tone, icon } = TONES[key] ?? { tone: "idle" as Tone, icon: "•" };
  return (
    <span class={`badge badge-${tone}`} title={title}>
      <span aria-hidden="true">{icon} </span>
      {stateText(state)}
    </span>
  );
}
