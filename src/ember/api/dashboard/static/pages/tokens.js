// API tokens (create: shown once; revoke) and budgets (spend limits per token or deployment).

import { html, useState } from "../vendor/preact-htm.js";
import { api } from "../api.js";
import { ErrorNote, Loading, usd, usePoll, when } from "../ui.js";

function TokenForm({ onCreated }) {
  const [name, setName] = useState("");
  const [owner, setOwner] = useState("");
  const [scope, setScope] = useState("predict");
  const [rate, setRate] = useState("");
  const [created, setCreated] = useState(null);
  const [error, setError] = useState(null);

  const submit = async (event) => {
    event.preventDefault();
    setError(null);
    try {
      const body = {
        name, scope,
        ...(owner.trim() ? { owner: owner.trim() } : {}),
        ...(rate.trim() ? { rate_limit: rate.trim() } : {}),
      };
      setCreated(await api("/v1/tokens", { method: "POST", body }));
      setName("");
      onCreated();
    } catch (err) {
      setError(err);
    }
  };
  return html`
    <form class="inline-form" onSubmit=${submit} aria-labelledby="new-token-title">
      <h3 id="new-token-title">New token</h3>
      <div class="field inline"><label for="token-name">Name</label>
        <input id="token-name" required maxlength="200" value=${name} onInput=${(e) => setName(e.target.value)} /></div>
      <div class="field inline"><label for="token-owner">Owner</label>
        <input id="token-owner" placeholder="yours" value=${owner} onInput=${(e) => setOwner(e.target.value)} /></div>
      <div class="field inline"><label for="token-scope">Scope</label>
        <select id="token-scope" value=${scope} onChange=${(e) => setScope(e.target.value)}>
          <option value="predict">predict</option><option value="deploy">deploy</option><option value="admin">admin</option>
        </select></div>
      <div class="field inline"><label for="token-rate">Rate limit</label>
        <input id="token-rate" placeholder="e.g. 600/min" maxlength="30" value=${rate} onInput=${(e) => setRate(e.target.value)} /></div>
      <button type="submit" class="primary">Create token</button>
      <${ErrorNote} error=${error} />
      ${created ? html`<div class="notice" role="status">
        <p>Token <strong>${created.name}</strong> (${created.id}). Copy it now: Ember keeps only its hash.</p>
        <input readonly class="mono secret" aria-label="The new token" value=${created.token} onFocus=${(e) => e.target.select()} />
      </div>` : null}
    </form>`;
}

function BudgetForm({ tokens, deployments, onCreated }) {
  const [scope, setScope] = useState("deployment");
  const [target, setTarget] = useState("");
  const [period, setPeriod] = useState("day");
  const [limit, setLimit] = useState("");
  const [error, setError] = useState(null);
  const targets = scope === "token"
    ? tokens.map((t) => [t.id, `${t.name} (${t.id})`])
    : deployments.map((d) => [`${d.owner}/${d.name}`, `${d.owner}/${d.name}`]);

  const submit = async (event) => {
    event.preventDefault();
    setError(null);
    try {
      await api("/v1/budgets", { method: "POST", body: { scope, target: target || (targets[0] || [""])[0], period, limit_usd: Number(limit) } });
      setLimit("");
      onCreated();
    } catch (err) {
      setError(err);
    }
  };
  return html`
    <form class="inline-form" onSubmit=${submit} aria-labelledby="new-budget-title">
      <h3 id="new-budget-title">New budget</h3>
      <div class="field inline"><label for="budget-scope">For a</label>
        <select id="budget-scope" value=${scope} onChange=${(e) => { setScope(e.target.value); setTarget(""); }}>
          <option value="deployment">deployment</option><option value="token">token</option>
        </select></div>
      <div class="field inline"><label for="budget-target">Which</label>
        <select id="budget-target" value=${target} onChange=${(e) => setTarget(e.target.value)}>
          ${targets.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
        </select></div>
      <div class="field inline"><label for="budget-period">Per</label>
        <select id="budget-period" value=${period} onChange=${(e) => setPeriod(e.target.value)}>
          <option value="day">day</option><option value="month">month</option>
        </select></div>
      <div class="field inline"><label for="budget-limit">Limit (USD)</label>
        <input id="budget-limit" type="number" min="0.0001" step="any" required value=${limit} onInput=${(e) => setLimit(e.target.value)} /></div>
      <button type="submit" class="primary">Add budget</button>
      <${ErrorNote} error=${error} />
    </form>`;
}

export function Tokens() {
  const [tokens, tokenError, reloadTokens] = usePoll((signal) => api("/v1/tokens", { signal }), 0);
  const [budgets, budgetError, reloadBudgets] = usePoll((signal) => api("/v1/budgets", { signal }), 5000);
  const [deployments] = usePoll((signal) => api("/v1/deployments", { signal }), 0);
  const [error, setError] = useState(null);

  const act = async (path, confirmText, reload) => {
    if (!confirm(confirmText)) return;
    try {
      await api(path, { method: "DELETE" });
      reload();
    } catch (err) {
      setError(err);
    }
  };

  return html`
    <h1>Tokens and budgets</h1>
    <${ErrorNote} error=${error || tokenError || budgetError} />
    <section aria-labelledby="tokens-title">
      <h2 id="tokens-title">API tokens</h2>
      ${!tokens ? html`<${Loading} />` : html`
        <table><thead><tr><th scope="col">name</th><th scope="col">id</th><th scope="col">owner</th><th scope="col">scope</th><th scope="col">rate limit</th><th scope="col">created</th><th scope="col"><span class="sr-only">actions</span></th></tr></thead>
          <tbody>${tokens.results.map((t) => html`<tr data-token=${t.id}>
            <th scope="row">${t.name}</th><td class="mono">${t.id}</td><td>${t.owner}</td><td>${t.scope}</td><td>${t.rate_limit || "none"}</td><td>${when(t.created_at)}</td>
            <td><button type="button" class="danger" aria-label=${`Revoke ${t.name}`} onClick=${() => act(`/v1/tokens/${t.id}`, `Revoke token ${t.name}? Requests with it fail at once.`, reloadTokens)}>Revoke</button></td>
          </tr>`)}</tbody></table>`}
      <${TokenForm} onCreated=${reloadTokens} />
    </section>
    <section aria-labelledby="budgets-title">
      <h2 id="budgets-title">Budgets</h2>
      ${!budgets ? html`<${Loading} />` : budgets.results.length === 0 ? html`<p class="muted">No budget: nothing caps spend.</p>` : html`
        <table><thead><tr><th scope="col">for</th><th scope="col">per</th><th scope="col">limit</th><th scope="col">spent</th><th scope="col">used</th><th scope="col">resets</th><th scope="col"><span class="sr-only">actions</span></th></tr></thead>
          <tbody>${budgets.results.map((b) => html`<tr>
            <th scope="row">${b.scope} ${b.target}</th><td>${b.period}</td><td class="num">${usd(b.limit_usd, 2)}</td><td class="num">${usd(b.spent_usd)}</td>
            <td><meter min="0" max=${b.limit_usd} value=${b.spent_usd} aria-label="share of the budget spent"></meter></td>
            <td>${new Date(b.resets_at).toLocaleString()}</td>
            <td><button type="button" class="danger" aria-label=${`Remove the budget of ${b.target}`} onClick=${() => act(`/v1/budgets/${b.id}`, `Remove this budget of ${b.target}?`, reloadBudgets)}>Remove</button></td>
          </tr>`)}</tbody></table>`}
      ${tokens && deployments ? html`<${BudgetForm} tokens=${tokens.results} deployments=${deployments.results} onCreated=${reloadBudgets} />` : null}
    </section>`;
}
