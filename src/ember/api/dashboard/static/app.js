// The dashboard's shell: a hash router, the navigation, and the login gate.

import { html, render, useEffect, useState } from "./vendor/preact-htm.js";
import { api, loggedIn as hasSession, logOut, resumeSession } from "./api.js";
import { Flame } from "./flame.js";
import { Login } from "./pages/login.js";
import { Deployments } from "./pages/deployments.js";
import { Deployment } from "./pages/deployment.js";
import { Playground } from "./pages/playground.js";
import { Predictions } from "./pages/predictions.js";
import { Prediction } from "./pages/prediction.js";
import { Costs } from "./pages/costs.js";
import { Tokens } from "./pages/tokens.js";

const ROUTES = [
  [/^\/login$/, Login, "Log in"],
  [/^\/?$/, Deployments, "Deployments"],
  [/^\/deployments$/, Deployments, "Deployments"],
  [/^\/deployments\/([^/]+)\/([^/]+)$/, Deployment, "Deployment"],
  [/^\/playground\/([^/]+)\/([^/]+)$/, Playground, "Playground"],
  [/^\/predictions$/, Predictions, "Predictions"],
  [/^\/predictions\/([^/]+)$/, Prediction, "Prediction"],
  [/^\/costs$/, Costs, "Costs"],
  [/^\/tokens$/, Tokens, "Tokens and budgets"],
];

// The last field: pages only an admin token can read (the API refuses the others with 403).
const NAV = [
  ["#/deployments", "Deployments", /^\/($|deployments|playground)/, false],
  ["#/predictions", "Predictions", /^\/predictions/, false],
  ["#/costs", "Costs", /^\/costs/, true],
  ["#/tokens", "Tokens & budgets", /^\/tokens/, true],
];

function parseHash() {
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  return { path: path || "/", query: new URLSearchParams(query) };
}

function useRoute() {
  const [route, setRoute] = useState(parseHash);
  useEffect(() => {
    const changed = () => setRoute(parseHash());
    addEventListener("hashchange", changed);
    changed(); // a change between the first render and now
    return () => removeEventListener("hashchange", changed);
  }, []);
  return route;
}

function Header({ path, account, sandbox }) {
  const logout = () => logOut().then(() => {
    location.hash = "#/login";
  });
  return html`
    <header class="top">
      <a class="brand" href="#/deployments"><${Flame} /> Ember</a>
      <nav aria-label="Main">
        <ul>
          ${NAV.filter(([, , , admin]) => !admin || !account || account.scope === "admin").map(([href, label, active]) => html`
            <li><a href=${href} aria-current=${active.test(path) ? "page" : undefined}>${label}</a></li>`)}
        </ul>
      </nav>
      <div class="account">
        ${sandbox === "off" ? html`<span class="badge warn" title="the server was started with --no-sandbox: models run with the server's rights">replicas not sandboxed</span>` : null}
        ${sandbox === "on" ? html`<span class="muted" title="each replica runs in its own bubblewrap sandbox with cgroup limits">sandboxed</span>` : null}
        ${account ? html`<span title="the token's owner and scope">${account.username} · ${account.scope}</span>` : null}
        <button type="button" class="link" onClick=${logout}>Log out</button>
      </div>
    </header>`;
}

function App() {
  const { path, query } = useRoute();
  const [account, setAccount] = useState(null);
  const [sandbox, setSandbox] = useState(null);
  useEffect(() => {
    fetch("/health").then((r) => r.json()).then((h) => setSandbox(h.sandbox)).catch(() => {});
  }, []);
  const [, setLogins] = useState(0);
  const loggedIn = hasSession();
  const onLogin = () => setLogins((n) => n + 1);

  useEffect(() => {
    if (loggedIn && !account) api("/v1/account").then(setAccount).catch(() => setAccount(null));
  }, [loggedIn, path]);

  if (!loggedIn && path !== "/login") {
    document.title = "Log in · Ember";
    return html`<${Login} query=${new URLSearchParams({ next: path })} onLogin=${onLogin} />`;
  }
  for (const [pattern, Page, title] of ROUTES) {
    const match = path.match(pattern);
    if (!match) continue;
    document.title = `${title} · Ember`;
    if (Page === Login) return html`<${Login} query=${query} onLogin=${onLogin} />`;
    return html`
      <a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); document.getElementById("main").focus(); }}>Skip to content</a>
      <${Header} path=${path} account=${account} sandbox=${sandbox} />
      <main id="main" tabindex="-1">
        <${Page} params=${match.slice(1).map(decodeURIComponent)} query=${query} key=${path} />
      </main>`;
  }
  return html`<main id="main"><h1>Not found</h1><p>No page at ${path}. <a href="#/deployments">See the deployments.</a></p></main>`;
}

const root = document.getElementById("app");
// The first page needs to know whether the browser's session cookie still names a session.
resumeSession().then(() => {
  root.textContent = ""; // the "Loading" note shown until then
  render(html`<${App} />`, root);
});
