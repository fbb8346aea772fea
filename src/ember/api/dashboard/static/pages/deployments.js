// Every deployment: what runs, how many replicas are up or starting, how warm the next start is.

import { api } from "../api.js";
import { ErrorNote, html, Loading, usePoll } from "../ui.js";

export function ReplicaCounts({ status }) {
  const { starting, ready } = status.replicas;
  return html`<span class="replicas">
    <span class="badge replicas-ready" title="ready replicas">${ready} ready</span>
    ${starting ? html` <span class="badge replicas-starting" title="replicas starting">${starting} starting</span>` : null}
  </span>`;
}

export function TierBadge({ cold }) {
  return html`<span class=${`badge tier-${cold.tier}`} title=${cold.reason || ""}>${cold.tier}${cold.ready ? " · ready" : ""}</span>`;
}

export function Deployments() {
  const [page, error] = usePoll((signal) => api("/v1/deployments", { signal }), 2000);
  if (!page) return html`<h1>Deployments</h1><${ErrorNote} error=${error} />${error ? null : html`<${Loading} what="deployments" />`}`;
  const items = page.results;
  return html`
    <h1>Deployments</h1>
    <${ErrorNote} error=${error} />
    ${items.length === 0
      ? html`<div class="empty"><p>No deployment yet. Deploy a model with</p><pre>ember deploy examples/hello --name you/hello</pre><p>or <code>POST /v1/deployments</code>; it appears here at once.</p></div>`
      : html`
      <table class="deployments">
        <caption class="sr-only">Deployments, updated every 2 seconds</caption>
        <thead><tr>
          <th scope="col">deployment</th><th scope="col">model</th><th scope="col">replicas</th>
          <th scope="col">queued</th><th scope="col">running</th><th scope="col">next start</th>
          <th scope="col">instances</th><th scope="col">scaling</th><th scope="col"><span class="sr-only">actions</span></th>
        </tr></thead>
        <tbody>
          ${items.map((d) => {
            const name = `${d.owner}/${d.name}`;
            const config = d.current_release.configuration;
            return html`
              <tr data-deployment=${name}>
                <th scope="row"><a href=${`#/deployments/${name}`}>${name}</a></th>
                <td>${d.current_release.model} <span class="muted mono" title=${d.current_release.version}>${d.current_release.version.slice(0, 8)}</span></td>
                <td><${ReplicaCounts} status=${d.status} /></td>
                <td class="num">${d.status.queued}</td>
                <td class="num">${d.status.running}</td>
                <td><${TierBadge} cold=${d.status.cold_start} /></td>
                <td class="num">${config.min_instances}–${config.max_instances}</td>
                <td class="reason">${d.status.placement ? `waiting for a place: ${d.status.placement}` : d.status.scaling.reason}</td>
                <td><a href=${`#/playground/${name}`}>Playground</a></td>
              </tr>`;
          })}
        </tbody>
      </table>`}`;
}
