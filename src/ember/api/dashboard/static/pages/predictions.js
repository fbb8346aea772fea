// Every prediction, newest first, filtered by status and deployment or model; live.

import { html, useState } from "../vendor/preact-htm.js";
import { api } from "../api.js";
import { ErrorNote, Loading, seconds, Status, usd, usePoll, when } from "../ui.js";

const STATUSES = ["", "starting", "processing", "succeeded", "failed", "canceled"];

export function Predictions({ query }) {
  const [status, setStatus] = useState(query.get("status") || "");
  const [target, setTarget] = useState(query.get("deployment") || query.get("model") || "");
  const [kind, setKind] = useState(query.get("model") ? "model" : "deployment");
  const [cursor, setCursor] = useState(null);

  const params = new URLSearchParams();
  if (status) params.set("status", status);
  if (target.trim()) params.set(kind, target.trim());
  const path = cursor || `/v1/predictions?${params}`;
  const [page, error] = usePoll((signal) => api(path, { signal }), cursor ? 0 : 2000, [path]);

  const filter = (change) => {
    setCursor(null);
    change();
  };

  return html`
    <h1>Predictions</h1>
    <form class="filters" role="search" aria-label="Filter predictions" onSubmit=${(e) => e.preventDefault()}>
      <div class="field inline">
        <label for="filter-status">Status</label>
        <select id="filter-status" value=${status} onChange=${(e) => filter(() => setStatus(e.target.value))}>
          ${STATUSES.map((s) => html`<option value=${s}>${s || "any"}</option>`)}
        </select>
      </div>
      <div class="field inline">
        <label for="filter-kind">Of</label>
        <select id="filter-kind" value=${kind} onChange=${(e) => filter(() => setKind(e.target.value))}>
          <option value="deployment">deployment</option>
          <option value="model">model</option>
        </select>
      </div>
      <div class="field inline">
        <label for="filter-target">Name</label>
        <input id="filter-target" type="search" placeholder="owner/name" value=${target}
          onInput=${(e) => filter(() => setTarget(e.target.value))} />
      </div>
    </form>
    <${ErrorNote} error=${error} />
    ${!page ? (error ? null : html`<${Loading} what="predictions" />`) : page.results.length === 0
      ? html`<p class="muted">No prediction matches.</p>`
      : html`
      <table class="predictions">
        <caption class="sr-only">Predictions, newest first</caption>
        <thead><tr><th scope="col">id</th><th scope="col">model</th><th scope="col">status</th><th scope="col">created</th>
          <th scope="col">total</th><th scope="col">cost</th><th scope="col">source</th></tr></thead>
        <tbody>
          ${page.results.map((p) => html`
            <tr data-prediction=${p.id}>
              <td><a class="mono" href=${`#/predictions/${p.id}`}>${p.id}</a></td>
              <td>${p.deployment ? html`<a href=${`#/deployments/${p.deployment}`}>${p.deployment}</a>` : p.model}</td>
              <td><${Status} value=${p.status} /></td>
              <td>${when(p.created_at)}</td>
              <td>${seconds(p.metrics && p.metrics.total_time)}</td>
              <td>${usd(p.metrics && p.metrics.cost, 6)}</td>
              <td>${p.source}</td>
            </tr>`)}
        </tbody>
      </table>
      <nav class="pager" aria-label="Pages">
        ${cursor ? html`<button type="button" onClick=${() => setCursor(null)}>Newest</button>` : null}
        ${page.next ? html`<button type="button" onClick=${() => setCursor(new URL(page.next).pathname + new URL(page.next).search)}>Older</button>` : null}
      </nav>`}`;
}
