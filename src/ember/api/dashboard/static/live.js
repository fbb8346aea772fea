// A prediction as it happens: its events streamed (output items, logs), then its final record.

import { html, useEffect, useState } from "./vendor/preact-htm.js";
import { api, streamEvents } from "./api.js";
import { ErrorNote, Logs, Output, seconds, Status, usd } from "./ui.js";

const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

export function isTerminal(status) {
  return TERMINAL.has(status);
}

// Follows prediction `id` until it ends; returns the latest record, streamed items and logs.
export function useLivePrediction(id) {
  const [record, setRecord] = useState(null);
  const [items, setItems] = useState([]);
  const [logs, setLogs] = useState("");
  const [error, setError] = useState(null);

  useEffect(() => {
    const controller = new AbortController();
    let alive = true;
    (async () => {
      try {
        const first = await api(`/v1/predictions/${id}`, { signal: controller.signal });
        if (!alive) return;
        setRecord(first);
        setLogs(first.logs || "");
        if (isTerminal(first.status)) return;
        const got = [];
        let text = "";
        await streamEvents(`/v1/predictions/${id}/stream`, (kind, data) => {
          if (kind === "output") {
            got.push(data);
            setItems([...got]);
          } else if (kind === "logs") {
            text += text && !text.endsWith("\n") ? `\n${data}` : data;
            setLogs(text);
          }
        }, controller.signal);
        if (alive) setRecord(await api(`/v1/predictions/${id}`, { signal: controller.signal }));
      } catch (err) {
        if (alive && err.name !== "AbortError") setError(err);
      }
    })();
    const poll = setInterval(async () => {  // status changes (starting → processing) and metrics
      try {
        const latest = await api(`/v1/predictions/${id}`, { signal: controller.signal });
        if (alive) setRecord((old) => (old && isTerminal(old.status) ? old : latest));
        if (isTerminal(latest.status)) clearInterval(poll);
      } catch {
        /* the stream reports errors */
      }
    }, 1000);
    return () => {
      alive = false;
      controller.abort();
      clearInterval(poll);
    };
  }, [id]);
  return { record, items, logs, error };
}

export function Timings({ record }) {
  const m = record.metrics || {};
  return html`
    <dl class="facts timings" aria-label="Timings and cost">
      <div><dt>Status</dt><dd><${Status} value=${record.status} /></dd></div>
      <div><dt>Queued</dt><dd>${seconds(m.queue_time)}</dd></div>
      <div><dt>Predict time</dt><dd>${seconds(m.predict_time)}</dd></div>
      <div><dt>Total</dt><dd>${seconds(m.total_time)}</dd></div>
      <div><dt>Cost</dt><dd>${usd(m.cost, 6)}</dd></div>
      ${m.cold_start_cost ? html`<div><dt>of it cold start</dt><dd>${usd(m.cold_start_cost, 6)}</dd></div>` : null}
    </dl>`;
}

// The output: streamed items while it runs, the final record's output once it ended.
export function LiveOutput({ live, concatenate }) {
  const { record, items } = live;
  if (!record) return null;
  const done = isTerminal(record.status);
  const value = done ? record.output : items.length ? items : null;
  return html`
    <section class="output" aria-labelledby="output-title" aria-busy=${!done}>
      <h2 id="output-title">Output</h2>
      ${record.error ? html`<p class="error" role="alert">${record.error}</p>` : null}
      ${value === null && !done ? html`<p class="muted">Waiting for output…</p>` : html`<${Output} value=${value} concatenate=${concatenate} />`}
    </section>`;
}

export function LivePrediction({ id, concatenate }) {
  const live = useLivePrediction(id);
  if (!live.record) return html`<${ErrorNote} error=${live.error} />`;
  return html`
    <${ErrorNote} error=${live.error} />
    <${Timings} record=${live.record} />
    <${LiveOutput} live=${live} concatenate=${concatenate} />
    <section aria-labelledby="logs-title">
      <h2 id="logs-title">Logs</h2>
      <${Logs} text=${live.logs} />
    </section>`;
}
