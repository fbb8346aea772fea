// The dashboard's only way to the server: Ember's public API, acting with the token the user
// logged in with. The page never keeps that token: it goes once to /v1/dashboard/session, which
// answers with an HttpOnly session cookie (no script, ours or another same-origin page's, can
// read it) and the session's CSRF token, held here in memory and sent with every API call.

const SESSION = "/v1/dashboard/session";
const CSRF_HEADER = "X-CSRF-Token";
const UNREACHABLE = "Ember's server cannot be reached: is `ember serve` still running?";
let csrfToken = null;

// Older versions kept the token in web storage, where any same-origin page could read it.
localStorage.removeItem("ember.token");
sessionStorage.removeItem("ember.token");

export function loggedIn() {
  return csrfToken !== null;
}

// Whether the browser still has a session (after a reload, or another tab's login), and its
// CSRF token if so (other sites' pages get neither the cookie sent nor the answer to read).
export async function resumeSession() {
  try {
    const response = await fetch(SESSION);
    csrfToken = response.ok ? (await response.json()).csrf_token : null;
  } catch {
    csrfToken = null;
  }
  return loggedIn();
}

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

// The message a person can act on, from either of Ember's error shapes.
function messageOf(status, body) {
  if (body && body.error && body.error.message) return body.error.message;
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((d) => `${(d.loc || []).slice(-1)[0] || "input"}: ${d.msg}`).join("; ");
  }
  if (body && body.title) return body.title;
  return `the server answered ${status}`;
}

function headers(extra = {}) {
  return csrfToken ? { [CSRF_HEADER]: csrfToken, ...extra } : extra;
}

async function bodyOf(response) {
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return text;
  }
}

// Log in: the server checks the token and opens the session; the token is not kept here.
export async function logIn(token, remember) {
  const response = await fetch(SESSION, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token, remember }),
  }).catch(() => {
    throw new ApiError(0, UNREACHABLE);
  });
  const data = await bodyOf(response);
  if (!response.ok) throw new ApiError(response.status, messageOf(response.status, data), data);
  csrfToken = data.csrf_token;
}

export async function logOut() {
  const sent = headers();
  csrfToken = null;
  await fetch(SESSION, { method: "DELETE", headers: sent }).catch(() => null);
}

// On 401 the session is over (logged out, expired, its token revoked): the login page, with why.
function unauthorized() {
  csrfToken = null;
  if (!location.hash.startsWith("#/login")) {
    location.hash = `#/login?next=${encodeURIComponent(location.hash.slice(1) || "/")}`;
  }
}

// A refusal made with a CSRF token that is no longer the session's (another tab logged in
// again) is tried once more with the session's current one.
async function send(path, init) {
  const sent = csrfToken;
  const response = await fetch(path, { ...init, headers: headers(init.headers) });
  const refused = response.status === 401 || response.status === 403;
  if (refused && (await resumeSession()) && csrfToken !== sent) {
    return fetch(path, { ...init, headers: headers(init.headers) });
  }
  return response;
}

export async function api(path, { method = "GET", body, form, signal } = {}) {
  const init = { method, headers: {}, signal };
  if (form) {
    init.body = form;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await send(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, UNREACHABLE);
  }
  if (response.status === 204) return null;
  const data = await bodyOf(response);
  if (!response.ok) {
    if (response.status === 401) unauthorized();
    throw new ApiError(response.status, messageOf(response.status, data), data);
  }
  return data;
}

// Server-sent events over fetch (EventSource cannot send the CSRF header). Calls
// onEvent(kind, data) for each event until the stream ends or `signal` aborts.
export async function streamEvents(path, onEvent, signal) {
  const response = await send(path, { headers: { Accept: "text/event-stream" }, signal });
  if (!response.ok) {
    const data = await bodyOf(response);
    if (response.status === 401) unauthorized();
    throw new ApiError(response.status, messageOf(response.status, data), data);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let kind = "message";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const raw of lines) {
      const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (line === "") {
        if (data.length) onEvent(kind, data.join("\n"));
        kind = "message";
        data = [];
      } else if (line.startsWith("event:")) {
        kind = line.slice(6).trim();
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      }
    }
  }
  if (data.length) onEvent(kind, data.join("\n"));
}

// Upload a file the way the official clients do; its URL is what an input takes.
export async function uploadFile(file) {
  const form = new FormData();
  form.append("content", file, file.name);
  const record = await api("/v1/files", { method: "POST", form });
  return record.urls.get;
}
