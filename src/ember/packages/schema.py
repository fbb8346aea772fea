"""The OpenAPI document of a predictor, in the shape Cog 0.16 emits.

Replicate's clients and tools read a model version's `openapi_schema`: `Input` and `Output`
components, `x-order` on inputs, one enum component per `choices` input referenced with
`allOf`, `x-cog-array-type: iterator` (and `x-cog-array-display: concatenate`) on streamed
outputs, `format: uri` on files, OpenAPI 3.0 `nullable` instead of JSON Schema's null type.
Input and output schemas come from pydantic; this module adjusts them to Cog's dialect and
wraps them in the fixed prediction endpoints every Cog model has.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, TypeAdapter

from ember.packages.predictor import Predictor, iterator_item

REF_TEMPLATE = "#/components/schemas/{model}"
_NULL = {"type": "null"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=name)}


def _to_openapi_30(node: Any) -> Any:
    """Rewrite JSON Schema's `anyOf: [X, null]` into OpenAPI 3.0's `X` + `nullable: true`."""
    if isinstance(node, list):
        return [_to_openapi_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key == "default" and value is None:  # Cog leaves null defaults out
            continue
        if key == "anyOf" and isinstance(value, list) and _NULL in value:
            others = [_to_openapi_30(v) for v in value if v != _NULL]
            if len(others) == 1:
                result.update(others[0])
            elif others:
                result["anyOf"] = others
            result["nullable"] = True
        else:
            result[key] = _to_openapi_30(value)
    return result


def _drop_nullable_from_required(schema: dict[str, Any]) -> None:
    """A nullable property may be omitted: Cog lists only non-nullable ones as required."""
    if "required" in schema:
        properties = schema.get("properties", {})
        schema["required"] = [
            name for name in schema["required"] if not properties.get(name, {}).get("nullable")
        ]


def _describe_enums(components: dict[str, Any]) -> None:
    for schema in components.values():
        if schema.get("enum"):
            schema.setdefault("description", "An enumeration.")


def _hoist(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    return schema


def _without_open_objects(node: Any) -> Any:
    """Drop `additionalProperties: true` (JSON Schema's default anyway) from a `dict` input.

    Cog's schema writes a bare `dict` / `list[dict]` input as `{"type": "object"}`; pydantic
    adds the redundant `additionalProperties: true`, which clients comparing schemas trip on.
    """
    if isinstance(node, list):
        return [_without_open_objects(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: _without_open_objects(value)
        for key, value in node.items()
        if not (key == "additionalProperties" and value is True)
    }


def input_schema(predictor: Predictor, components: dict[str, Any]) -> dict[str, Any]:
    schema = _hoist(predictor.input_model.model_json_schema(ref_template=REF_TEMPLATE), components)
    schema = _to_openapi_30(schema)
    # Cog lists inputs declared without a default as required, then drops the nullable ones.
    declared_required = [f.name for f in predictor.inputs if f.spec.required]
    if declared_required:
        schema["required"] = declared_required
    for name, prop in schema.get("properties", {}).items():
        prop = _without_open_objects(prop)
        if "$ref" in prop and len(prop) > 1:  # siblings of a $ref need allOf in OpenAPI 3.0
            prop["allOf"] = [{"$ref": prop.pop("$ref")}]
            prop.pop("title", None)
        for bound in ("minimum", "maximum"):
            if bound in prop:  # Cog's Input types ge/le as float
                prop[bound] = float(prop[bound])
        schema["properties"][name] = prop
    _drop_nullable_from_required(schema)
    if predictor.accepts_extra_inputs:
        schema["additionalProperties"] = True
    return schema


def _type_schema(annotation: Any, components: dict[str, Any]) -> dict[str, Any]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        schema = annotation.model_json_schema(ref_template=REF_TEMPLATE)
    else:
        schema = TypeAdapter(annotation).json_schema(ref_template=REF_TEMPLATE)
    schema = _to_openapi_30(_hoist(schema, components))
    for definition in components.values():
        _drop_nullable_from_required(definition)
    _drop_nullable_from_required(schema)
    return schema


def output_schema(predictor: Predictor, components: dict[str, Any]) -> dict[str, Any]:
    streamed = iterator_item(predictor.output_type)
    if streamed is not None:
        item, concatenate = streamed
        schema: dict[str, Any] = {
            "title": "Output",
            "type": "array",
            "items": _type_schema(item, components),
            "x-cog-array-type": "iterator",
        }
        if concatenate:
            schema["x-cog-array-display"] = "concatenate"
        return schema
    schema = _type_schema(predictor.output_type, components)
    schema["title"] = "Output"
    return schema


def openapi_schema(predictor: Predictor) -> dict[str, Any]:
    """The whole OpenAPI document, as Cog 0.16's server would serve it for this predictor."""
    components: dict[str, Any] = {}
    components["Input"] = input_schema(predictor, components)
    components["Output"] = output_schema(predictor, components)
    components.update(copy.deepcopy(_STANDARD_COMPONENTS))
    _describe_enums(components)
    info: dict[str, Any] = {"title": "Cog", "version": "0.1.0"}
    if predictor.openai:
        # Which OpenAI routes the model serves: the gateway reads this from the version.
        info["x-ember-openai"] = sorted(predictor.openai)
    paths = copy.deepcopy(_PATHS)
    if getattr(predictor.predict, "__cog_streaming__", False):
        # Cog's mark of a model whose container API serves server-sent events (@streaming).
        paths["/predictions"]["post"]["x-cog-streaming"] = True
    return {
        "openapi": "3.0.2",
        "info": info,
        "paths": paths,
        "components": {"schemas": components},
    }


def _nullable(schema: dict[str, Any], title: str) -> dict[str, Any]:
    return {**schema, "nullable": True, "title": title}


_DATETIME = {"type": "string", "format": "date-time"}
_STRING = {"type": "string"}

_STANDARD_COMPONENTS: dict[str, Any] = {
    "Status": {
        "title": "Status",
        "type": "string",
        "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
    },
    "WebhookEvent": {
        "title": "WebhookEvent",
        "type": "string",
        "enum": ["start", "output", "logs", "completed"],
    },
    "PredictionRequest": {
        "title": "PredictionRequest",
        "type": "object",
        "properties": {
            "id": _nullable(_STRING, "Id"),
            "created_at": _nullable(_DATETIME, "Created At"),
            "context": _nullable(
                {"type": "object", "additionalProperties": {"type": "string"}}, "Context"
            ),
            "input": {**_ref("Input"), "nullable": True},
            "output_file_prefix": _nullable(_STRING, "Output File Prefix"),
            "webhook": _nullable(
                {"type": "string", "format": "uri", "minLength": 1, "maxLength": 65536},
                "Webhook",
            ),
            "webhook_events_filter": {
                "type": "array",
                "items": _ref("WebhookEvent"),
                "default": ["start", "output", "logs", "completed"],
                "nullable": True,
            },
        },
    },
    "PredictionResponse": {
        "title": "PredictionResponse",
        "type": "object",
        "properties": {
            "id": _nullable(_STRING, "Id"),
            "version": _nullable(_STRING, "Version"),
            "created_at": _nullable(_DATETIME, "Created At"),
            "started_at": _nullable(_DATETIME, "Started At"),
            "completed_at": _nullable(_DATETIME, "Completed At"),
            "input": {**_ref("Input"), "nullable": True},
            "output": _ref("Output"),
            "logs": {"title": "Logs", "type": "string", "default": ""},
            "error": _nullable(_STRING, "Error"),
            "status": {**_ref("Status"), "nullable": True},
            "metrics": _nullable({"type": "object", "additionalProperties": True}, "Metrics"),
        },
    },
    "ValidationError": {
        "title": "ValidationError",
        "type": "object",
        "required": ["loc", "msg", "type"],
        "properties": {
            "loc": {
                "title": "Location",
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"},
        },
    },
    "HTTPValidationError": {
        "title": "HTTPValidationError",
        "type": "object",
        "properties": {
            "detail": {"title": "Detail", "type": "array", "items": _ref("ValidationError")}
        },
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    return {**_json(schema), "description": "Successful Response"}


_INVALID = {**_json(_ref("HTTPValidationError")), "description": "Validation Error"}
_PREFER = {
    "in": "header",
    "name": "prefer",
    "required": False,
    "schema": {"title": "Prefer", "type": "string"},
}
_PREDICTION_ID = {
    "in": "path",
    "name": "prediction_id",
    "required": True,
    "schema": {"title": "Prediction ID", "type": "string"},
}


def _untyped(summary: str, operation_id: str, response_title: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": operation_id,
        "responses": {"200": _ok({"title": response_title})},
    }


_PATHS: dict[str, Any] = {
    "/": {"get": _untyped("Root", "root__get", "Response Root  Get")},
    "/health-check": {
        "get": _untyped(
            "Healthcheck", "healthcheck_health_check_get", "Response Healthcheck Health Check Get"
        )
    },
    "/predictions": {
        "post": {
            "summary": "Predict",
            "description": "Run a single prediction on the model",
            "operationId": "predict_predictions_post",
            "parameters": [_PREFER],
            "requestBody": _json(_ref("PredictionRequest")),
            "responses": {"200": _ok(_ref("PredictionResponse")), "422": _INVALID},
        }
    },
    "/predictions/{prediction_id}": {
        "put": {
            "summary": "Predict Idempotent",
            "description": "Run a single prediction on the model (idempotent creation).",
            "operationId": "predict_idempotent_predictions__prediction_id__put",
            "parameters": [_PREDICTION_ID, _PREFER],
            "requestBody": {
                **_json({"title": "Prediction Request", "allOf": [_ref("PredictionRequest")]}),
                "required": True,
            },
            "responses": {"200": _ok(_ref("PredictionResponse")), "422": _INVALID},
        }
    },
    "/predictions/{prediction_id}/cancel": {
        "post": {
            "summary": "Cancel",
            "description": "Cancel a running prediction",
            "operationId": "cancel_predictions__prediction_id__cancel_post",
            "parameters": [_PREDICTION_ID],
            "responses": {
                "200": _ok({"title": "Response Cancel Predictions  Prediction Id  Cancel Post"}),
                "422": _INVALID,
            },
        }
    },
    "/shutdown": {
        "post": _untyped(
            "Start Shutdown",
            "start_shutdown_shutdown_post",
            "Response Start Shutdown Shutdown Post",
        )
    },
}
