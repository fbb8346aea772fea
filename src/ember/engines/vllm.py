"""LLMs on NVIDIA GPUs with vLLM: OpenAI's chat and completions API, and a streaming predict().

vLLM batches continuously: every request in flight joins the GPU's next decoding step, so
one replica serves many requests at once (64 by default: the engine's entry in
``ember/packages/engines.py``) and gains throughput with each, up to the KV cache's
capacity. All handlers are `async` and run on the worker's event loop, which is where vLLM's
`AsyncLLM` lives; nothing here blocks it for long.

Prompts are rendered and tokenized here, not inside vLLM, so the engine knows the prompt's
exact token count before it submits anything: a prompt that does not fit the context is a
400 naming the field to shorten (as OpenAI answers), the usage is exact, and the cost ledger
gets `input_token_count` and `output_token_count`. vLLM then receives token ids.

Engine options (``engine_options`` in ``ember.yaml``) are vLLM's own engine arguments
(``AsyncEngineArgs``: ``max_model_len``, ``gpu_memory_utilization``, ``dtype``,
``tensor_parallel_size``, ``quantization``, ``enforce_eager``, ``max_num_seqs``...), passed
through unchanged, plus Ember's ``chat_template`` (a Jinja template string, for models whose
tokenizer has none). ``disable_log_stats`` defaults to true: vLLM's periodic stats lines would
flood the replica's logs, and Ember meters the replica itself.

Refused with a 400 rather than half-honoured: tools and tool calls, non-text message parts,
``response_format`` other than text, and echo together with logprobs (that needs the
prompt's logprobs).

vLLM (and CUDA) are imported in `setup()`, not at import: the worker may import this module
in a warm host that forks replicas, and CUDA cannot cross a fork. `setup()` is async, so it
runs in each replica, on the loop the handlers use.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.engines import openai_shapes as shapes
from ember.engines.base import RequestError, say
from ember.scope import record_metric
from ember.types import AsyncConcatenateIterator, Input, InputSpec

ENGINE = "vllm"  # also the prefix of this engine's setup lines
# Fields beyond OpenAI's own (openai_shapes) that vLLM honours, which the gateway passes on.
VLLM_FIELDS = shapes.VLLM_SAMPLING_FIELDS | {
    "min_tokens",
    "ignore_eos",
    "stop_token_ids",
    "logit_bias",
    "response_format",
}
SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "top_k",
    "min_p",
    "repetition_penalty",
    "min_tokens",
    "ignore_eos",
    "stop_token_ids",
)
LOGPROB_FLOOR = -9999.0  # what OpenAI reports for a token with no probability left


@dataclass
class _Choice:
    """One choice as generated so far."""

    text: str = ""
    tokens: int = 0
    finish: str | None = None
    logprobs: list[shapes.TokenLogprob] = field(default_factory=list)


@dataclass
class _Step:
    """What one engine output added to one choice."""

    index: int
    text: str
    logprobs: list[shapes.TokenLogprob]
    finish: str | None
    offset: int  # where `text` starts in the choice's generated text


@dataclass
class _Plan:
    """A validated request, ready for the engine: one entry per prompt, `n` choices each."""

    prompts: list[list[int]]
    params: list[Any]  # vllm.SamplingParams, one per prompt
    asked: shapes.Asked

    @property
    def n(self) -> int:
        return self.asked.n

    @property
    def top_logprobs(self) -> int | None:  # None: the client asked for no logprobs
        return self.asked.top_logprobs

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for ids in self.prompts)

    def choices(self) -> dict[int, _Choice]:
        return {i: _Choice() for i in range(len(self.prompts) * self.n)}


class Engine:
    """A vLLM `AsyncLLM` serving OpenAI's chat completions, completions, and `predict()`."""

    def __init__(self, model: Path | None, options: dict[str, Any]) -> None:
        self.model_path = model
        self.engine_args = dict(options)
        self.chat_template: str | None = self.engine_args.pop("chat_template", None)
        self.engine: Any = None
        self.tokenizer: Any = None
        self.context_length = 0
        self.defaults: dict[str, Any] = {}
        self._vllm: dict[str, Any] = {}
        self._client_errors: tuple[type[BaseException], ...] = (ValueError,)

    # -- loading --------------------------------------------------------------------------

    async def setup(self) -> None:
        """Start vLLM's engine on the model folder (weights, config, tokenizer)."""
        if self.model_path is None:
            raise ValueError(
                "the vllm engine needs `model:` in ember.yaml: a Hugging Face model folder"
            )
        from vllm import AsyncEngineArgs, SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        try:
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError:  # older layouts export the same class under its old name
            from vllm import AsyncLLMEngine as AsyncLLM
        with contextlib.suppress(ImportError):
            from vllm import exceptions

            self._client_errors = (
                ValueError,
                *(
                    getattr(exceptions, name)
                    for name in ("VLLMClientError", "VLLMValidationError")
                    if hasattr(exceptions, name)
                ),
            )
        self._vllm = {
            "SamplingParams": SamplingParams,
            "TokensPrompt": TokensPrompt,
            "DELTA": RequestOutputKind.DELTA,
            "FINAL_ONLY": RequestOutputKind.FINAL_ONLY,
        }
        known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
        unknown = sorted(set(self.engine_args) - known)
        if unknown:
            raise ValueError(
                f"unknown vllm engine option(s) {', '.join(unknown)}: options are vLLM's "
                "AsyncEngineArgs fields (max_model_len, gpu_memory_utilization, dtype, "
                "tensor_parallel_size...) and chat_template"
            )
        args = {"disable_log_stats": True, **self.engine_args, "model": str(self.model_path)}
        options = self.engine_args or "default options"
        say(ENGINE, f"starting vLLM on {self.model_path} with {options}")
        began = time.perf_counter()
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        tokenizer = self.engine.get_tokenizer()
        self.tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        model_config = getattr(self.engine, "model_config", None)
        if model_config is None:
            model_config = await self.engine.get_model_config()
        self.context_length = int(model_config.max_model_len)
        # The model's generation_config.json defaults (temperature, top_p...), which vLLM's
        # own server applies to requests that leave them out.
        diff = getattr(model_config, "get_diff_sampling_param", None)
        self.defaults = dict(diff()) if callable(diff) else {}
        say(
            ENGINE,
            f"vLLM ready in {time.perf_counter() - began:.1f} s (context {self.context_length} "
            f"tokens, chat template: {'yes' if self._has_chat_template() else 'no'})",
        )

    # -- OpenAI ---------------------------------------------------------------------------

    async def chat_completions(
        self, request: dict[str, Any]
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """OpenAI's `/v1/chat/completions`: a chat.completion, or chunks when streaming."""
        asked = shapes.chat_request(request, VLLM_FIELDS, ENGINE)
        _check_response_format(request)
        ids = self._chat_prompt(shapes.chat_messages(request.get("messages")))
        plan = self._plan(request, [ids], asked, where="messages")
        answer = shapes.Answer(request, "chat")
        if request.get("stream"):

            def delta(step: _Step) -> dict[str, Any]:
                logprobs = None
                if plan.top_logprobs is not None:
                    logprobs = shapes.chat_logprobs(step.logprobs)
                content = {"content": step.text} if step.text else {}
                return shapes.chat_delta(step.index, content, logprobs)

            return self._stream(plan, answer, shapes.chat_role_delta, delta)
        choices = await self._complete(plan)
        return answer.response(
            [
                shapes.chat_choice(
                    i,
                    c.text,
                    c.finish,
                    shapes.chat_logprobs(c.logprobs) if plan.top_logprobs is not None else None,
                )
                for i, c in choices.items()
            ],
            self._usage(plan, choices),
        )

    async def completions(
        self, request: dict[str, Any]
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """OpenAI's `/v1/completions`: one prompt or several (text or token ids), `n` choices
        each, numbered prompt by prompt as OpenAI does."""
        asked = shapes.completion_request(request, VLLM_FIELDS, ENGINE)
        _check_response_format(request)
        prompts = shapes.prompts(request.get("prompt"))
        ids = [self._encode(p) if isinstance(p, str) else list(p) for p in prompts]
        # The prompts' text: echoed, or where logprobs' text offsets start.
        texts = [""] * len(prompts)
        if asked.echo or asked.top_logprobs is not None:
            texts = [p if isinstance(p, str) else self.tokenizer.decode(p) for p in prompts]
        plan = self._plan(request, ids, asked, where="prompt")
        answer = shapes.Answer(request, "text")
        if request.get("stream"):

            def echo(i: int) -> dict[str, Any] | None:
                return shapes.text_choice(i, texts[i // plan.n]) if asked.echo else None

            def step_choice(step: _Step) -> dict[str, Any]:
                logprobs = None
                if plan.top_logprobs is not None:
                    offset = len(texts[step.index // plan.n]) + step.offset
                    logprobs = shapes.text_logprobs(step.logprobs, offset)
                return shapes.text_choice(step.index, step.text, logprobs=logprobs)

            return self._stream(plan, answer, echo, step_choice)
        choices = await self._complete(plan)
        out = []
        for i, c in choices.items():
            prompt = texts[i // plan.n]
            logprobs = None
            if plan.top_logprobs is not None:
                logprobs = shapes.text_logprobs(c.logprobs, offset=len(prompt))
            text = (prompt if asked.echo else "") + c.text
            out.append(shapes.text_choice(i, text, c.finish, logprobs))
        return answer.response(out, self._usage(plan, choices))

    # -- Replicate-style ------------------------------------------------------------------

    async def predict(
        self,
        prompt: str = Input(description="What to ask the model"),
        system_prompt: str | None = Input(
            default=None, description="Instructions given to the model before the prompt"
        ),
        max_tokens: int = Input(
            default=512,
            ge=1,
            description="The most tokens to generate (less if the context has less room left)",
        ),
        temperature: float = Input(default=0.7, ge=0, le=2, description="0 is greedy"),
        top_p: float = Input(default=0.95, ge=0.01, le=1, description="Nucleus sampling"),
        seed: int | None = Input(default=None, description="Seed for reproducible sampling"),
    ) -> AsyncConcatenateIterator[str]:
        """Generate a reply to `prompt`, streamed as text. The model's chat template frames it
        when it has one; otherwise the system prompt and prompt are sent as plain text."""
        system = _given(system_prompt)
        if self._has_chat_template():
            messages = [{"role": "system", "content": system}] if system else []
            ids = self._chat_prompt([*messages, {"role": "user", "content": prompt}])
        else:
            ids = self._encode(f"{system}\n\n{prompt}" if system else prompt)
        room = shapes.check_context(len(ids), None, self.context_length, "prompt")
        request = {
            "temperature": _given(temperature),
            "top_p": _given(top_p),
            "seed": _given(seed),
        }
        budget = min(int(_given(max_tokens)), room)
        asked = shapes.Asked(n=1, max_tokens=budget, stop=[], top_logprobs=None)
        plan = self._plan(request, [ids], asked, "prompt", stream=True)
        choices = plan.choices()
        record_metric("input_token_count", plan.prompt_tokens)
        async with contextlib.aclosing(self._outputs(plan)) as outputs:
            async for p, output in outputs:
                for step in self._absorb(choices, p * plan.n, output, True, None):
                    if step.text:
                        yield step.text
                record_metric("output_token_count", choices[0].tokens)

    # -- requests -------------------------------------------------------------------------

    def _plan(
        self,
        request: dict[str, Any],
        prompt_ids: list[list[int]],
        asked: shapes.Asked,
        where: str,
        stream: bool | None = None,
    ) -> _Plan:
        """Check each prompt against the context and build its sampling parameters: the
        model's defaults, then the request's fields."""
        SamplingParams = self._vllm["SamplingParams"]
        stream = bool(request.get("stream")) if stream is None else stream
        base: dict[str, Any] = dict(self.defaults)
        default_budget = base.pop("max_tokens", None)
        for name in SAMPLING_FIELDS:
            if request.get(name) is not None:
                base[name] = request[name]
        if request.get("logit_bias"):
            base["logit_bias"] = _logit_bias(request["logit_bias"])
        if asked.top_logprobs is not None:
            base["logprobs"] = asked.top_logprobs
        base["n"] = asked.n
        base["stop"] = asked.stop
        base["output_kind"] = self._vllm["DELTA" if stream else "FINAL_ONLY"]
        params = []
        for ids in prompt_ids:
            if not ids:
                raise RequestError(f"the {where} are empty", param=where)
            budget = shapes.check_context(len(ids), asked.max_tokens, self.context_length, where)
            if asked.max_tokens is None and default_budget is not None:
                budget = min(budget, int(default_budget))
            try:
                params.append(SamplingParams(**base, max_tokens=budget))
            except (ValueError, TypeError) as exc:
                raise RequestError(f"invalid sampling parameters: {exc}") from exc
        return _Plan(prompt_ids, params, asked)

    def _has_chat_template(self) -> bool:
        return bool(self.chat_template or getattr(self.tokenizer, "chat_template", None))

    def _chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """The messages through the model's chat template, as token ids. The template writes
        the special tokens (BOS included) itself, so none are added when encoding."""
        if not self._has_chat_template():
            raise RequestError(
                "this model has no chat template: use /v1/completions, or give one in the "
                "engine option chat_template",
                param="messages",
            )
        extra = {"chat_template": self.chat_template} if self.chat_template else {}
        try:
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **extra
            )
        except Exception as exc:  # Jinja's TemplateError: e.g. roles that must alternate
            raise RequestError(
                f"the chat template refused the messages: {exc}", "messages"
            ) from exc
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _encode(self, text: str) -> list[int]:
        """A completion prompt as token ids, with the special tokens (BOS) the model expects."""
        return list(self.tokenizer.encode(text))

    def _usage(self, plan: _Plan, choices: dict[int, _Choice]) -> dict[str, int]:
        completion = sum(c.tokens for c in choices.values())
        record_metric("input_token_count", plan.prompt_tokens)
        record_metric("output_token_count", completion)
        return shapes.usage(plan.prompt_tokens, completion)

    # -- generation -----------------------------------------------------------------------

    async def _complete(self, plan: _Plan) -> dict[int, _Choice]:
        """Run the plan to the end (FINAL_ONLY: vLLM sends each choice once, whole)."""
        choices = plan.choices()
        async with contextlib.aclosing(self._outputs(plan)) as outputs:
            async for p, output in outputs:
                self._absorb(choices, p * plan.n, output, False, plan.top_logprobs)
        return choices

    async def _stream(
        self,
        plan: _Plan,
        answer: shapes.Answer,
        opening: Callable[[int], dict[str, Any] | None],
        step_choice: Callable[[_Step], dict[str, Any]],
    ) -> AsyncIterator[dict]:
        """Chunks: `opening(i)` first for each choice i (chat: the role; completions: the
        echoed prompt, or nothing), then `step_choice(step)` for each step that adds text,
        logprobs or the choice's finish reason (which rides on its last step); then the
        usage chunk if asked for.

        Nothing is sent before vLLM's first output, so a request vLLM refuses still fails
        before the stream starts (the gateway answers it with a 400)."""
        choices = plan.choices()
        record_metric("input_token_count", plan.prompt_tokens)
        started = False
        async with contextlib.aclosing(self._outputs(plan)) as outputs:
            async for p, output in outputs:
                if not started:
                    started = True
                    for i in choices:
                        if (first := opening(i)) is not None:
                            yield answer.chunk(first)
                for step in self._absorb(choices, p * plan.n, output, True, plan.top_logprobs):
                    if step.text or step.logprobs or step.finish is not None:
                        yield answer.chunk(step_choice(step), step.finish)
                record_metric("output_token_count", sum(c.tokens for c in choices.values()))
        if answer.include_usage:
            yield answer.usage_chunk(self._usage(plan, choices))

    async def _outputs(self, plan: _Plan) -> AsyncIterator[tuple[int, Any]]:
        """(prompt index, vLLM RequestOutput) for every prompt of the plan, as they come.
        Several prompts run at once (vLLM batches them); closing this stops them all."""
        if len(plan.prompts) == 1:
            async with contextlib.aclosing(self._generate(plan.prompts[0], plan.params[0])) as g:
                async for output in g:
                    yield 0, output
            return
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

        async def pump(index: int) -> None:
            ended: BaseException | None = None  # why it ended early: the consumer raises it
            try:
                async with contextlib.aclosing(
                    self._generate(plan.prompts[index], plan.params[index])
                ) as g:
                    async for output in g:
                        queue.put_nowait((index, output))
            except Exception as exc:
                ended = exc
            except BaseException:  # CancelledError: the prompt stopped unfinished
                ended = RuntimeError(f"generation for prompt {index} was canceled")
                raise
            finally:  # always the end marker: without it the consumer would wait forever
                queue.put_nowait((index, ended))

        tasks = [asyncio.create_task(pump(i)) for i in range(len(plan.prompts))]
        try:
            running = len(tasks)
            while running:
                index, item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    running -= 1
                else:
                    yield index, item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _generate(self, prompt_ids: list[int], params: Any) -> AsyncIterator[Any]:
        """One prompt through vLLM. Closing or canceling this aborts the request in vLLM
        (its generator aborts on GeneratorExit and CancelledError); a request vLLM refuses
        becomes a RequestError."""
        prompt = self._vllm["TokensPrompt"](prompt_token_ids=prompt_ids)
        stream = self.engine.generate(prompt, params, uuid.uuid4().hex)
        try:
            async with contextlib.aclosing(stream):
                async for output in stream:
                    yield output
        except Exception as exc:
            refused = next(
                (e for e in (exc, exc.__cause__) if isinstance(e, self._client_errors)), None
            )
            if refused is not None:
                raise RequestError(str(refused)) from exc
            raise

    def _absorb(
        self,
        choices: dict[int, _Choice],
        base: int,
        output: Any,
        delta: bool,
        top_logprobs: int | None,
    ) -> list[_Step]:
        """Fold one RequestOutput into its prompt's choices (`base` is the prompt's first
        choice index). With DELTA outputs each carries only what is new; with FINAL_ONLY,
        the whole choice."""
        steps = []
        for completion in output.outputs:
            index = base + completion.index
            choice = choices[index]
            ids = list(completion.token_ids)
            logprobs = []
            if top_logprobs is not None:
                logprobs = self._token_logprobs(ids, completion.logprobs, top_logprobs)
            offset = len(choice.text) if delta else 0
            if delta:
                choice.text += completion.text
                choice.tokens += len(ids)
                choice.logprobs.extend(logprobs)
            else:
                choice.text, choice.tokens, choice.logprobs = completion.text, len(ids), logprobs
            finish = shapes.finish_reason(completion.finish_reason)
            if finish is not None:
                choice.finish = finish
            steps.append(_Step(index, completion.text, logprobs, finish, offset))
        return steps

    def _token_logprobs(
        self, ids: list[int], positions: Any, top: int
    ) -> list[shapes.TokenLogprob]:
        """vLLM's per-position {token id: Logprob} maps as (text, logprob, top alternatives).
        vLLM always includes the sampled token, beside the `top` most likely ones."""
        result = []
        for token_id, position in zip(ids, positions or [], strict=False):
            candidates = position or {}
            chosen = candidates.get(token_id)
            best = sorted(candidates.items(), key=lambda item: -item[1].logprob)[:top]
            result.append(
                shapes.TokenLogprob(
                    self._token_text(token_id, chosen),
                    max(chosen.logprob, LOGPROB_FLOOR) if chosen else LOGPROB_FLOOR,
                    [(self._token_text(t, lp), max(lp.logprob, LOGPROB_FLOOR)) for t, lp in best],
                )
            )
        return result

    def _token_text(self, token_id: int, logprob: Any) -> str:
        decoded = getattr(logprob, "decoded_token", None)
        return decoded if decoded is not None else self.tokenizer.decode([token_id])


def _check_response_format(request: dict[str, Any]) -> None:
    """Only plain text: JSON modes would need vLLM's structured outputs, whose Python API
    has changed between releases; refusing is better than answering unconstrained."""
    response_format = request.get("response_format") or {"type": "text"}
    kind = response_format.get("type") if isinstance(response_format, dict) else response_format
    if kind != "text":
        raise RequestError(
            f"response_format {kind!r} is not supported by the vllm engine", "response_format"
        )


def _logit_bias(value: Any) -> dict[int, float]:
    """OpenAI's logit_bias, {"token id": bias}, as vLLM takes it: {token id: bias}."""
    try:
        return {int(k): float(v) for k, v in value.items()}
    except (AttributeError, TypeError, ValueError):
        raise RequestError(
            'logit_bias must map token ids to numbers, e.g. {"50256": -100}', "logit_bias"
        ) from None


def _given(value: Any) -> Any:
    """A parameter's value; its default when predict() is called directly, not through the
    worker, and the parameter was left out (then it still holds its Input(...) record)."""
    return value.default if isinstance(value, InputSpec) else value
