// The API client of the web app: the same public API as every other client. The key
// travels in the http-only session cookie; every request also carries X-Aichats-Web,
// which the server requires of cookie-signed requests that change something (no other
// site can make a browser send it).

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

let onSignedOut = () => {};
/** Called when a request is refused for want of a valid key (revoked, or signed out elsewhere). */
export function whenSignedOut(fn) {
  onSignedOut = fn;
}

export const API = "/api/v1";

/** ``method`` on ``path`` (under /api/v1 unless it starts with "/"), with a JSON or FormData body. */
export async function call(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { "X-Aichats-Web": "1" } };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path.startsWith("/") ? path : `${API}/${path}`, init);
  } catch {
    throw new ApiError(0, "network", "The server can not be reached. Check your connection and try again.");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    const failure = new ApiError(response.status, error.type || "error", error.message || `HTTP ${response.status}`);
    if (response.status === 401 && !path.startsWith("/web/session")) onSignedOut(failure);
    throw failure;
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);
export const patch = (path, body) => call("PATCH", path, body);
export const put = (path, body) => call("PUT", path, body);
export const del = (path) => call("DELETE", path);

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
