// The cost ledger: what replicas cost and predictions were charged, grouped; spend per day as
// a chart; and, per deployment, the advisor's recommendation with one click to apply it.

import { html, useState } from "../vendor/preact-htm.js";
import { api } from "../api.js";
import { Chart } from "../charts.js";
import { ErrorNote, Loading, seconds, usd, usePoll } from "../ui.js";

const GROUPS = [["deployment", "deployment"], ["day", "day"], ["hardware", "hardware"], ["token", "token"]];
const SPANS = [["24h", "24 hours"], ["7d", "7 days"], ["30d", "30 days"], ["90d", "90 days"]];

function percent(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`;
}

function Report({ by, since }) {
  const [report, error] = usePoll((signal) => api(`/v1/costs?by=${by}&since=${since}`, { signal }), 10000, [by, since]);
  if (!report) return html`<${ErrorNote} error=${error} />${error ? null : html`<${Loading} what="the report" />`}`;
  const rows = [...report.rows, { ...report.total, key: "total" }];
  return html`
    <${ErrorNote} error=${error} />
    <table class="costs">
      <caption class="sr-only">Costs by ${by} since ${since}</caption>
      <thead><tr>
        <th scope="col">${by}</th><th scope="col">requests</th><th scope="col">failed</th><th scope="col">replica starts</th>
        <th scope="col">replica time</th><th scope="col">utilization</th><th scope="col">cost</th><th scope="col">of it idle</th>
        <th scope="col">of it cold starts</th><th scope="col">per request</th><th scope="col">per 1M tokens</th>
      </tr></thead>
      <tbody>
        ${rows.map((row) => html`
          <tr class=${row.key === "total" ? "total" : ""}>
            <th scope="row">${row.key}</th><td class="num">${row.requests}</td><td class="num">${row.failed}</td>
            <td class="num">${row.replicas}</td><td class="num">${seconds(row.gpu_seconds)}</td><td class="num">${percent(row.utilization)}</td>
            <td class="num">${usd(row.cost)}</td><td class="num">${usd(row.idle_cost)}</td><td class="num">${usd(row.cold_start_cost)}</td>
            <td class="num">${usd(row.cost_per_request, 6)}</td><td class="num">${usd(row.cost_per_million_tokens, 2)}</td>
          </tr>`)}
      </tbody>
    </table>`;
}

const DAYS = { "24h": 1, "7d": 7, "30d": 30, "90d": 90 };

function Daily({ since }) {
  const [report] = usePoll((signal) => api(`/v1/costs?by=day&since=${since}`, { signal }), 30000, [since]);
  if (!report || report.rows.length === 0) return null;
  const rows = [...report.rows].sort((a, b) => a.key.localeCompare(b.key));
  const times = rows.map((row) => Date.parse(`${row.key}T00:00:00Z`) / 1000);
  const today = Math.floor(Date.now() / 86400000) * 86400;
  const span = [today - (DAYS[since] || 7) * 86400, today + 86400];
  return html`<${Chart} id="chart-daily-cost" title="Cost per day (UTC)" times=${times} span=${span} format=${(v) => usd(v, 4)}
    series=${[{ label: "replicas", values: rows.map((r) => r.cost) }, { label: "idle", values: rows.map((r) => r.idle_cost) }]} />`;
}

function Advice({ deployment }) {
  const name = `${deployment.owner}/${deployment.name}`;
  const [advice, setAdvice] = useState(null);
  const [error, setError] = useState(null);
  const [applied, setApplied] = useState(null);
  const [busy, setBusy] = useState(false);

  const ask = async () => {
    setBusy(true);
    setError(null);
    try {
      setAdvice(await api(`/v1/deployments/${name}/advice?days=7`));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  // keep_warm in an option is one window to add to those already set.
  const apply = async (option) => {
    const body = { ...option.changes };
    if (typeof body.keep_warm === "string") {
      body.keep_warm = [...(deployment.current_release.configuration.keep_warm || []), body.keep_warm];
    }
    setBusy(true);
    try {
      const saved = await api(`/v1/deployments/${name}`, { method: "PATCH", body });
      setApplied(`Applied "${option.name}" as release ${saved.current_release.number}.`);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return html`
    <article class="advice" aria-labelledby=${`advice-${deployment.name}`}>
      <div class="section-head">
        <h3 id=${`advice-${deployment.name}`}>${name}</h3>
        <button type="button" onClick=${ask} disabled=${busy}>${advice ? "Ask again" : "Get advice"}</button>
      </div>
      <${ErrorNote} error=${error} />
      ${applied ? html`<p class="notice" role="status">${applied}</p>` : null}
      ${advice ? html`
        <p class="verdict">${advice.verdict}</p>
        <p class="muted">From ${advice.requests} requests over ${seconds(advice.days * 86400)} (since the deployment began, at most 7 days), replayed under each setting.</p>
        <table>
          <thead><tr><th scope="col">option</th><th scope="col">per month</th><th scope="col">waited for a start</th>
            <th scope="col">p99 wait</th><th scope="col">how</th><th scope="col"><span class="sr-only">apply</span></th></tr></thead>
          <tbody>
            ${[...advice.options, ...(advice.dedicated ? [advice.dedicated] : [])].map((option) => html`
              <tr class=${option.name === advice.recommended.name ? "recommended" : ""}>
                <th scope="row">${option.name}${option.name === advice.recommended.name ? html` <span class="badge">recommended</span>` : null}</th>
                <td class="num">${usd(option.monthly_cost, 2)}</td><td class="num">${percent(option.start_wait_rate)}</td>
                <td class="num">${seconds(option.p99_delay)}</td><td><code>${option.apply}</code></td>
                <td>${Object.keys(option.changes).length && option !== advice.dedicated
                  ? html`<button type="button" onClick=${() => apply(option)} disabled=${busy} aria-label=${`Apply ${option.name}`}>Apply</button>`
                  : null}</td>
              </tr>`)}
          </tbody>
        </table>` : null}
    </article>`;
}

export function Costs() {
  const [by, setBy] = useState("deployment");
  const [since, setSince] = useState("7d");
  const [deployments] = usePoll((signal) => api("/v1/deployments", { signal }), 0);
  return html`
    <h1>Costs</h1>
    <form class="filters" aria-label="Report" onSubmit=${(e) => e.preventDefault()}>
      <div class="field inline">
        <label for="cost-by">Group by</label>
        <select id="cost-by" value=${by} onChange=${(e) => setBy(e.target.value)}>
          ${GROUPS.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
        </select>
      </div>
      <div class="field inline">
        <label for="cost-since">Since</label>
        <select id="cost-since" value=${since} onChange=${(e) => setSince(e.target.value)}>
          ${SPANS.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
        </select>
      </div>
    </form>
    <${Report} by=${by} since=${since} />
    <${Daily} since=${since} />
    <section aria-labelledby="advisor-title">
      <h2 id="advisor-title">Advisor</h2>
      <p class="muted">Replays each deployment's last 7 days of traffic under its settings, other settings and a dedicated machine.</p>
      ${!deployments ? html`<${Loading} />` : deployments.results.map((d) => html`<${Advice} deployment=${d} key=${`${d.owner}/${d.name}`} />`)}
    </section>`;
}
