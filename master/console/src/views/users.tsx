// Users (admin): list, create, deactivate / activate, reset a password. The master's own
// messages (name rules, password policy, "the last active admin") show in role=alert.

import { useState } from "preact/hooks";
import { getJson, postJson } from "../api";
import { useAuth } from "../auth";
import { ErrorBox, Loading } from "../components/ErrorBox";
import { type Column, Table } from "../components/Table";
import { formatRelative, formatTime } from "../format";
import { usePoll } from "../poll";
import type { RouteProps } from "../routes";
import type { User } from "../types";
import "../ops.css";

function CreateUser({ onCreated }: { onCreated: (name: string) => void }) {
  const [username, setUsername] = useState("");
  const [displayName, setDisplayName] = useState("");
  const [password, setPassword] = useState("");
  const [admin, setAdmin] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const reply = await postJson<{ user: User }>("/api/v1/users", {
        user: { username, displayName: displayName || null, admin, active: true },
        password,
      });
      setUsername("");
      setDisplayName("");
      setPassword("");
      setAdmin(false);
      onCreated(reply.user.username);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="card form" onSubmit={(e) => void submit(e)} aria-labelledby="new-user-title">
      <h2 id="new-user-title">New user</h2>
      <div class="fields">
        <label>
          Username
          <input
            id="new-username"
            required
            autoComplete="off"
            value={username}
            onInput={(e) => setUsername(e.currentTarget.value)}
          />
        </label>
        <label>
          Display name
          <input
            id="new-display-name"
            value={displayName}
            onInput={(e) => setDisplayName(e.currentTarget.value)}
          />
        </label>
        <label>
          Password
          <input
            id="new-password"
            type="password"
            required
            autoComplete="new-password"
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </label>
        <label class="check">
          <input
            type="checkbox"
            checked={admin}
            onChange={(e) => setAdmin(e.currentTarget.checked)}
          />{" "}
          Admin
        </label>
      </div>
      <ErrorBox error={error} what="create the user" />
      <button type="submit" disabled={busy}>
        Create user
      </button>
    </form>
  );
}

function ResetPassword({ user, onDone }: { user: User; onDone: (message: string) => void }) {
  const [password, setPassword] = useState("");
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await postJson(`/api/v1/users/${user.id}/password`, { password });
      onDone(`Password of ${user.username} changed; their other sessions were signed out.`);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="card form" onSubmit={(e) => void submit(e)} aria-labelledby="reset-title">
      <h2 id="reset-title">New password for {user.username}</h2>
      <label>
        Password
        <input
          id="reset-password"
          type="password"
          required
          autoComplete="new-password"
          value={password}
          onInput={(e) => setPassword(e.currentTarget.value)}
        />
      </label>
      <ErrorBox error={error} what="change the password" />
      <div class="actions">
        <button type="submit" disabled={busy}>
          Save password
        </button>
        <button type="button" class="secondary" onClick={() => onDone("")}>
          Cancel
        </button>
      </div>
    </form>
  );
}

export function UsersView(_: RouteProps) {
  const { user: me } = useAuth();
  const poll = usePoll(
    (signal) => getJson<{ users: User[] }>("/api/v1/users", signal).then((r) => r.users),
    1000,
  );
  const [error, setError] = useState<unknown>(undefined);
  const [notice, setNotice] = useState("");
  const [resetting, setResetting] = useState<User | null>(null);

  const setActive = async (u: User, active: boolean) => {
    setError(undefined);
    setNotice("");
    try {
      await postJson(`/api/v1/users/${u.id}`, { active }, "PATCH");
      setNotice(`${u.username} ${active ? "activated" : "deactivated"}.`);
      poll.refresh();
    } catch (err) {
      setError(err);
    }
  };

  const columns: Column<User>[] = [
    { key: "username", label: "Username", render: (u) => u.username, sortValue: (u) => u.username },
    {
      key: "display",
      label: "Display name",
      render: (u) => u.displayName || <span class="muted">—</span>,
      sortValue: (u) => u.displayName,
    },
    {
      key: "role",
      label: "Role",
      render: (u) => (u.admin ? "admin" : "user"),
      sortValue: (u) => (u.admin ? 0 : 1),
    },
    {
      key: "active",
      label: "Status",
      render: (u) =>
        u.active ? (
          <span>
            <span aria-hidden="true">● </span>active
          </span>
        ) : (
          <span class="muted">
            <span aria-hidden="true">○ </span>deactivated
          </span>
        ),
      sortValue: (u) => (u.active ? 0 : 1),
    },
    {
      key: "seen",
      label: "Last sign-in",
      render: (u) =>
        u.lastAuthAt ? (
          <span title={formatTime(u.lastAuthAt)}>{formatRelative(u.lastAuthAt)}</span>
        ) : (
          <span class="muted">never</span>
        ),
    },
    {
      key: "actions",
      label: "Actions",
      render: (u) => (
        <span class="actions">
          <button
            type="button"
            class={u.active ? "danger" : undefined}
            disabled={u.id === me?.id && u.active}
            title={u.id === me?.id ? "You cannot deactivate yourself here" : undefined}
            onClick={() => void setActive(u, !u.active)}
          >
            {u.active ? "Deactivate" : "Activate"}
          </button>
          <button
            type="button"
            class="secondary"
            onClick={() => {
              setNotice("");
              setResetting(u);
            }}
          >
            Reset password
          </button>
        </span>
      ),
    },
  ];

  return (
    <section data-testid="view-users">
      <h1>Users</h1>
      <ErrorBox error={error} />
      {notice && (
        <p class="notice" role="status">
          {notice}
        </p>
      )}
      <ErrorBox error={poll.error} what="load users" />
      {poll.data === undefined && !poll.error ? (
        <Loading what="users" />
      ) : (
        <Table
          testid="users-table"
          columns={columns}
          rows={poll.data ?? []}
          rowTestId={(u) => `user-row-${u.username}`}
          rowClass={(u) => (u.active ? undefined : "ended")}
        />
      )}
      {resetting && (
        <ResetPassword
          key={resetting.id}
          user={resetting}
          onDone={(message) => {
            setResetting(null);
            setNotice(message);
          }}
        />
      )}
      <CreateUser
        onCreated={(name) => {
          setNotice(`User ${name} created.`);
          poll.refresh();
        }}
      />
    </section>
  );
}
