// The dashboard's only way to the server: Ember's public API, with the user's bearer token.

const TOKEN_KEY = "ember.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY);
}

export function saveToken(value, remember) {
  (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
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
  const value = token();
  return value ? { Authorization: `Bearer ${value}`, ...extra } : extra;
}

// On 401 the token is forgotten and the login page shown, with why.
function unauthorized() {
  forgetToken();
  if (!location.hash.startsWith("#/login")) {
    location.hash = `#/login?next=${encodeURIComponent(location.hash.slice(1) || "/")}`;
  }
}

export async function api(path, { method = "GET", body, form, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (form) {
    init.body = form;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "Ember's server cannot be reached: is `ember serve` still running?");
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) {
    if (response.status === 401) unauthorized();
    throw new ApiError(response.status, messageOf(response.status, data), data);
  }
  return data;
}

// Server-sent events over fetch (EventSource cannot send a bearer token). Calls
// onEvent(kind, data) for each event until the stream ends or `signal` aborts.
export async function streamEvents(path, onEvent, signal) {
  const response = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!response.ok) {
    const text = await response.text();
    let data = null;
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
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
