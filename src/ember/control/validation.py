"""Validate prediction inputs against a version's OpenAPI schema before accepting them.

The worker validates again with the predictor's own types; this check runs in the gateway so a
bad request gets a 422 at once, even while no replica is running. Errors are reported the
way Cog reports them: `{"loc": ["body", "input", field], "msg": ..., "type": ...}`.
"""

from __future__ import annotations

import binascii
import copy
import re
from typing import Any

import jsonschema

from ember.control.sealing import secret_fields

MISSING = "missing"
MESSAGE_LIMIT = 300  # jsonschema quotes the value: a 50 MB string must not come back whole
_DATA_URI = re.compile(r"^data:[\w.+-]*/?[\w.+-]*(;[^;,]*)*,", re.I)


def _nullable_to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` → JSON Schema's null type, recursively."""
    if isinstance(node, list):
        return [_nullable_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {key: _nullable_to_json_schema(value) for key, value in node.items()}
    if result.pop("nullable", False):
        return {"anyOf": [result, {"type": "null"}]}
    return result


def _inline_refs(node: Any, components: dict[str, Any]) -> Any:
    """Replace `#/components/schemas/X` references by their targets, once, so validation
    does not resolve references on every request (most of its cost otherwise)."""
    if isinstance(node, list):
        return [_inline_refs(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node and node["$ref"].startswith(REF_PREFIX):
        target = components[node["$ref"][len(REF_PREFIX) :]]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _inline_refs({**target, **rest}, components)
    return {key: _inline_refs(value, components) for key, value in node.items()}


REF_PREFIX = "#/components/schemas/"


class InputValidator:
    def __init__(self, openapi_schema: dict[str, Any]) -> None:
        components = copy.deepcopy(openapi_schema.get("components", {}).get("schemas", {}))
        schema = _inline_refs(components.get("Input", {"type": "object"}), components)
        self._validator = jsonschema.Draft202012Validator(_nullable_to_json_schema(schema))
        self._file_fields = _file_fields(schema)
        # Read once per version here, not per prediction: the inputs to seal and redact.
        self.secret_fields = secret_fields(openapi_schema)

    def errors(self, value: Any) -> list[dict[str, Any]]:
        """Cog-style error details; empty when the input is valid."""
        if self._validator.is_valid(value):  # the common case, without building error objects
            return self._file_errors(value)
        details = []
        for error in self._validator.iter_errors(value):
            path = list(error.absolute_path)
            if error.validator == "required":
                missing = error.message.split("'")[1] if "'" in error.message else ""
                details.append(
                    {
                        "loc": ["body", "input", *path, missing],
                        "msg": "Field required",
                        "type": MISSING,
                    }
                )
            elif error.validator == "additionalProperties" and error.validator_value is False:
                details.append(
                    {
                        "loc": ["body", "input", *path],
                        "msg": error.message,
                        "type": "extra_forbidden",
                    }
                )
            else:
                details.append(
                    {
                        "loc": ["body", "input", *path],
                        "msg": _shortened(error.message),
                        "type": str(error.validator),
                    }
                )
        return sorted(details, key=lambda d: [str(part) for part in d["loc"]])

    def file_urls(self, value: dict[str, Any]) -> list[tuple[list[Any], str]]:
        """(where, URL) of every http(s) URL given for a file input."""
        found = []
        for name, is_list in self._file_fields.items():
            given = value.get(name)
            items = given if is_list and isinstance(given, list) else [given]
            for index, item in enumerate(items):
                if isinstance(item, str) and item.startswith(("http://", "https://")):
                    found.append((["body", "input", name, *([index] if is_list else [])], item))
        return found

    def _file_errors(self, value: dict[str, Any]) -> list[dict[str, Any]]:
        """File inputs must be http(s) URLs or well-formed data URIs: a broken one is a 422
        now, not a failed prediction after a replica has started for it."""
        details = []
        for name, is_list in self._file_fields.items():
            given = value.get(name)
            items = given if is_list and isinstance(given, list) else [given]
            for index, item in enumerate(items):
                problem = file_value_problem(item) if isinstance(item, str) else None
                if problem:
                    where = ["body", "input", name, *([index] if is_list else [])]
                    details.append({"loc": where, "msg": problem, "type": "file"})
        return details


def _file_fields(schema: dict[str, Any]) -> dict[str, bool]:
    """Input name → whether it is a list, for inputs that are files (`format: uri`)."""
    fields = {}
    for name, spec in schema.get("properties", {}).items():
        options = [spec, *spec.get("anyOf", [])]
        for option in options:
            if option.get("format") == "uri":
                fields[name] = False
            elif option.get("items", {}).get("format") == "uri":
                fields[name] = True
    return fields


def file_value_problem(value: str) -> str | None:
    """Why a file input's value cannot be fetched, or None."""
    if value.startswith(("http://", "https://")):
        return None
    if not value.lower().startswith("data:"):
        return (
            f"{_shortened(value, 60)!r} is not an http(s) URL or a data: URI: upload the file "
            "(POST /v1/files) and pass its URL, or encode it as a data URI"
        )
    header = _DATA_URI.match(value[:1024])
    if header is None:
        return "the data URI is broken: it must look like data:<type>;base64,<data>"
    if header.group(0).lower().endswith(";base64,"):
        try:
            binascii.a2b_base64(value[header.end() :], strict_mode=True)
        except binascii.Error as exc:
            return f"the data URI's base64 data is broken ({exc}): encode the file again"
    return None


def _shortened(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
