// One deployment: live state, charts over a chosen time range, its replica starts, its scaling
// settings (editable: every change is a new release), and its latest predictions.

import { html, useState } from "../vendor/preact-htm.js";
import { api } from "../api.js";
import { Chart, StartPhases } from "../charts.js";
import { ErrorNote, Loading, seconds, Status, usd, usePoll, when } from "../ui.js";
import { ReplicaCounts, TierBadge } from "./deployments.js";

const RANGES = [["5m", "5 minutes"], ["15m", "15 minutes"], ["1h", "1 hour"], ["6h", "6 hours"], ["24h", "24 hours"], ["7d", "7 days"]];

function Charts({ name }) {
  const [range, setRange] = useState("15m");
  const [series, error] = usePoll(
    (signal) => api(`/v1/deployments/${name}/timeseries?since=${range}`, { signal }),
    range === "5m" || range === "15m" ? 2000 : 10000,
    [range],
  );
  const count = (v) => String(Math.round(v * 100) / 100);
  const span = series ? [series.start, series.end] : undefined;
  return html`
    <section aria-labelledby="charts-title">
      <div class="section-head">
        <h2 id="charts-title">Over time</h2>
        <div class="field inline">
          <label for="range">Time range</label>
          <select id="range" value=${range} onChange=${(e) => setRange(e.target.value)}>
            ${RANGES.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
          </select>
        </div>
      </div>
      <${ErrorNote} error=${error} />
      ${!series ? html`<${Loading} what="charts" />` : html`
        <p class="muted">Buckets of ${series.step < 120 ? `${series.step} s` : `${series.step / 60} min`}; queue and replicas are sampled every 2 s while the server runs.</p>
        <div class="charts">
          <${Chart} id="chart-requests" title="Requests per second" times=${series.t} span=${span}
            series=${[{ label: "finished", values: series.requests_per_second }]} format=${count} />
          <${Chart} id="chart-latency" span=${span} title="Latency (created → completed)" times=${series.t} format=${seconds}
            series=${[{ label: "p50", values: series.latency_p50 }, { label: "p99", values: series.latency_p99 }]} />
          <${Chart} id="chart-queue" span=${span} title="Queue length" times=${series.t} format=${count}
            series=${[{ label: "queued", values: series.queue }]} />
          <${Chart} id="chart-replicas" span=${span} title="Replicas" times=${series.t} format=${count}
            series=${[{ label: "ready", values: series.replicas_ready }, { label: "starting", values: series.replicas_starting }]} />
          <${Chart} id="chart-cost" span=${span} title="Cost" times=${series.t} format=${(v) => usd(v, 5)}
            series=${[{ label: "replicas", values: series.replica_cost }, { label: "charged to predictions", values: series.charged }]} />
        </div>
        <h3>Cold starts</h3>
        <${StartPhases} starts=${series.cold_starts} />`}
    </section>`;
}

const SETTINGS = [
  ["min_instances", "Minimum instances", "integer", "replicas kept up at all times (0: scale to zero)"],
  ["max_instances", "Maximum instances", "integer", "the most replicas a burst may start"],
  ["target_concurrency", "Target concurrency", "integer", "predictions one replica should carry"],
  ["scale_up_delay", "Scale-up delay (s)", "number", "how long a wish for more replicas must hold"],
  ["scale_down_delay", "Scale-down delay (s)", "number", "how long a wish for fewer replicas must hold"],
  ["idle_timeout", "Idle timeout (s)", "number", "idle seconds before zero; blank: learned from traffic"],
  ["queue_limit", "Queue limit", "integer", "beyond it, 429 with Retry-After"],
  ["request_timeout", "Request timeout (s)", "number", "counted from when a replica starts the prediction"],
];

function ScalingForm({ deployment, onSaved }) {
  const config = deployment.current_release.configuration;
  const [values, setValues] = useState(() => ({
    ...Object.fromEntries(SETTINGS.map(([key]) => [key, config[key] ?? ""])),
    cold_start_tier: config.cold_start_tier ?? "auto",
    keep_warm: (config.keep_warm || []).join("\n"),
  }));
  const [message, setMessage] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  const save = async (event) => {
    event.preventDefault();
    const body = {};
    for (const [key, , type] of SETTINGS) {
      const value = values[key];
      if (value === "" || value === null) continue;
      const number = type === "integer" ? parseInt(value, 10) : parseFloat(value);
      if (String(config[key] ?? "") !== String(number)) body[key] = number;
    }
    if ((config.cold_start_tier ?? "auto") !== values.cold_start_tier) body.cold_start_tier = values.cold_start_tier;
    const warm = values.keep_warm.split("\n").map((s) => s.trim()).filter(Boolean);
    if (warm.join("\n") !== (config.keep_warm || []).join("\n")) body.keep_warm = warm;
    if (!Object.keys(body).length) {
      setMessage("Nothing changed.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const saved = await api(`/v1/deployments/${deployment.owner}/${deployment.name}`, { method: "PATCH", body });
      setMessage(`Saved as release ${saved.current_release.number}: ${Object.keys(body).join(", ")}.`);
      onSaved();
    } catch (err) {
      setError(err);
      setMessage(null);
    } finally {
      setBusy(false);
    }
  };

  const field = ([key, label, type, help]) => html`
    <div class="field">
      <label for=${`setting-${key}`}>${label}</label>
      <input id=${`setting-${key}`} type="number" step=${type === "integer" ? 1 : "any"} min="0" value=${values[key]}
        placeholder="default" aria-describedby=${`setting-${key}-help`}
        onInput=${(e) => setValues({ ...values, [key]: e.target.value })} />
      <small id=${`setting-${key}-help`}>${help}</small>
    </div>`;

  return html`
    <form class="settings" onSubmit=${save} aria-labelledby="settings-title">
      <h2 id="settings-title">Scaling settings</h2>
      <div class="grid">
        ${SETTINGS.map(field)}
        <div class="field">
          <label for="setting-cold_start_tier">Cold-start tier</label>
          <select id="setting-cold_start_tier" value=${values.cold_start_tier} aria-describedby="setting-tier-help"
            onChange=${(e) => setValues({ ...values, cold_start_tier: e.target.value })}>
            ${["auto", "warm-host", "disk", "cold"].map((tier) => html`<option value=${tier}>${tier}</option>`)}
          </select>
          <small id="setting-tier-help">what is kept ready for the next start</small>
        </div>
        <div class="field">
          <label for="setting-keep_warm">Keep warm</label>
          <textarea id="setting-keep_warm" rows="2" placeholder="mon-fri 08:00-19:00=1" value=${values.keep_warm}
            aria-describedby="setting-keep_warm-help" onInput=${(e) => setValues({ ...values, keep_warm: e.target.value })}></textarea>
          <small id="setting-keep_warm-help">one window a line, in UTC</small>
        </div>
      </div>
      <${ErrorNote} error=${error} />
      ${message ? html`<p class="notice" role="status">${message}</p>` : null}
      <button type="submit" class="primary" disabled=${busy}>Save settings</button>
    </form>`;
}

function RecentPredictions({ name }) {
  const [page] = usePoll((signal) => api(`/v1/predictions?deployment=${encodeURIComponent(name)}`, { signal }), 3000, [name]);
  if (!page) return null;
  const items = page.results.slice(0, 10);
  return html`
    <section aria-labelledby="recent-title">
      <div class="section-head">
        <h2 id="recent-title">Latest predictions</h2>
        <a href=${`#/predictions?deployment=${encodeURIComponent(name)}`}>All of them</a>
      </div>
      ${items.length === 0 ? html`<p class="muted">None yet. <a href=${`#/playground/${name}`}>Run one in the playground.</a></p>` : html`
        <table><thead><tr><th scope="col">id</th><th scope="col">status</th><th scope="col">created</th><th scope="col">total</th><th scope="col">cost</th></tr></thead>
        <tbody>${items.map((p) => html`<tr>
          <td><a class="mono" href=${`#/predictions/${p.id}`}>${p.id}</a></td><td><${Status} value=${p.status} /></td>
          <td>${when(p.created_at)}</td><td>${seconds(p.metrics && p.metrics.total_time)}</td><td>${usd(p.metrics && p.metrics.cost, 6)}</td></tr>`)}</tbody></table>`}
    </section>`;
}

export function Deployment({ params }) {
  const [owner, name] = params;
  const full = `${owner}/${name}`;
  const [deployment, error, reload] = usePoll((signal) => api(`/v1/deployments/${full}`, { signal }), 2000, [full]);
  if (!deployment) return html`<h1>${full}</h1><${ErrorNote} error=${error} />${error ? null : html`<${Loading} />`}`;
  const status = deployment.status;
  const release = deployment.current_release;
  return html`
    <div class="page-head">
      <h1>${full}</h1>
      <a class="button primary" href=${`#/playground/${full}`}>Open playground</a>
    </div>
    <${ErrorNote} error=${error} />
    ${status.placement ? html`<p class="notice" role="status"><strong>A replica waits for a place on the cluster:</strong> ${status.placement}</p>` : null}
    ${status.setup_error ? html`<div class="error" role="alert"><strong>Replicas fail to start.</strong>${status.restart_backoff ? html` <span>${status.restart_backoff.detail}.</span>` : null}<pre>${status.setup_error}</pre></div>` : null}
    <dl class="facts" aria-label="Now">
      <div><dt>Replicas</dt><dd id="replica-state"><${ReplicaCounts} status=${status} /></dd></div>
      <div><dt>Queued</dt><dd>${status.queued}</dd></div>
      <div><dt>Running</dt><dd>${status.running}</dd></div>
      <div><dt>Next start</dt><dd><${TierBadge} cold=${status.cold_start} /></dd></div>
      <div><dt>Scaling</dt><dd>${status.scaling.reason}</dd></div>
      <div><dt>Release</dt><dd>#${release.number} · ${release.model} · <span class="mono">${release.version.slice(0, 12)}</span> · ${release.configuration.hardware}</dd></div>
    </dl>
    <${Charts} name=${full} />
    <${ScalingForm} deployment=${deployment} onSaved=${reload} />
    <${RecentPredictions} name=${full} />`;
}
