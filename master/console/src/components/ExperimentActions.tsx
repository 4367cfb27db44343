import { useState } from "preact/hooks";
import { postJson, request } from "../api";
import { mayChange, useAuth } from "../auth";
import type { Experiment } from "../types";

const TERMINAL = new Set(["STATE_COMPLETED", "STATE_CANCELED", "STATE_ERROR", "STATE_DELETED"]);

export function isTerminal(state: string): boolean {
  return TERMINAL.has(state);
}

function useAct(onDone: () => void) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const act = async (what: string, fn: () => Promise<unknown>) => {
    setBusy(true);
    setError("");
    try {
      await fn();
      onDone();
    } catch (err) {
      setError(`${what}: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, act };
}

/** Pause / Activate / Kill / Archive for one experiment; disabled, with why, for non-owners. */
export function ExperimentActions({ e, onDone }: { e: Experiment; onDone: () => void }) {
  const { user } = useAuth();
  const { busy, error, act } = useAct(onDone);
  const [confirmKill, setConfirmKill] = useState(false);
  const allowed = mayChange(user, e.username);
  const why = allowed ? undefined : `Only its owner (${e.username}) or an admin can change experiment ${e.id}`;
  const terminal = isTerminal(e.state);
  const call = (verb: string) => act(verb, () => postJson(`/api/v1/experiments/${e.id}/${verb}`));
  return (
    <div class="actions">
      {e.state === "STATE_PAUSED" ? (
        <button type="button" class="small" disabled={!allowed || busy} title={why} onClick={() => call("activate")}>
          Activate
        </button>
      ) : (
        <button
          type="button"
          class="small"
          disabled={!allowed || busy || e.state !== "STATE_ACTIVE"}
          title={why ?? (e.state !== "STATE_ACTIVE" ? "Only an active experiment can be paused" : undefined)}
          onClick={() => call("pause")}
        >
          Pause
        </button>
      )}
      {confirmKill ? (
        <>
          <button
            type="button"
            class="small danger"
            disabled={busy}
            onClick={() => {
              setConfirmKill(false);
              void call("kill");
            }}
          >
            Confirm kill
          </button>
          <button type="button" class="small" onClick={() => setConfirmKill(false)}>
            Keep
          </button>
        </>
      ) : (
        <button
          type="button"
          class="small danger"
          disabled={!allowed || busy || terminal}
          title={why ?? (terminal ? "It has ended already" : "Stops every trial now (asks to confirm)")}
          onClick={() => setConfirmKill(true)}
        >
          Kill
        </button>
      )}
      <button
        type="button"
        class="small"
        disabled={!allowed || busy || (!terminal && !e.archived)}
        title={why ?? (!terminal && !e.archived ? "Only an ended experiment can be archived" : undefined)}
        onClick={() => call(e.archived ? "unarchive" : "archive")}
      >
        {e.archived ? "Unarchive" : "Archive"}
      </button>
      {error && (
        <span role="alert" class="inline-error">
          {error}
        </span>
      )}
    </div>
  );
}

/** The labels as chips, each removable, and a small form to add one (owner or admin). */
export function LabelEditor({ e, onDone }: { e: Experiment; onDone: () => void }) {
  const { user } = useAuth();
  const { busy, error, act } = useAct(onDone);
  const [adding, setAdding] = useState(false);
  const [text, setText] = useState("");
  const allowed = mayChange(user, e.username);
  const why = allowed ? undefined : `Only its owner (${e.username}) or an admin can label experiment ${e.id}`;
  const path = (label: string) => `/api/v1/experiments/${e.id}/labels/${encodeURIComponent(label)}`;
  return (
    <div class="labels">
      {e.labels.map((label) => (
        <span class="label-chip" key={label}>
          {label}
          {allowed && (
            <button
              type="button"
              aria-label={`Remove label ${label}`}
              title={`Remove label ${label}`}
              disabled={busy}
              onClick={() => act("remove label", () => request(path(label), { method: "DELETE" }))}
            >
              ×
            </button>
          )}
        </span>
      ))}
      {adding ? (
        <form
          class="label-form"
          onSubmit={(ev) => {
            ev.preventDefault();
            const label = text.trim();
            if (!label) return;
            void act("add label", () => request(path(label), { method: "PUT" })).then(() => {
              setText("");
              setAdding(false);
            });
          }}
        >
          <input
            aria-label={`New label for experiment ${e.id}`}
            value={text}
            maxLength={255}
            autoFocus
            size={10}
            onInput={(ev) => setText((ev.target as HTMLInputElement).value)}
            onKeyDown={(ev) => ev.key === "Escape" && setAdding(false)}
          />
          <button type="submit" class="small" disabled={busy || !text.trim()}>
            Add
          </button>
        </form>
      ) : (
        <button
          type="button"
          class="small"
          disabled={!allowed}
          title={why ?? "Add a label"}
          aria-label={`Add a label to experiment ${e.id}`}
          onClick={() => setAdding(true)}
        >
          + label
        </button>
      )}
      {error && (
        <span role="alert" class="inline-error">
          {error}
        </span>
      )}
    </div>
  );
}
