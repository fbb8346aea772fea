// Small pieces every page uses: formatting, polling, status badges, output rendering.

import { html, useEffect, useRef, useState } from "./vendor/preact-htm.js";

export { html };

export function usd(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  if (value !== 0 && Math.abs(value) < 0.0001) return `$${value.toExponential(2)}`;
  return `$${value.toFixed(digits)}`;
}

export function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${(value * 1000).toFixed(value < 0.01 ? 1 : 0)} ms`;
  if (value < 120) return `${value.toFixed(2)} s`;
  if (value < 7200) return `${(value / 60).toFixed(1)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  const ago = (Date.now() - date.getTime()) / 1000;
  if (ago < 60) return `${Math.max(0, Math.round(ago))} s ago`;
  if (ago < 3600) return `${Math.round(ago / 60)} min ago`;
  return date.toLocaleString();
}

// Calls `load` now and every `ms` while the page shows; returns [data, error, reload].
export function usePoll(load, ms, deps = []) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let alive = true;
    let timer = null;
    const controller = new AbortController();
    const run = async () => {
      try {
        const value = await load(controller.signal);
        if (alive) {
          setData(value);
          setError(null);
        }
      } catch (err) {
        if (alive && err.name !== "AbortError") setError(err);
      }
      if (alive && ms) timer = setTimeout(run, ms);
    };
    run();
    return () => {
      alive = false;
      controller.abort();
      clearTimeout(timer);
    };
  }, [...deps, tick]);
  return [data, error, () => setTick((n) => n + 1)];
}

export function ErrorNote({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert">${error.message || String(error)}</p>`;
}

export function Status({ value }) {
  return html`<span class=${`badge status-${value}`}>${value}</span>`;
}

export function Loading({ what = "" }) {
  return html`<p class="loading" aria-live="polite">Loading ${what}…</p>`;
}

const IMAGE = /^data:image\/|\.(png|jpe?g|gif|webp|svg|bmp)(\?|$)/i;
const AUDIO = /^data:audio\/|\.(wav|mp3|ogg|flac)(\?|$)/i;
const VIDEO = /^data:video\/|\.(mp4|webm|mov)(\?|$)/i;
const URL_LIKE = /^(https?:|data:)/;

// One output value as a person wants to see it: images shown, media playable, files linked,
// text as text, the rest as JSON.
export function OutputValue({ value }) {
  if (value === null || value === undefined) return html`<span class="muted">no output</span>`;
  if (typeof value === "string" && URL_LIKE.test(value)) {
    if (IMAGE.test(value)) return html`<img class="output-image" src=${value} alt="output image" />`;
    if (AUDIO.test(value)) return html`<audio controls src=${value}></audio>`;
    if (VIDEO.test(value)) return html`<video controls src=${value}></video>`;
    const name = value.startsWith("data:") ? "download" : value.split("?")[0].split("/").pop();
    return html`<a href=${value} download>${name}</a>`;
  }
  if (typeof value === "string") return html`<pre class="output-text">${value}</pre>`;
  if (Array.isArray(value) && value.length && value.every((v) => typeof v === "string" && URL_LIKE.test(v))) {
    return html`<div class="output-list">${value.map((v) => html`<${OutputValue} value=${v} />`)}</div>`;
  }
  return html`<pre class="output-json">${JSON.stringify(value, null, 2)}</pre>`;
}

// An output that may be a stream of items: tokens are joined into text as they come.
export function Output({ value, concatenate }) {
  if (Array.isArray(value) && (concatenate || value.every((v) => typeof v === "string" && !URL_LIKE.test(v)))) {
    return html`<pre class="output-text" aria-live="polite">${value.join("")}</pre>`;
  }
  return html`<${OutputValue} value=${value} />`;
}

// Logs that follow their end as they grow, unless the reader scrolled up.
export function Logs({ text }) {
  const ref = useRef(null);
  useEffect(() => {
    const node = ref.current;
    if (node && node.scrollHeight - node.scrollTop - node.clientHeight < 40) node.scrollTop = node.scrollHeight;
  }, [text]);
  return html`<pre class="logs" ref=${ref} tabindex="0" aria-label="Logs">${text || "(no logs)"}</pre>`;
}

export function Json({ value }) {
  return html`<pre class="output-json">${JSON.stringify(value, null, 2)}</pre>`;
}
