"""OpenAI's API: chat completions, completions and embeddings, served by deployments whose
predictor handles them (an engine from `ember.yaml`, or a class with Truss's hooks).

Each request becomes an ordinary prediction of the deployment, so it queues, scales from
zero, is metered by the ledger and shows in the history like any other; the gateway only
validates the body, picks the deployment the `model` field names, and frames the answer:
JSON, or server-sent events ending in `data: [DONE]` as OpenAI's clients expect. Errors come
in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`, see `api/errors.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from ember.api import guards
from ember.api.auth import principal
from ember.api.errors import ApiError
from ember.api.responses import json_response
from ember.api.routes.openai_relay import (
    ClientGone,
    EventStream,
    error_body,
    failure_status,
    outputs,
    relay,
)
from ember.api.strict_json import StrictJSONRoute
from ember.control.access import Principal
from ember.control.deployments import Target
from ember.control.platform import Platform
from ember.control.predictions import PredictionState

router = APIRouter(prefix="/v1", tags=["openai"], route_class=StrictJSONRoute)
Caller = Annotated[Principal, Depends(principal)]
DONE = b"data: [DONE]\n\n"


class _Request(BaseModel):
    # Fields OpenAI has and engines add (vLLM's top_k, min_p...) pass through to the engine,
    # which answers 400 for what it cannot honour rather than ignoring it.
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, description="a deployment (owner/name) or an alias")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool = False


class _Generation(_Request):
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    user: str | None = None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class ChatCompletionRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False


class EmbeddingRequest(_Request):
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


@router.post("/chat/completions")
async def chat_completions(
    request: Request, body: ChatCompletionRequest, caller: Caller
) -> Response:
    """Chat with an LLM deployment; `stream: true` answers with server-sent events."""
    return await _serve(request, "chat.completions", body, caller)


@router.post("/completions")
async def completions(request: Request, body: CompletionRequest, caller: Caller) -> Response:
    """Complete a prompt with an LLM deployment."""
    return await _serve(request, "completions", body, caller)


@router.post("/embeddings")
async def embeddings(request: Request, body: EmbeddingRequest, caller: Caller) -> Response:
    """Embed text with an embeddings deployment."""
    return await _serve(request, "embeddings", body, caller)


@router.get("/models/{model_id}")
async def retrieve_model(request: Request, model_id: str, caller: Caller) -> Response:
    """An OpenAI model object for an alias or a bare deployment name (`owner/name` is
    answered by the Replicate route, with the same OpenAI fields added)."""
    platform: Platform = request.app.state.platform
    target = platform.deployments.openai_models(guards.visible_owner(caller), caller.owner).get(
        model_id
    )
    if target is None:
        raise ApiError(
            404, f"The model `{model_id}` does not exist or you do not have access to it."
        )
    return json_response(model_object(model_id, target))


def model_object(name: str, target: Target) -> dict[str, Any]:
    """OpenAI's model object for one name a deployment answers to."""
    return {
        "id": name,
        "object": "model",
        "created": int(target.version.created_at.timestamp()),
        "owned_by": target.model.partition("/")[0],
        "root": target.deployment,
    }


def model_list(platform: Platform, caller: Principal) -> list[dict[str, Any]]:
    """Every name the caller's OpenAI clients may use, deployments first, then aliases."""
    names = platform.deployments.openai_models(guards.visible_owner(caller), caller.owner)
    ordered = sorted(names, key=lambda name: ("/" not in name, name))
    return [model_object(name, names[name]) for name in ordered]


async def _serve(request: Request, route: str, body: _Request, caller: Caller) -> Response:
    platform: Platform = request.app.state.platform
    if getattr(body, "stream_options", None) is not None and not getattr(body, "stream", False):
        raise ApiError(
            400, "stream_options is only allowed when stream is true", param="stream_options"
        )
    target = guards.openai_target(platform, caller, body.model, route)
    try:
        relayed = await relay(
            request, platform, target, body.model_dump(exclude_none=True), route, caller
        )
    except ClientGone:
        return Response(status_code=499)
    state, events, first = relayed.state, relayed.events, relayed.first
    if events is None or first is None:
        return _final_answer(state)
    return EventStream(platform, state, events, _sse(state, outputs(events, first)))


async def _sse(state: PredictionState, chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    if state.status == "succeeded":
        if isinstance(state.output, dict):  # a handler that answered whole though asked to stream
            yield b"data: " + orjson.dumps(state.output) + b"\n\n"
    else:
        # Mid-stream failure: the status line is long gone, so the error rides the stream,
        # then [DONE] as vLLM's server does (clients reading until [DONE] stop cleanly).
        yield b"data: " + orjson.dumps(error_body(state)) + b"\n\n"
    yield DONE
    state.keep_summary()


def _final_answer(state: PredictionState) -> Response:
    if state.status == "succeeded":
        response = json_response(state.output)
        state.keep_summary()  # the vectors or text are out: keep the history small
        return response
    return json_response(error_body(state), failure_status(state))
