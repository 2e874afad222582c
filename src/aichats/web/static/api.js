// @ts-check
// The API client of the web app: the same public API as every other client. The key
// travels in the http-only session cookie; every request also carries X-Aichats-Web,
// which the server requires of cookie-signed requests that change something (no other
// site can make a browser send it).

export class ApiError extends Error {
  /**
   * @param {number} status the HTTP status (0: the server could not be reached)
   * @param {string} type the error's ``type``
   * @param {string} message
   */
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

/** @type {(failure: ApiError) => void} */
let onSignedOut = () => {};
/**
 * Called when a request is refused for want of a valid key (revoked, or signed out elsewhere).
 * @param {(failure: ApiError) => void} fn
 */
export function whenSignedOut(fn) {
  onSignedOut = fn;
}

export const API = "/api/v1";

/**
 * What to tell the person about a failure: an ApiError's message (or any error's).
 * @param {unknown} failure
 */
export function reason(failure) {
  return failure instanceof Error ? failure.message : String(failure);
}

/**
 * ``method`` on ``path`` (under /api/v1 unless it starts with "/"), with a JSON or FormData
 * body; resolves to the answer's JSON (the caller says what it expects: ``T``).
 * @template [T=unknown]
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 * @returns {Promise<T>}
 */
export async function call(method, path, body) {
  /** @type {Record<string, string>} */
  const headers = { "X-Aichats-Web": "1" };
  /** @type {RequestInit} */
  const init = { method, credentials: "same-origin", headers };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
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

/** @template [T=unknown] @param {string} path @returns {Promise<T>} */
export const get = (path) => call("GET", path);
/** @template [T=unknown] @param {string} path @param {unknown} [body] @returns {Promise<T>} */
export const post = (path, body) => call("POST", path, body);
/** @template [T=unknown] @param {string} path @param {unknown} body @returns {Promise<T>} */
export const patch = (path, body) => call("PATCH", path, body);
/** @template [T=unknown] @param {string} path @param {unknown} body @returns {Promise<T>} */
export const put = (path, body) => call("PUT", path, body);
/** @param {string} path */
export const del = (path) => call("DELETE", path);

/**
 * A query string from an object, leaving out empty values.
 * @param {Record<string, string | number | boolean | null | undefined>} params
 */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
