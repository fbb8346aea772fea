// Log in with an API token: the server checks it and opens a session; the page keeps no token.

import { html, useState } from "../vendor/preact-htm.js";
import { logIn } from "../api.js";
import { Flame } from "../flame.js";

export function Login({ query, onLogin }) {
  const [value, setValue] = useState("");
  const [remember, setRemember] = useState(false);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await logIn(value.trim(), remember);
      const next = query.get("next");
      location.hash = `#${next && next !== "/login" ? next : "/deployments"}`;
      onLogin();
    } catch (err) {
      setError(err.status === 401 ? "That token is not valid here. `ember serve` printed the admin token when it first started; an admin makes more with `ember token create`." : err.message);
    } finally {
      setBusy(false);
    }
  };

  return html`
    <main id="main" class="login">
      <h1><${Flame} /> Ember</h1>
      <form onSubmit=${submit} aria-label="Log in">
        <div class="field">
          <label for="token">API token</label>
          <input id="token" name="token" type="password" autocomplete="current-password" required autofocus
            placeholder="r8_…" value=${value} onInput=${(e) => setValue(e.target.value)} aria-describedby="token-help" />
          <small id="token-help">The token \`ember serve\` printed at its first start, or one from \`ember token create\`.</small>
        </div>
        <div class="field field-boolean">
          <label for="remember">Remember on this browser</label>
          <input id="remember" type="checkbox" checked=${remember} onChange=${(e) => setRemember(e.target.checked)} />
        </div>
        ${error ? html`<p class="error" role="alert">${error}</p>` : null}
        <button type="submit" class="primary" disabled=${busy}>Log in</button>
      </form>
    </main>`;
}
