import { useState } from "preact/hooks";
import { ApiError, postJson } from "../api";
import { useAuth } from "../auth";
import type { LoginReply } from "../types";

export function LoginView() {
  const { signedIn } = useAuth();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  const submit = async (event: Event) => {
    event.preventDefault();
    if (!username.trim()) {
      setError("Enter a username (a new cluster has “determined” and “admin”).");
      return;
    }
    setBusy(true);
    setError("");
    try {
      const reply = await postJson<LoginReply>("/api/v1/auth/login", {
        username: username.trim(),
        password,
      });
      signedIn(reply.user, reply.csrfToken);
    } catch (err) {
      if (err instanceof ApiError && err.status === 403) {
        setError(
          err.message === "invalid credentials"
            ? "Wrong username or password."
            : err.message,
        );
      } else if (err instanceof ApiError && err.status === 429) {
        setError(`Too many sign-in attempts; wait a little and try again. (${err.message})`);
      } else {
        setError(err instanceof Error ? err.message : String(err));
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <section data-testid="view-login" class="login">
      <h1>Sign in to Flotilla</h1>
      <form onSubmit={submit} class="card">
        <label for="username">Username</label>
        <input
          id="username"
          name="username"
          autocomplete="username"
          autoFocus
          value={username}
          onInput={(e) => setUsername((e.target as HTMLInputElement).value)}
        />
        <label for="password">Password</label>
        <input
          id="password"
          name="password"
          type="password"
          autocomplete="current-password"
          value={password}
          onInput={(e) => setPassword((e.target as HTMLInputElement).value)}
        />
        {error && (
          <p role="alert" class="error-box">
            {error}
          </p>
        )}
        <button type="submit" class="primary" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        <p class="hint">
          On a new cluster, sign in as <code>determined</code> (or <code>admin</code>) with no
          password, then set one with <code>det user change-password</code>.
        </p>
      </form>
    </section>
  );
}
