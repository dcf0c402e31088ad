// The API, called with the session's token in the Authorization header (never in a URL).

export const BASE = "/v1/api/ledger";
const KEY = "ledger.token";

/** An answer of the API that is not a success: its status, code, field and message. */
export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `the service answered ${status}`);
    this.status = status;
    this.code = e.code || null;
    this.field = e.field || null;
    this.body = body;
  }
}

/** The token of this tab's session, or null. */
export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

/** The claims of a JWT (not verified here: the service verifies every request). */
export function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="));
    return JSON.parse(json);
  } catch {
    return null;
  }
}

/** Called with a 401: the session is over. */
let onExpired = () => {};
export function whenExpired(f) {
  onExpired = f;
}

/** Calls `method path` with an optional JSON body; the parsed answer, or an ApiError. */
export async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(BASE + path, init);
  } catch {
    throw new ApiError(0, { error: { message: "the service cannot be reached" } });
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  if (response.status === 401) {
    onExpired();
    throw new ApiError(401, parsed);
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);
export const del = (path) => call("DELETE", path);
export const patch = (path, body) => call("PATCH", path, body);

/** `path` with the query parameters of `params` that are set. */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/** Downloads `path` (with the token) and saves it under the name the service gives. */
export async function download(path) {
  const response = await fetch(BASE + path, { headers: { Authorization: `Bearer ${token()}` } });
  if (response.status === 401) onExpired();
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      /* not JSON */
    }
    throw new ApiError(response.status, body);
  }
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(disposition);
  const name = match ? match[1] : "ledger";
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return name;
}

/** The text of `path` (a manifest: `application/jose`). */
export async function getText(path) {
  const response = await fetch(BASE + path, { headers: { Authorization: `Bearer ${token()}` } });
  if (response.status === 401) onExpired();
  const text = await response.text();
  if (!response.ok) {
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    throw new ApiError(response.status, body);
  }
  return text;
}
