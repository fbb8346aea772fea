// Ember's mark, drawn inline (no font on a server has an emoji to rely on).

import { html } from "./vendor/preact-htm.js";

export function Flame() {
  return html`<svg class="flame" viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
    <path fill="#f26b3a" d="M12 2c1 4 5 6 5 11a5 5 0 0 1-10 0c0-2.5 1.5-4 2.5-5 0 2 1 3 2 3.5C11 9 10.5 5.5 12 2z"/></svg>`;
}
