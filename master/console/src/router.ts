import { useEffect, useState } from "preact/hooks";

// Hash routing: "#/experiments/7" is the path "/experiments/7" (no server fallback needed).

export type Params = Record<string, string>;

/** The path part of a location hash: "#/trials/3?x=1" → "/trials/3"; empty → "/". */
export function hashPath(hash: string): string {
  const path = hash.replace(/^#/, "").split("?")[0];
  return path.startsWith("/") ? path : `/${path}`;
}

/** The query part of a location hash as URLSearchParams ("#/x?user=a" → user=a). */
export function hashQuery(hash: string): URLSearchParams {
  const i = hash.indexOf("?");
  return new URLSearchParams(i >= 0 ? hash.slice(i + 1) : "");
}

/**
 * Matches "/experiments/:id" against "/experiments/12" → {id: "12"}; null when it does not
 * match. Segments are compared whole; a trailing slash is ignored; params are URI-decoded.
 */
export function matchPattern(pattern: string, path: string): Params | null {
  const want = pattern.split("/").filter(Boolean);
  const have = path.split("/").filter(Boolean);
  if (want.length !== have.length) return null;
  const params: Params = {};
  for (let i = 0; i < want.length; i++) {
    if (want[i].startsWith(":")) {
      let value: string;
      try {
        value = decodeURIComponent(have[i]);
      } catch {
        return null;
      }
      params[want[i].slice(1)] = value;
    } else if (want[i] !== have[i]) {
      return null;
    }
  }
  return params;
}

/** The first route whose pattern matches, with its params. */
export function findRoute<R extends { pattern: string }>(
  routes: readonly R[],
  path: string,
): { route: R; params: Params } | null {
  for (const route of routes) {
    const params = matchPattern(route.pattern, path);
    if (params) return { route, params };
  }
  return null;
}

export function navigate(path: string, replace = false): void {
  const hash = `#${path}`;
  if (replace) history.replaceState(null, "", hash);
  else location.hash = hash;
  if (replace) window.dispatchEvent(new HashChangeEvent("hashchange"));
}

/** The current location hash, re-rendering on every change. */
export function useHash(): string {
  const [hash, setHash] = useState(() => location.hash);
  useEffect(() => {
    const update = () => setHash(location.hash);
    window.addEventListener("hashchange", update);
    return () => window.removeEventListener("hashchange", update);
  }, []);
  return hash;
}
