// The fetch wrapper every view uses. The session is the master's HttpOnly `auth` cookie; a
// request it authenticates must also carry the CSRF token from the login reply, kept in
// sessionStorage (never localStorage) under CSRF_KEY.

export const CSRF_KEY = "flotilla.csrf";
export const CSRF_HEADER = "X-Flotilla-Csrf";

/** An answer that was not 2xx, with the master's message (Determined's error shape). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly path: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

type Unauthorized = () => void;
let unauthorizedHandler: Unauthorized = () => {};

/** The app registers what a 401 (or a 403 about the CSRF header) does: forget the user. */
export function onUnauthorized(handler: Unauthorized): void {
  unauthorizedHandler = handler;
}

export function csrfToken(): string {
  try {
    return sessionStorage.getItem(CSRF_KEY) ?? "";
  } catch {
    return "";
  }
}

export function setCsrfToken(token: string | null): void {
  try {
    if (token) sessionStorage.setItem(CSRF_KEY, token);
    else sessionStorage.removeItem(CSRF_KEY);
  } catch {
    // Storage disabled: requests go without the header and the master answers 403.
  }
}

/** `?a=1&b=x&b=y` from an object; undefined, null and "" values are left out. */
export function qs(params: Record<string, unknown>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    const values = Array.isArray(value) ? value : [value];
    for (const v of values) {
      if (v === undefined || v === null || v === "") continue;
      search.append(key, String(v));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

async function errorMessage(response: Response): Promise<string> {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text) as { message?: unknown; error?: { error?: unknown } };
    if (typeof body.message === "string" && body.message) return body.message;
    if (typeof body.error?.error === "string") return body.error.error;
  } catch {
    // not JSON
  }
  return text.trim().slice(0, 300) || `${response.status} ${response.statusText}`;
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  signal?: AbortSignal;
  headers?: Record<string, string>;
}

/** A fetch to the master with the cookie and the CSRF header; throws ApiError unless 2xx. */
export async function request(path: string, options: RequestOptions = {}): Promise<Response> {
  const headers: Record<string, string> = { [CSRF_HEADER]: csrfToken(), ...options.headers };
  let body: BodyInit | undefined;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  const response = await fetch(path, {
    method: options.method ?? (body === undefined ? "GET" : "POST"),
    credentials: "same-origin",
    headers,
    body,
    signal: options.signal,
  });
  if (response.ok) return response;
  const message = await errorMessage(response);
  const csrfRefused = response.status === 403 && /csrf/i.test(message);
  if ((response.status === 401 || csrfRefused) && !path.endsWith("/auth/login")) {
    setCsrfToken(null);
    unauthorizedHandler();
  }
  throw new ApiError(response.status, message, path);
}

export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  const response = await request(path, { signal });
  return (await response.json()) as T;
}

export async function postJson<T>(path: string, body: unknown = {}, method = "POST"): Promise<T> {
  const response = await request(path, { method, body });
  const text = await response.text();
  return (text ? JSON.parse(text) : {}) as T;
}

/** Saves a response body as a file (checkpoint downloads, CSV exports). */
export async function downloadTo(path: string, filename: string): Promise<void> {
  const response = await request(path);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/**
 * Opens a notebook/TensorBoard in a new tab with a one-use proxy ticket (never the session
 * cookie, which the proxy does not accept). Call it from a click: browsers allow the pop-up
 * while the click's activation lasts (seconds), which covers the ticket request.
 */
export async function openTask(taskId: string): Promise<void> {
  const reply = await postJson<{ url: string }>(
    `/api/v1/tasks/${encodeURIComponent(taskId)}/proxy-ticket`,
  );
  window.open(reply.url, "_blank", "noopener");
}
