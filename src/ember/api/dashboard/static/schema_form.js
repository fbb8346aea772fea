// A form generated from a model's OpenAPI input schema (Cog's shape: `Input` with `x-order`,
// choices as `allOf: [{$ref}]` to an enum schema, files as `format: uri`, secrets as
// `format: password`). Every control has a label and a description tied to it, so it reads
// well with a screen reader and works from the keyboard alone.

import { html, useState } from "./vendor/preact-htm.js";
import { uploadFile } from "./api.js";

// One field's facts, with $refs and Optional's anyOf folded in.
export function fields(openapi) {
  const schemas = (openapi && openapi.components && openapi.components.schemas) || {};
  const input = schemas.Input || { properties: {} };
  const required = new Set(input.required || []);
  const resolve = (node) => {
    if (!node) return {};
    if (node.$ref) return resolve(schemas[node.$ref.split("/").pop()]);
    const parts = node.allOf || (node.anyOf && node.anyOf.filter((n) => n.type !== "null"));
    if (parts && parts.length === 1) {
      // A choice's $ref names an enum schema whose own title and description ("An
      // enumeration.") say nothing of the field.
      const { allOf, anyOf, ...rest } = node;
      const { title, description, ...target } = resolve(parts[0]);
      return { ...target, ...rest, nullable: Boolean(anyOf) || node.nullable };
    }
    return node;
  };
  return Object.entries(input.properties || {})
    .map(([name, raw]) => ({ name, ...resolve(raw), required: required.has(name) }))
    .sort((a, b) => (a["x-order"] ?? 1e9) - (b["x-order"] ?? 1e9));
}

function kindOf(field) {
  if (field.enum) return "choice";
  if (field.type === "boolean") return "boolean";
  if (field.type === "integer" || field.type === "number") return "number";
  if (field.type === "array") {
    const items = field.items || {};
    if (resolveFormat(items) === "uri") return "files";
    return ["string", "integer", "number"].includes(items.type) ? "list" : "json";
  }
  if (field.format === "uri") return "file";
  if (field.format === "password" || field["x-cog-secret"]) return "secret";
  if (field.type === "object") return "json";
  return "text";
}

function resolveFormat(items) {
  return items.format || (items.anyOf || []).map((i) => i.format).find(Boolean);
}

function initial(field) {
  const kind = kindOf(field);
  if (field.default === undefined || field.default === null) return kind === "boolean" ? false : "";
  if (kind === "list") return field.default.join("\n");
  if (kind === "json") return JSON.stringify(field.default, null, 2);
  return field.default;
}

// The form's values as the prediction's input: numbers as numbers, files uploaded, blanks of
// optional fields left out (the model's defaults apply).
async function toInput(list, values, files) {
  const input = {};
  for (const field of list) {
    const kind = kindOf(field);
    const value = values[field.name];
    if (kind === "file") {
      const chosen = files[field.name];
      if (chosen && chosen.length) input[field.name] = await uploadFile(chosen[0]);
      else if (value) input[field.name] = value;
      continue;
    }
    if (kind === "files") {
      const chosen = files[field.name];
      if (chosen && chosen.length) input[field.name] = await Promise.all([...chosen].map(uploadFile));
      continue;
    }
    if (kind === "boolean") {
      input[field.name] = Boolean(value);
      continue;
    }
    if (value === "" || value === undefined) continue;
    if (kind === "number" || (kind === "choice" && (field.type === "integer" || field.type === "number"))) {
      input[field.name] = Number(value);
    } else if (kind === "list") {
      const items = String(value).split("\n").map((s) => s.trim()).filter(Boolean);
      const numeric = field.items && (field.items.type === "integer" || field.items.type === "number");
      input[field.name] = numeric ? items.map(Number) : items;
    } else if (kind === "json") {
      try {
        input[field.name] = JSON.parse(value);
      } catch {
        throw new Error(`${field.name}: not valid JSON`);
      }
    } else {
      input[field.name] = value;
    }
  }
  return input;
}

function Control({ field, value, onValue, onFiles, describedBy }) {
  const id = `field-${field.name}`;
  const common = { id, name: field.name, "aria-describedby": describedBy, required: field.required };
  switch (kindOf(field)) {
    case "choice":
      return html`<select ...${common} value=${value} onChange=${(e) => onValue(e.target.value)}>
        ${field.required && value === "" ? html`<option value="">choose…</option>` : null}
        ${field.enum.map((choice) => html`<option value=${choice}>${choice}</option>`)}
      </select>`;
    case "boolean":
      return html`<input type="checkbox" ...${common} required=${false} checked=${Boolean(value)} onChange=${(e) => onValue(e.target.checked)} />`;
    case "number":
      return html`<input type="number" ...${common} value=${value}
        step=${field.type === "integer" ? 1 : "any"} min=${field.minimum ?? field.exclusiveMinimum} max=${field.maximum ?? field.exclusiveMaximum}
        onInput=${(e) => onValue(e.target.value)} />`;
    case "file":
      return html`<input type="file" ...${common} onChange=${(e) => onFiles(e.target.files)} />`;
    case "files":
      return html`<input type="file" multiple ...${common} onChange=${(e) => onFiles(e.target.files)} />`;
    case "secret":
      return html`<input type="password" autocomplete="off" ...${common} value=${value} onInput=${(e) => onValue(e.target.value)} />`;
    case "list":
    case "json":
      return html`<textarea rows="3" ...${common} value=${value} onInput=${(e) => onValue(e.target.value)}></textarea>`;
    default:
      return html`<input type="text" ...${common} value=${value}
        minlength=${field.minLength} maxlength=${field.maxLength} pattern=${field.pattern}
        onInput=${(e) => onValue(e.target.value)} />`;
  }
}

// "extra_file" → "Extra File", as Cog titles a field (a choice's schema carries no title).
function humanize(name) {
  return name.split("_").map((word) => word.charAt(0).toUpperCase() + word.slice(1)).join(" ");
}

function hint(field) {
  const kind = kindOf(field);
  const bits = [];
  if (field.description) bits.push(field.description);
  if (field.minimum !== undefined || field.maximum !== undefined) {
    bits.push(`from ${field.minimum ?? "–∞"} to ${field.maximum ?? "∞"}`);
  }
  if (kind === "list") bits.push("one item per line");
  if (kind === "files") bits.push("one or more files");
  if (field.default !== undefined && field.default !== null && kind !== "boolean") bits.push(`default: ${JSON.stringify(field.default)}`);
  if (field.deprecated) bits.push("deprecated");
  return bits.join(" · ");
}

export function SchemaForm({ openapi, onSubmit, busy, submitLabel = "Run" }) {
  const list = fields(openapi);
  const [values, setValues] = useState(() => Object.fromEntries(list.map((f) => [f.name, initial(f)])));
  const [files, setFiles] = useState({});
  const [error, setError] = useState(null);

  const submit = async (event) => {
    event.preventDefault();
    setError(null);
    try {
      await onSubmit(await toInput(list, values, files));
    } catch (err) {
      setError(err);
    }
  };

  return html`
    <form class="schema-form" onSubmit=${submit} aria-label="Model input">
      ${list.length === 0 ? html`<p class="muted">This model takes no input.</p>` : null}
      ${list.map((field) => {
        const help = hint(field);
        const describedBy = help ? `help-${field.name}` : undefined;
        return html`
          <div class=${`field field-${kindOf(field)}`}>
            <label for=${`field-${field.name}`}>${field.title || humanize(field.name)}${field.required ? html`<span class="required" aria-hidden="true"> *</span>` : null}</label>
            <${Control} field=${field} value=${values[field.name]} describedBy=${describedBy}
              onValue=${(v) => setValues({ ...values, [field.name]: v })}
              onFiles=${(f) => setFiles({ ...files, [field.name]: f })} />
            ${help ? html`<small id=${describedBy}>${help}</small>` : null}
          </div>`;
      })}
      ${error ? html`<p class="error" role="alert">${error.message}</p>` : null}
      <button type="submit" class="primary" disabled=${busy}>${busy ? "Running…" : submitLabel}</button>
    </form>`;
}
