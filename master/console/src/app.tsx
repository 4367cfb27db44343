import { useCallback, useEffect, useMemo, useState } from "preact/hooks";
import { ApiError, getJson, onUnauthorized, postJson, setCsrfToken } from "./api";
import { AuthContext, type Auth } from "./auth";
import { ErrorBox } from "./components/ErrorBox";
import { findRoute, hashPath, navigate, useHash } from "./router";
import { routes, type Route } from "./routes";
import type { User } from "./types";

const NEXT_KEY = "flotilla.next";

function Forbidden() {
  return (
    <section data-testid="forbidden" class="forbidden">
      <h1>Admins only</h1>
      <p>This view shows the whole cluster; ask an admin, or see your own work under Experiments,
        Tasks, Queue and Cost.</p>
    </section>
  );
}

function NotFound({ path }: { path: string }) {
  return (
    <section>
      <h1>No such page</h1>
      <p>
        Nothing lives at <code>#{path}</code>. <a href="#/experiments">Go to Experiments</a>.
      </p>
    </section>
  );
}

function Nav({ user, current }: { user: User; current: Route | undefined }) {
  const [open, setOpen] = useState(false);
  const links = routes.filter((r) => r.nav && (!r.admin || user.admin));
  return (
    <nav aria-label="Main" class={open ? "nav open" : "nav"}>
      <button
        type="button"
        class="nav-toggle"
        aria-expanded={open}
        aria-controls="nav-links"
        onClick={() => setOpen(!open)}
      >
        ☰ Menu
      </button>
      <ul id="nav-links">
        {links.map((r) => {
          const here = current === r || (r.name === "experiments" && current?.name === "experiment");
          return (
            <li key={r.pattern}>
              <a
                href={`#${r.pattern}`}
                aria-current={here ? "page" : undefined}
                onClick={() => setOpen(false)}
              >
                {r.nav}
              </a>
            </li>
          );
        })}
      </ul>
    </nav>
  );
}

export function App() {
  const hash = useHash();
  const path = hashPath(hash);
  const [user, setUser] = useState<User | null | undefined>(undefined);
  const [meError, setMeError] = useState<unknown>(undefined);

  useEffect(() => {
    onUnauthorized(() => setUser(null));
    getJson<{ user: User }>("/api/v1/me")
      .then((reply) => setUser(reply.user))
      .catch((err: unknown) => {
        setUser(null);
        if (!(err instanceof ApiError && (err.status === 401 || err.status === 403))) {
          setMeError(err);
        }
      });
  }, []);

  const signedIn = useCallback((u: User, csrf: string | undefined) => {
    setCsrfToken(csrf ?? null);
    setUser(u);
    setMeError(undefined);
    let next = "/experiments";
    try {
      next = sessionStorage.getItem(NEXT_KEY) || next;
      sessionStorage.removeItem(NEXT_KEY);
    } catch {
      // storage disabled
    }
    navigate(next === "/login" ? "/experiments" : next, true);
  }, []);

  const signOut = useCallback(async () => {
    try {
      await postJson("/api/v1/auth/logout");
    } catch {
      // Signed out already (401) or the master is away: forget the session here anyway.
    }
    setCsrfToken(null);
    try {
      sessionStorage.clear();
    } catch {
      // storage disabled
    }
    setUser(null);
    navigate("/login", true);
  }, []);

  const auth: Auth = useMemo(() => ({ user, signedIn, signOut }), [user, signedIn, signOut]);
  const match = findRoute(routes, path);

  // Where to go: "/" picks by sign-in state; signed-out visitors go to the login page and
  // come back afterwards.
  useEffect(() => {
    if (user === undefined) return;
    if (path === "/") {
      navigate(user ? "/experiments" : "/login", true);
    } else if (!user && !match?.route.public) {
      try {
        sessionStorage.setItem(NEXT_KEY, path);
      } catch {
        // storage disabled
      }
      navigate("/login", true);
    } else if (user && match?.route.name === "login") {
      navigate("/experiments", true);
    }
  }, [user, path, match?.route]);

  let body;
  if (user === undefined) {
    body = <p class="muted">Connecting to the master…</p>;
  } else if (!match) {
    body = path === "/" ? null : <NotFound path={path} />;
  } else if (!user && !match.route.public) {
    body = null;
  } else if (match.route.admin && !user?.admin) {
    body = <Forbidden />;
  } else {
    const View = match.route.component;
    body = <View key={path} params={match.params} />;
  }

  return (
    <AuthContext.Provider value={auth}>
      <header class="topbar">
        <a class="brand" href="#/experiments">
          <svg class="logo" viewBox="0 0 20 20" aria-hidden="true" width="18" height="18">
            <path d="M10 1 L10 14 L3 14 Z" fill="currentColor" />
            <path d="M11 4 L11 14 L17 14 Z" fill="currentColor" opacity="0.6" />
            <path d="M2 16 H18 L15 19 H5 Z" fill="currentColor" />
          </svg>{" "}
          Flotilla
        </a>
        {user && <Nav user={user} current={match?.route} />}
        {user && (
          <div class="whoami">
            <span data-testid="whoami" title={user.admin ? "admin" : "user"}>
              {user.username}
            </span>
            {user.admin && <span class="tag">admin</span>}
            <button type="button" onClick={() => void signOut()}>
              Sign out
            </button>
          </div>
        )}
      </header>
      <main id="main">
        <ErrorBox error={meError} what="reach the master" />
        {body}
      </main>
    </AuthContext.Provider>
  );
}
