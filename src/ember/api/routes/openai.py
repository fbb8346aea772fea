"""OpenAI's API: chat completions, completions and embeddings, served by deployments whose
predictor handles them (an engine from `ember.yaml`, or a class with Truss's hooks).

Each request becomes an ordinary prediction of the deployment, so it queues, scales from
zero, is metered by the ledger and shows in the history like any other; the gateway only
validates the body, picks the deployment the `model` field names, and frames the answer:
JSON, or server-sent events ending in `data: [DONE]` as OpenAI's clients expect. Errors come
in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`, see `api/errors.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from ember.api import guards
from ember.api.auth import principal
from ember.api.errors import ApiError
from ember.api.responses import json_response
from ember.control.access import Principal
from ember.control.deployments import Target
from ember.control.intake import Submission
from ember.control.platform import Platform
from ember.control.predictions import PredictionState, StreamEvent

router = APIRouter(prefix="/v1", tags=["openai"])
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
    target = platform.deployments.openai_models(guards.visible_owner(caller)).get(model_id)
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
    names = platform.deployments.openai_models(guards.visible_owner(caller))
    ordered = sorted(names, key=lambda name: ("/" not in name, name))
    return [model_object(name, names[name]) for name in ordered]


async def _serve(request: Request, route: str, body: _Request, caller: Caller) -> Response:
    platform: Platform = request.app.state.platform
    if getattr(body, "stream_options", None) is not None and not getattr(body, "stream", False):
        raise ApiError(
            400, "stream_options is only allowed when stream is true", param="stream_options"
        )
    target = guards.openai_target(platform, caller, body.model, route)
    # The answer is bound to this connection: nobody can ask for it later, so it is written
    # only when it ends.
    submission = Submission(body.model_dump(exclude_none=True), method=route, durable=False)
    accepted = await platform.intake.submit(target, submission, caller)
    state, events = accepted.state, accepted.events
    if events is None:
        if not await _until_done_or_gone(request, state):
            platform.deployments.stop_prediction(state)
            return Response(status_code=499)
        return _final_answer(state)
    first = await _first_event(request, state, events)
    if first is None:
        platform.deployments.stop_prediction(state)
        return Response(status_code=499)
    if first.kind == "done" and state.status != "succeeded":
        return _final_answer(state)  # failed before any output: a proper error status
    return _EventStream(platform, state, events, first)


class _EventStream(StreamingResponse):
    """Server-sent events of an OpenAI stream. However the response ends (the answer is
    complete, the client hung up, the server is stopping) a prediction still running is
    canceled: nobody is left to read it, and its replica has other work."""

    def __init__(
        self,
        platform: Platform,
        state: PredictionState,
        events: asyncio.Queue[StreamEvent],
        first: StreamEvent,
    ) -> None:
        super().__init__(
            _sse(state, events, first),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.platform, self.state, self.events = platform, state, events

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.state.unsubscribe(self.events)
            if not self.state.terminal:
                self.platform.deployments.stop_prediction(self.state)


async def _until_done_or_gone(request: Request, state: PredictionState) -> bool:
    """Wait for the prediction; False if the client hung up first (then it is canceled:
    nobody is left to read the answer)."""
    done = asyncio.ensure_future(state.done.wait())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        done.cancel()
    return state.terminal


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _first_event(
    request: Request, state: PredictionState, events: asyncio.Queue[StreamEvent]
) -> StreamEvent | None:
    """The first output (or the end): only then does the status line go out, so a request
    the engine refuses still gets its 400. None when the client hung up first."""
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        while True:
            got = asyncio.ensure_future(events.get())
            try:
                await asyncio.wait({got, gone}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                got.cancel()
                raise
            if not got.done():  # the client hung up
                got.cancel()
                state.unsubscribe(events)
                return None
            event = got.result()
            if event.kind in ("output", "done"):
                return event
    finally:
        gone.cancel()


async def _sse(
    state: PredictionState, events: asyncio.Queue[StreamEvent], first: StreamEvent
) -> AsyncIterator[bytes]:
    event = first
    while event.kind != "done":
        if event.kind == "output":
            yield b"data: " + orjson.dumps(event.data) + b"\n\n"
        event = await events.get()
    if state.status == "succeeded":
        if isinstance(state.output, dict):  # a handler that answered whole though asked to stream
            yield b"data: " + orjson.dumps(state.output) + b"\n\n"
    else:
        # Mid-stream failure: the status line is long gone, so the error rides the stream,
        # then [DONE] as vLLM's server does (clients reading until [DONE] stop cleanly).
        yield b"data: " + orjson.dumps(_error_body(state)) + b"\n\n"
    yield DONE
    state.keep_summary()


def _final_answer(state: PredictionState) -> Response:
    if state.status == "succeeded":
        response = json_response(state.output)
        state.keep_summary()  # the vectors or text are out: keep the history small
        return response
    status = 400 if state.validation else 499 if state.status == "canceled" else 500
    return json_response(_error_body(state), status)


def _error_body(state: PredictionState) -> dict[str, Any]:
    if state.validation:
        first = state.validation[0]
        param = first["loc"][-1] if len(first["loc"]) > 1 else None
        return {
            "error": {
                "message": first["msg"],
                "type": "invalid_request_error",
                "param": param,
                "code": None,
            }
        }
    return {
        "error": {
            "message": state.error or f"the prediction was {state.status}",
            "type": "server_error",
            "param": None,
            "code": state.status,
        }
    }
