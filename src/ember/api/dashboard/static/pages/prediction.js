// One prediction: input, output (images shown, streams rendered as they come), logs, timings
// and cost; cancel while it runs.

import { html, useState } from "../vendor/preact-htm.js";
import { api } from "../api.js";
import { isTerminal, LiveOutput, Timings, useLivePrediction } from "../live.js";
import { ErrorNote, Json, Logs, Loading, when } from "../ui.js";

export function Prediction({ params }) {
  const [id] = params;
  const live = useLivePrediction(id);
  const [cancelError, setCancelError] = useState(null);
  const record = live.record;
  if (!record) return html`<h1>Prediction ${id}</h1><${ErrorNote} error=${live.error} />${live.error ? null : html`<${Loading} />`}`;

  const cancel = async () => {
    try {
      await api(`/v1/predictions/${id}/cancel`, { method: "POST" });
    } catch (err) {
      setCancelError(err);
    }
  };
  return html`
    <div class="page-head">
      <h1>Prediction <span class="mono">${id}</span></h1>
      ${isTerminal(record.status) ? null : html`<button type="button" class="danger" onClick=${cancel}>Cancel</button>`}
    </div>
    <${ErrorNote} error=${live.error || cancelError} />
    <p>
      ${record.deployment ? html`Deployment <a href=${`#/deployments/${record.deployment}`}>${record.deployment}</a> · ` : null}
      model ${record.model} · version <span class="mono">${record.version.slice(0, 12)}</span> ·
      created ${when(record.created_at)} · source ${record.source}
    </p>
    <${Timings} record=${record} />
    <div class="columns">
      <section aria-labelledby="input-title"><h2 id="input-title">Input</h2><${Json} value=${record.input} /></section>
      <${LiveOutput} live=${live} />
    </div>
    <section aria-labelledby="logs-title"><h2 id="logs-title">Logs</h2><${Logs} text=${live.logs} /></section>
    <details><summary>Metrics</summary><${Json} value=${record.metrics} /></details>`;
}
