"""Validate prediction inputs against a version's OpenAPI schema before accepting them.

The worker validates again with the predictor's own types; this check runs in the gateway so a
bad request gets a 422 at once, even while no replica is running. Errors are reported the
way Cog reports them: `{"loc": ["body", "input", field], "msg": ..., "type": ...}`.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

MISSING = "missing"


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

    def errors(self, value: Any) -> list[dict[str, Any]]:
        """Cog-style error details; empty when the input is valid."""
        if self._validator.is_valid(value):  # the common case, without building error objects
            return []
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
                        "msg": error.message,
                        "type": str(error.validator),
                    }
                )
        return sorted(details, key=lambda d: [str(part) for part in d["loc"]])
