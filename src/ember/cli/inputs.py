"""Turn `-i key=value` command-line inputs into typed JSON using the model's schema.

Values are converted by the type the schema declares (integer, number, boolean, array, object),
`@path` reads a local file into a data URI, and repeating a key builds a list — so
`-i steps=20 -i image=@cat.png -i words=a -i words=b` does what it says.
"""

from __future__ import annotations

import base64
import json
import mimetypes
from pathlib import Path
from typing import Any


class InputSyntaxError(ValueError):
    """A command-line input that cannot be read; the message says how to write it."""


def data_uri(path: Path) -> str:
    if not path.is_file():
        raise InputSyntaxError(f"@{path}: no such file")
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _components(schema: dict[str, Any] | None) -> dict[str, Any]:
    """The OpenAPI document's schemas (`Input`, its enums), empty when there is none."""
    return (schema or {}).get("components", {}).get("schemas", {})


def _property_type(schema: dict[str, Any] | None, name: str) -> tuple[str | None, str | None]:
    """(type, item type) of an input in the OpenAPI document, resolving enum references."""
    components = _components(schema)
    prop = components.get("Input", {}).get("properties", {}).get(name)
    if prop is None:
        return None, None
    for ref in prop.get("allOf", []):
        prop = {**components.get(ref["$ref"].rsplit("/", 1)[-1], {}), **prop}
    items = prop.get("items", {})
    return prop.get("type"), items.get("type")


def _convert(raw: str, kind: str | None, name: str) -> Any:
    if raw.startswith("@"):
        return data_uri(Path(raw[1:]).expanduser())
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
        if kind == "boolean":
            lowered = raw.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return lowered in ("true", "1", "yes")
        if kind in ("array", "object") or kind is None:
            try:
                return json.loads(raw)
            except json.JSONDecodeError:
                if kind is None:
                    return raw
                raise
    except ValueError:
        raise InputSyntaxError(f"input {name}: {raw!r} is not a valid {kind}") from None
    return raw


def _check_known(schema: dict[str, Any] | None, name: str) -> None:
    """Refuse an input the model does not take, as `cog predict` does: a misspelt name would
    otherwise be dropped and the model run with its default."""
    known = _components(schema).get("Input", {}).get("properties")
    if known is not None and name not in known:
        takes = ", ".join(sorted(known)) or "no inputs"
        raise InputSyntaxError(f'unknown input "{name}": this model takes {takes}')


def parse_inputs(pairs: list[str], schema: dict[str, Any] | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise InputSyntaxError(
                f"{pair!r} is not key=value: write e.g. -i prompt='a cat' or -i image=@cat.png"
            )
        _check_known(schema, name)
        kind, item_kind = _property_type(schema, name)
        if kind == "array" and not raw.startswith("["):
            values.setdefault(name, []).append(_convert(raw, item_kind, name))
        else:
            values[name] = _convert(raw, kind, name)
    _check_required(schema, values)
    return values


def _check_required(schema: dict[str, Any] | None, values: dict[str, Any]) -> None:
    """Refuse before anything runs when a required input is missing (as `cog predict`)."""
    required = _components(schema).get("Input", {}).get("required", [])
    missing = [name for name in required if name not in values]
    if missing:
        names = ", ".join(f'"{name}"' for name in missing)
        example = " ".join(f"-i {name}=..." for name in missing)
        raise InputSyntaxError(f"missing required input {names}: add {example}")
