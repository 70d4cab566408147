// The API as the dashboard uses it: same-origin requests with the cookie session.
export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function query(params) {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return entries.length ? "?" + new URLSearchParams(entries).toString() : "";
}

export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (response.status === 401) throw new Unauthorized("not logged in");
  if (!response.ok) {
    let code = "error", message = `${response.status}`;
    try {
      const error = (await response.json()).error;
      code = error.code;
      message = error.message;
    } catch (_) { /* not a JSON error body */ }
    throw new ApiError(response.status, code, message);
  }
  if (response.status === 204) return null;
  return response.json();
}
