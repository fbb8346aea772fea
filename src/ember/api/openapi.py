"""The OpenAPI description completed with what FastAPI cannot see in the routes: the errors
each operation answers, in the shape it answers them, the bearer token the API asks for, and
the media types of answers that are not JSON.

The routes return prebuilt responses (`json_response`, files, server-sent events) and raise
`ApiError`, `NotFound`, `Conflict` or `InvalidRequest`, so FastAPI documents only a success
and its own 422. Here every authenticated operation gains 401 (no valid token), 403 (a token
without the scope needed), 429 (the token's rate limit) and 500; one with path parameters
404; one with parameters or a body 422 (400 on OpenAI's routes, which answer validation
errors as OpenAI does); one with a body 400 (unreadable) and 413 (too large); and the rest
as `EXTRA_STATUSES` lists. Errors are described in Replicate's shape, `{"title", "detail",
"status"}`, or on OpenAI's routes in OpenAI's, `{"error": {"message", "type", "param",
"code"}}` (see `api/errors.py`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from ember.api.errors import TITLES, is_openai_path

REPLICATE_ERROR = "Error"
OPENAI_ERROR = "OpenAIError"
BEARER = "bearer"

# Statuses an operation answers beyond the ones its shape implies (see the module docstring).
EXTRA_STATUSES: dict[tuple[str, str], tuple[int, ...]] = {
    ("POST", "/v1/predictions"): (400, 402, 404),
    ("GET", "/v1/predictions"): (400,),
    ("POST", "/v1/models/{owner}/{name}/predictions"): (400, 402),
    ("POST", "/v1/deployments/{owner}/{name}/predictions"): (400, 402),
    ("GET", "/v1/predictions/{prediction_id}"): (400,),
    ("POST", "/v1/models"): (409,),
    ("DELETE", "/v1/models/{owner}/{name}"): (409,),
    ("POST", "/v1/deployments"): (404, 409),
    ("GET", "/v1/deployments/{owner}/{name}/timeseries"): (400,),
    ("GET", "/v1/costs"): (400,),
    ("PATCH", "/v1/prices/{sku}"): (400,),
    ("POST", "/v1/budgets"): (404,),
    ("GET", "/v1/deployments/{owner}/{name}/advice"): (400,),
    ("POST", "/v1/chat/completions"): (402, 404),
    ("POST", "/v1/completions"): (402, 404),
    ("POST", "/v1/embeddings"): (402, 404),
    ("POST", "/v1/responses"): (402, 404),
    # Cog's container API: a webhook egress refuses (400), a budget (402), a taken id (409).
    ("POST", "/cog/{owner}/{name}/predictions"): (400, 402, 409),
    ("PUT", "/cog/{owner}/{name}/predictions/{prediction_id}"): (400, 402, 409),
}

# Answers that are not (only) JSON: what else each may be.
OTHER_MEDIA: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/v1/predictions/{prediction_id}/stream"): {"text/event-stream": {}},
    ("POST", "/v1/models/{owner}/{name}/versions"): {"text/event-stream": {}},
    ("POST", "/v1/chat/completions"): {"text/event-stream": {}},
    ("POST", "/v1/completions"): {"text/event-stream": {}},
    ("POST", "/v1/responses"): {"text/event-stream": {}},
    ("GET", "/v1/files/{file_id}/download"): {"*/*": {}},
    ("GET", "/v1/outputs/{prediction_id}/{name}"): {"*/*": {}},
}
# Answers that are never JSON: their documented JSON body is dropped.
NOT_JSON = {
    ("GET", "/v1/predictions/{prediction_id}/stream"),
    ("GET", "/v1/files/{file_id}/download"),
    ("GET", "/v1/outputs/{prediction_id}/{name}"),
}
# Downloads take a signed link instead of a token (how replicas fetch their inputs).
SIGNED = {("GET", "/v1/files/{file_id}/download"), ("GET", "/v1/outputs/{prediction_id}/{name}")}

SCHEMAS: dict[str, dict[str, Any]] = {
    REPLICATE_ERROR: {
        "title": "Error",
        "description": "Replicate's error: a validation error's `detail` lists the fields.",
        "type": "object",
        "required": ["title", "detail", "status"],
        "properties": {
            "title": {"type": "string"},
            "detail": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
                ]
            },
            "status": {"type": "integer"},
        },
    },
    OPENAI_ERROR: {
        "title": "OpenAIError",
        "description": "OpenAI's error: the `openai` client raises its typed exceptions from it.",
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
}
DESCRIPTIONS = {**TITLES, 402: "Budget exceeded", 500: "Ember failed to handle the request"}


def document_errors(app: FastAPI) -> None:
    """Make `app.openapi()` (and so /openapi.json) describe each operation's errors, its
    bearer token and its non-JSON answers."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            description = generate()  # FastAPI keeps it as app.openapi_schema
            components = description.setdefault("components", {})
            components.setdefault("schemas", {}).update(SCHEMAS)
            components["securitySchemes"] = {
                BEARER: {"type": "http", "scheme": "bearer", "description": "an Ember token"}
            }
            for path, operations in description["paths"].items():
                if path.startswith(("/v1/", "/cog/")):
                    for method, operation in operations.items():
                        _document(operation, method.upper(), path)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document(operation: dict[str, Any], method: str, path: str) -> None:
    """Add one operation's errors, security and media types (every /v1 and /cog route
    authenticates)."""
    key = (method, path)
    openai = is_openai_path(path)  # "/v1/models/{model_id}" is, "/v1/models/{owner}/{name}" not
    parameters = {parameter["in"] for parameter in operation.get("parameters", ())}
    statuses = {401, 403, 429, 500, *EXTRA_STATUSES.get(key, ())}
    if "path" in parameters:
        statuses.add(404)
    if parameters - {"path"} or "requestBody" in operation:
        statuses.add(400 if openai else 422)
    if "requestBody" in operation:
        # 400: a body that cannot be read (FastAPI: "error parsing the body"); 413: too large.
        statuses |= {400, 413}
    operation["security"] = [{BEARER: []}, {}] if key in SIGNED else [{BEARER: []}]
    responses = operation.setdefault("responses", {})
    if openai:
        responses.pop("422", None)  # OpenAI's routes answer a bad body with 400
    schema = OPENAI_ERROR if openai else REPLICATE_ERROR
    for status in sorted(statuses):
        responses[str(status)] = {
            "description": DESCRIPTIONS.get(status, "Error"),
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    success = next(code for code in responses if code.startswith("2"))
    content = responses[success].get("content")
    if content is not None:
        if key in NOT_JSON:
            content.pop("application/json", None)
        content.update(OTHER_MEDIA.get(key, {}))
