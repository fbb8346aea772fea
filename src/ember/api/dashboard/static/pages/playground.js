// Run a deployment's model from a form generated from its input schema; the output streams in.

import { html, useState } from "../vendor/preact-htm.js";
import { api } from "../api.js";
import { LivePrediction } from "../live.js";
import { SchemaForm } from "../schema_form.js";
import { ErrorNote, Loading, usePoll } from "../ui.js";

function concatenates(openapi) {
  const output = openapi && openapi.components && openapi.components.schemas && openapi.components.schemas.Output;
  return Boolean(output && output["x-cog-array-display"] === "concatenate");
}

// How to call the deployment from code, as Replicate and Baseten show beside a model: the same
// request the form makes, with the official clients (the token stays out of the page).
function Snippets({ full, openapi }) {
  const base = location.origin;
  const routes = (openapi && openapi.info && openapi.info["x-ember-openai"]) || [];
  const curl = `curl -s -X POST ${base}/v1/deployments/${full}/predictions \\
  -H "Authorization: Bearer $EMBER_TOKEN" -H "Content-Type: application/json" \\
  -H "Prefer: wait" -d '{"input": {...}}'`;
  const python = `import os

import replicate
client = replicate.Client(api_token=os.environ["EMBER_TOKEN"], base_url="${base}")
output = client.run("${full}", input={...})`;
  const chat = `import os

from openai import OpenAI
client = OpenAI(api_key=os.environ["EMBER_TOKEN"], base_url="${base}/v1")
${routes.includes("embeddings")
    ? `client.embeddings.create(model="${full}", input=["some text"])`
    : `client.chat.completions.create(model="${full}", messages=[{"role": "user", "content": "Hi"}], stream=True)`}`;
  return html`
    <details class="snippets">
      <summary>Call it from code</summary>
      <h3>HTTP (Replicate's API)</h3><pre>${curl}</pre>
      <h3>Python, the official replicate client</h3><pre>${python}</pre>
      ${routes.length ? html`<h3>Python, the official openai client</h3><pre>${chat}</pre>` : null}
    </details>`;
}

export function Playground({ params }) {
  const full = `${params[0]}/${params[1]}`;
  const [version, error] = usePoll(async (signal) => {
    const deployment = await api(`/v1/deployments/${full}`, { signal });
    const release = deployment.current_release;
    return api(`/v1/models/${release.model}/versions/${release.version}`, { signal });
  }, 0, [full]);
  const [prediction, setPrediction] = useState(null);
  const [busy, setBusy] = useState(false);

  const run = async (input) => {
    setBusy(true);
    try {
      const created = await api(`/v1/deployments/${full}/predictions`, { method: "POST", body: { input, stream: true } });
      setPrediction(created.id);
    } finally {
      setBusy(false);
    }
  };

  return html`
    <div class="page-head">
      <h1>Playground: ${full}</h1>
      <a href=${`#/deployments/${full}`}>Deployment</a>
    </div>
    <${ErrorNote} error=${error} />
    ${!version ? (error ? null : html`<${Loading} what="the model's schema" />`) : html`
      <div class="playground">
        <section aria-labelledby="input-title">
          <h2 id="input-title">Input</h2>
          <${SchemaForm} openapi=${version.openapi_schema} onSubmit=${run} busy=${busy} />
          <${Snippets} full=${full} openapi=${version.openapi_schema} />
        </section>
        <section aria-labelledby="run-title" class="run">
          <h2 id="run-title" class="sr-only">Result</h2>
          ${prediction
            ? html`<p>Prediction <a class="mono" href=${`#/predictions/${prediction}`}>${prediction}</a></p>
                   <${LivePrediction} id=${prediction} concatenate=${concatenates(version.openapi_schema)} key=${prediction} />`
            : html`<p class="muted">Fill in the form and run: the output streams here as the model produces it.</p>`}
        </section>
      </div>`}`;
}
