import { ApiError } from "../api";

/** An error in words, in role=alert, with the HTTP status when the master answered. */
export function ErrorBox({ error, what }: { error: unknown; what?: string }) {
  if (!error) return null;
  const message = error instanceof Error ? error.message : String(error);
  const status = error instanceof ApiError ? ` (HTTP ${error.status})` : "";
  return (
    <div class="error-box" role="alert">
      {what ? `Could not ${what}: ` : ""}
      {message}
      {status}
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p class="muted" aria-live="polite">
      Loading {what}…
    </p>
  );
}
