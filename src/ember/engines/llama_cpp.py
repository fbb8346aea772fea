"""The llama.cpp engine: GGUF models on CPU through llama-cpp-python, with OpenAI's chat and
text completions and a Replicate-style ``predict``.

It drives llama.cpp's token loop (``Llama.generate``) itself rather than calling
``create_chat_completion``, because that is what OpenAI's shapes need and the high-level call
lacks: ``n`` choices, usage in streams, exact token counts for the cost ledger, and logprobs
read from the last position's logits, so they cost nothing unless asked for (llama-cpp-python's
own way, ``logits_all=True``, keeps an n_ctx x n_vocab float array: ~400 MB for a 2048-token
context and a 49k vocabulary, and slower prompt processing).

How a request's fields become llama.cpp's sampler settings is ``llama_cpp_sampling.py``;
the engine options and loading the GGUF (its file, chat template, progress) are
``llama_cpp_setup.py``; tool calls (the tools in the prompt, a grammar from their schemas, the
answer's JSON read back as ``tool_calls``) are ``llama_cpp_tools.py``. This module is the
engine class and its token loop.

Generation is continuous batching (``llama_cpp_batch.py``): a replica decodes up to
``parallel`` sequences together, each request's in its own sequence (n choices and several
prompts, one sequence each), with the prefixes of earlier prompts reused from the KV cache.
This module turns requests into those sequences and their tokens back into OpenAI's shapes;
it never touches the llama.cpp context itself, so a request stopped by a cancel or a timeout
only lets go of its sequences.
"""

from __future__ import annotations

import codecs
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp

from ember.engines import openai_shapes as shapes
from ember.engines.base import RequestError, resolve_model_path, say
from ember.engines.llama_cpp_batch import Adapter, Batcher, Draw, Ended, Sampled
from ember.engines.llama_cpp_sampling import (
    CHAT_EXTRAS,
    COMPLETION_EXTRAS,
    Sampling,
    grammar,
    nth,
    request_sampling,
    sampler_chain,
)
from ember.engines.llama_cpp_setup import (
    SAYS,
    batch_context,
    chat_formatter,
    check_options,
    gguf_file,
    load_adapter,
    load_progress,
)
from ember.engines.llama_cpp_tools import Support, ToolCalling, ToolStream, template_support
from ember.engines.llama_cpp_tools import plan as tool_plan
from ember.scope import record_metric
from ember.types import ConcatenateIterator, Input

ENGINE = "llama_cpp"
# The Llama object only holds the weights, vocabulary and template: its own context is kept
# at llama.cpp's smallest (generation has a context of its own, made for many sequences).
HANDLE_CONTEXT = 256
FINGERPRINT = f"ember-llama_cpp-{llama_cpp.__version__}"


@dataclass
class SampledToken:
    """A generated token as llama.cpp gives it, kept for logprobs: ids, not yet text (they
    become openai_shapes.TokenLogprob when a response is shaped)."""

    token: int
    piece: bytes
    logprob: float
    top: list[tuple[int, float]]  # (token id, logprob) of the likeliest tokens
    start: int  # character offset of the token's text in the completion
    end: int


@dataclass
class Completion:
    """One choice as it is generated: its text so far, its end, its tokens' logprobs."""

    text: str = ""
    finish_reason: str = "length"
    tokens: int = 0
    logprobs: list[SampledToken] = field(default_factory=list)


class Engine:
    """A GGUF model served by llama.cpp (``engine: llama_cpp`` in ember.yaml)."""

    def __init__(self, model: Path | None, options: dict[str, Any]) -> None:
        if model is None:
            raise ValueError("the llama_cpp engine needs `model:` in ember.yaml (a .gguf file)")
        self.model = model
        self.options = check_options(options)
        self.llm: llama_cpp.Llama | None = None
        self.batcher: Batcher | None = None
        self.adapters: dict[str, Adapter] = {}
        self._format: Callable[..., Any] | None = None
        self._tools = Support(unsupported="the model is not loaded")  # tool calls, how

    # -- setup ---------------------------------------------------------------------------

    def setup(self) -> None:
        """Load the GGUF, saying what it loads and how long it took (shown by `ember deploy`).

        llama-cpp-python's ``Llama`` holds the weights, the vocabulary and the chat template;
        generation runs in a context of the engine's own (``batch_context``), made for many
        sequences, so the Llama's context is kept to llama.cpp's smallest."""
        path = gguf_file(self.model)
        opts = self.options
        say(SAYS, f"loading {path} ({path.stat().st_size / 2**20:.0f} MB)")
        began = time.perf_counter()
        threads = self._threads()
        with load_progress():
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=HANDLE_CONTEXT,
                n_batch=HANDLE_CONTEXT,
                n_threads=threads,
                n_gpu_layers=opts["n_gpu_layers"],
                use_mmap=opts["use_mmap"],
                verbose=False,
            )
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._n_vocab = self.llm.n_vocab()
        self._format, format_name = chat_formatter(self.llm, opts["chat_format"])
        self._tools = template_support(self._format)
        for name, file in (opts["lora_adapters"] or {}).items():
            try:
                adapter = resolve_model_path(self.model.parent, file)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"LoRA adapter {name!r}: {exc}") from None
            self.load_adapter(name, adapter)
        self.batcher = Batcher(
            batch_context(self.llm, opts, threads),
            self._vocab,
            parallel=opts["parallel"],
            cache_entries=opts["cached_prompts"],
            n_batch=opts["n_batch"],
            threads=self._threads,
        )
        say(
            SAYS,
            f"loaded in {time.perf_counter() - began:.2f} s (context {opts['n_ctx']} tokens, "
            f"{opts['parallel']} sequences at once, {threads} thread{'s' * (threads > 1)}, "
            f"chat format {format_name})",
        )

    def load_adapter(self, name: str, path: Path, scale: float = 1.0) -> None:
        """Load a GGUF LoRA adapter on the base model; requests naming `name` as their `model`
        are then generated with it, batched beside requests of the base or other adapters."""
        self.adapters[name] = load_adapter(self._ready(), name, path, scale)

    def _threads(self) -> int:
        """This process's thread count: setup may have run in the warm host (one thread)
        before this replica was forked with a CPU count of its own."""
        configured = self.options["n_threads"]
        if configured:
            return configured
        try:
            return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
        except ValueError:
            return 1

    def _ready(self) -> llama_cpp.Llama:
        if self.llm is None:
            raise RuntimeError("setup() has not run")
        return self.llm

    # -- Replicate-style ----------------------------------------------------------------

    def predict(
        self,
        prompt: str = Input(description="The user's message"),
        system_prompt: str = Input(
            default="", description="System prompt; empty: the model's own default"
        ),
        max_tokens: int = Input(default=512, ge=1, description="Most tokens to generate"),
        temperature: float = Input(default=0.7, ge=0, le=2, description="0: greedy"),
        top_p: float = Input(default=0.95, ge=0, le=1, description="Nucleus sampling"),
        top_k: int = Input(default=0, ge=0, description="Sample from the k likeliest; 0: off"),
        stop_sequences: str | None = Input(
            default=None, description="Comma-separated strings that end the answer"
        ),
        seed: int | None = Input(default=None, description="Random seed; empty: random"),
    ) -> ConcatenateIterator[str]:
        """Answer one message with the model's chat template, streaming the text (at most
        `max_tokens`, fewer when the context has less room left)."""
        messages = [{"role": "user", "content": prompt}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        tokens, stop = self._chat_prompt(messages)
        room = shapes.check_context(len(tokens), None, self.options["n_ctx"], "prompt")
        sampling = Sampling(
            max_tokens=min(max_tokens, room),
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=[s for s in (stop_sequences or "").split(",") if s] + stop,
            seed=seed,
        )
        return self._text_stream(tokens, sampling)

    def _text_stream(self, tokens: list[int], sampling: Sampling) -> Iterator[str]:
        with _Usage.billing([tokens]) as usage:
            for _, text, _, _ in self._run([self._draw(tokens, sampling, None)], [sampling], usage):
                if text:
                    yield text

    # -- OpenAI ---------------------------------------------------------------------------

    def chat_completions(self, request: dict[str, Any]) -> dict[str, Any] | Iterator[dict]:
        """POST /v1/chat/completions: a chat.completion, or chat.completion.chunk objects.
        With `tools`, the answer is generated as llama_cpp_tools.py describes."""
        asked = shapes.chat_request(request, CHAT_EXTRAS, ENGINE, tools=True)
        messages = shapes.chat_messages(request.get("messages"), tools=True)
        tools = tool_plan(request, messages, self._tools)
        tokens, stop = self._chat_prompt(tools.messages if tools else messages)
        sampling = request_sampling(request, asked, [*asked.stop, *stop], self.options["sampling"])
        sampling.max_tokens = shapes.check_context(
            len(tokens), asked.max_tokens, self.options["n_ctx"], "messages"
        )
        sampling.grammar = tools.grammar if tools else grammar(request.get("response_format"))
        samplings = [nth(sampling, i) for i in range(asked.n)]
        draws = [self._draw(tokens, s, request) for s in samplings]
        answer = shapes.Answer(request, "chat", FINGERPRINT)
        if request.get("stream"):
            return self._chat_stream(answer, draws, samplings, [tokens], tools)
        with _Usage.billing([tokens]) as usage:
            completions = self._complete(draws, samplings, usage)
        choices = []
        for i, choice in enumerate(completions):
            if tools:
                content, calls, finish = tools.answer(choice.text, choice.finish_reason)
                choices.append(shapes.chat_choice(i, content, finish, None, calls))
                continue
            logprobs = self._chat_logprobs(choice.logprobs, sampling)
            choices.append(shapes.chat_choice(i, choice.text, choice.finish_reason, logprobs))
        return answer.response(choices, usage.as_dict())

    def _chat_stream(
        self,
        answer: shapes.Answer,
        draws: list[Draw],
        samplings: list[Sampling],
        prompts: list[list[int]],
        tools: ToolCalling | None,
    ) -> Iterator[dict[str, Any]]:
        """The n choices' chunks as their tokens come, interleaved as OpenAI's are. A choice's
        role chunk goes out with its first token, not before the prompt is processed: its
        arrival is then the true time to first token, for the client and for Ember's metrics."""
        readers = {i: ToolStream() for i in range(len(draws))} if tools else {}
        started: set[int] = set()
        with _Usage.billing(prompts) as usage:
            for i, text, logprobs, finish in self._run(draws, samplings, usage):
                if i not in started:
                    started.add(i)
                    yield answer.chunk(shapes.chat_role_delta(i))
                if i in readers:  # the reply's text, out of the JSON around it
                    if reply := readers[i].feed(text):
                        yield answer.chunk(shapes.chat_delta(i, {"content": reply}))
                elif text or logprobs:
                    logprob = self._chat_logprobs(logprobs, samplings[i])
                    yield answer.chunk(shapes.chat_delta(i, {"content": text}, logprob))
                if finish is None:
                    continue
                if i in readers:
                    deltas, finish = readers[i].deltas(finish)
                    for delta in deltas:
                        yield answer.chunk(shapes.chat_delta(i, delta))
                yield answer.chunk(shapes.chat_delta(i, {}), finish)
            if answer.include_usage:
                yield answer.usage_chunk(usage.as_dict())

    def completions(self, request: dict[str, Any]) -> dict[str, Any] | Iterator[dict]:
        """POST /v1/completions: a text_completion, or a stream of them. Choice p*n + i is
        prompt p's i-th; all of them are generated together."""
        asked = shapes.completion_request(request, COMPLETION_EXTRAS, ENGINE)
        llm = self._ready()
        prompts = [self._completion_prompt(p) for p in shapes.prompts(request.get("prompt"))]
        for tokens in prompts:
            shapes.check_context(len(tokens), asked.max_tokens, self.options["n_ctx"], "prompt")
        sampling = request_sampling(request, asked, asked.stop, self.options["sampling"])
        sampling.max_tokens = asked.max_tokens
        # Logprobs' text offsets count from the prompt's start, so its text is needed too.
        texts = [llm.detokenize(p).decode("utf-8", errors="replace") for p in prompts]
        samplings = [nth(sampling, i) for _ in prompts for i in range(asked.n)]
        draws = [
            self._draw(tokens, samplings[p * asked.n + i], request, index=p)
            for p, tokens in enumerate(prompts)
            for i in range(asked.n)
        ]
        answer = shapes.Answer(request, "text", FINGERPRINT)
        if request.get("stream"):
            return self._completion_stream(answer, asked, prompts, texts, draws, samplings)
        with _Usage.billing(prompts) as usage:
            completions = self._complete(draws, samplings, usage)
        choices = []
        for index, choice in enumerate(completions):
            prompt_text = texts[index // asked.n]
            logprobs = self._text_logprobs(choice.logprobs, sampling, len(prompt_text))
            text = (prompt_text if asked.echo else "") + choice.text
            choices.append(shapes.text_choice(index, text, choice.finish_reason, logprobs))
        return answer.response(choices, usage.as_dict())

    def _completion_stream(
        self,
        answer: shapes.Answer,
        asked: shapes.Asked,
        prompts: list[list[int]],
        texts: list[str],
        draws: list[Draw],
        samplings: list[Sampling],
    ) -> Iterator[dict[str, Any]]:
        started: set[int] = set()
        with _Usage.billing(prompts) as usage:
            for index, text, logprobs, finish in self._run(draws, samplings, usage):
                prompt_text = texts[index // asked.n]
                if index not in started:
                    started.add(index)
                    if asked.echo:
                        yield answer.chunk(shapes.text_choice(index, prompt_text))
                if text or logprobs:
                    lp = self._text_logprobs(logprobs, samplings[index], len(prompt_text))
                    yield answer.chunk(shapes.text_choice(index, text, logprobs=lp))
                if finish is not None:
                    yield answer.chunk(shapes.text_choice(index, ""), finish)
            if answer.include_usage:
                yield answer.usage_chunk(usage.as_dict())

    # -- requests → prompts ---------------------------------------------------------------

    def _chat_prompt(self, messages: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
        """The messages through the chat template, as tokens, and the template's stop strings."""
        llm = self._ready()
        if self._format is None:
            raise RequestError(
                "this model has no chat template: set engine_options.chat_format (e.g. chatml)"
                " or use /v1/completions",
                param="messages",
            )
        try:
            formatted = self._format(messages=messages)
        except Exception as exc:  # the template's raise_exception, a Jinja error
            raise RequestError(
                f"the chat template rejected the messages: {exc}", param="messages"
            ) from exc
        tokens = llm.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        stop = formatted.stop or []
        return tokens, [stop] if isinstance(stop, str) else list(stop)

    def _completion_prompt(self, prompt: str | list[int]) -> list[int]:
        llm = self._ready()
        if isinstance(prompt, str):
            tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        else:
            tokens = list(prompt)
            if any(not 0 <= t < self._n_vocab for t in tokens):
                raise RequestError(f"prompt: token ids must be in [0, {self._n_vocab})", "prompt")
        if not tokens:  # generation needs one token to start from
            if llm.token_bos() < 0:
                raise RequestError("prompt: empty prompt", param="prompt")
            tokens = [llm.token_bos()]
        return tokens

    # -- generation ------------------------------------------------------------------------

    def _draw(
        self, prompt: list[int], s: Sampling, request: dict[str, Any] | None, index: int = 0
    ) -> Draw:
        """One sequence for the batcher. A seeded sequence evaluates its whole prompt: logits
        depend on how a prompt was split into calls, so a shared prefix could make the same
        seed answer differently."""
        llm = self._ready()
        room = self.options["n_ctx"] - len(prompt)
        return Draw(
            prompt=prompt,
            sampler=sampler_chain(s, llm._model, self._n_vocab, self.options["n_ctx"]),
            max_tokens=max(1, min(room, s.max_tokens) if s.max_tokens is not None else room),
            top_logprobs=s.top_logprobs,
            adapter=self._adapter(request),
            fresh=s.seed is not None,
            prompt_index=index,
        )

    def _adapter(self, request: dict[str, Any] | None) -> Adapter | None:
        """The LoRA adapter a request names with `model`, if it names a loaded one."""
        name = (request or {}).get("model")
        return self.adapters.get(name) if isinstance(name, str) else None

    def _run(
        self, draws: list[Draw], samplings: list[Sampling], usage: _Usage
    ) -> Iterator[tuple[int, str, list[SampledToken], str | None]]:
        """Generate the draws together, yielding (choice, text, logprobs, finish) as each
        choice's text becomes final; `finish` is set on a choice's last item. Leaving early
        (a closed stream, a cancel, a timeout) stops every sequence of the request."""
        if self.batcher is None:
            raise RuntimeError("setup() has not run")
        texts = [_Text(self, s, usage.choice()) for s in samplings]
        generation = self.batcher.submit(draws)
        try:
            live = len(draws)
            while live:
                event = generation.next()
                text = texts[event.choice]
                if text.done:  # stopped at a stop string: drawn before the stop reached it
                    continue
                if isinstance(event, Ended):
                    if event.error:
                        raise RuntimeError(event.error)
                    piece, logprobs = text.end(event.reason)
                    live -= 1
                    yield event.choice, piece, logprobs, text.out.finish_reason
                    continue
                piece, logprobs = text.feed(event)
                if text.done:
                    generation.stop(event.choice)
                    live -= 1
                    yield event.choice, piece, logprobs, text.out.finish_reason
                elif piece or logprobs:
                    yield event.choice, piece, logprobs, None
        finally:
            generation.close()
            usage.cached_tokens = generation.cached_prompt_tokens

    def _complete(
        self, draws: list[Draw], samplings: list[Sampling], usage: _Usage
    ) -> list[Completion]:
        """Every choice, whole."""
        for _ in self._run(draws, samplings, usage):
            pass
        return usage.choices

    def _shaped(self, tokens: list[SampledToken]) -> list[shapes.TokenLogprob]:
        """Tokens as openai_shapes renders them: their bytes (a piece may be part of a UTF-8
        character) and where their text starts in the completion."""
        assert self.llm is not None
        piece = self.llm.detokenize
        return [
            shapes.TokenLogprob(t.piece, t.logprob, [(piece([i]), lp) for i, lp in t.top], t.start)
            for t in tokens
        ]

    def _chat_logprobs(self, tokens: list[SampledToken], s: Sampling) -> dict[str, Any] | None:
        if s.top_logprobs is None:
            return None
        return shapes.chat_logprobs(self._shaped(tokens))

    def _text_logprobs(
        self, tokens: list[SampledToken], s: Sampling, offset: int
    ) -> dict[str, Any] | None:
        if s.top_logprobs is None:
            return None
        return shapes.text_logprobs(self._shaped(tokens), offset)


# -- helpers -----------------------------------------------------------------------------


class _Text:
    """One choice's text as its tokens come: yielded in whole UTF-8 characters, never a tail
    that could still turn out to start a stop string, and cut where a stop string begins."""

    def __init__(self, engine: Engine, sampling: Sampling, out: Completion) -> None:
        self.engine = engine
        self.s = sampling
        self.out = out
        self.done = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._longest_stop = max((len(x) for x in sampling.stop), default=0)
        self._sent = 0  # characters of out.text yielded
        self._given = 0  # entries of out.logprobs yielded

    def feed(self, event: Sampled) -> tuple[str, list[SampledToken]]:
        """A drawn token: the text (and its tokens' logprobs) now final, if any. Sets `done`
        when the text reached a stop string (and yields what came before it)."""
        out = self.out
        out.tokens += 1
        piece = self.engine._ready().detokenize([event.token])
        start = len(out.text)
        out.text += self._decoder.decode(piece)
        if self.s.top_logprobs is not None:
            logprob = event.logprob or 0.0
            out.logprobs.append(
                SampledToken(event.token, piece, logprob, event.top, start, len(out.text))
            )
        if self._cut_at_stop(max(0, start - self._longest_stop)):
            self.done = True
            return self._rest()
        final = len(out.text) - shapes.held_back(out.text, self.s.stop)
        if final <= self._sent:
            return "", []
        text = out.text[self._sent : final]
        self._sent = final
        return text, self._logprobs_upto(final)

    def end(self, reason: str) -> tuple[str, list[SampledToken]]:
        """The sequence ended ("stop": the model's end; "length"): what was held back."""
        self.done = True
        self.out.finish_reason = reason
        self.out.text += self._decoder.decode(b"", final=True)
        self._cut_at_stop(max(0, self._sent - self._longest_stop))
        return self._rest()

    def _cut_at_stop(self, since: int) -> bool:
        out = self.out
        at = shapes.stop_index(out.text, self.s.stop, since)
        if at is None:
            return False
        out.text = out.text[:at]
        out.finish_reason = "stop"
        # tokens that only spell the stop string are not part of the answer
        out.logprobs = [t for t in out.logprobs if t.start < len(out.text)]
        return True

    def _rest(self) -> tuple[str, list[SampledToken]]:
        text = self.out.text[self._sent :]
        self._sent = len(self.out.text)
        return text, self._logprobs_upto(len(self.out.text) + 1)

    def _logprobs_upto(self, end: int) -> list[SampledToken]:
        logprobs = self.out.logprobs
        first = self._given
        while self._given < len(logprobs) and logprobs[self._given].end <= end:
            self._given += 1
        return logprobs[first : self._given]


@dataclass
class _Usage:
    """The tokens of one request, counted as they are generated (a closed stream is billed for
    what it got), and how many of its prompt tokens were found already evaluated."""

    prompt_tokens: int
    choices: list[Completion] = field(default_factory=list)
    cached_tokens: int = 0

    @classmethod
    @contextmanager
    def billing(cls, prompts: list[list[int]]) -> Iterator[_Usage]:
        """Count a request's tokens for the cost ledger, also when it stops early."""
        usage = cls(prompt_tokens=sum(len(p) for p in prompts))
        record_metric("input_token_count", usage.prompt_tokens)
        try:
            yield usage
        finally:
            record_metric("output_token_count", usage.completion_tokens)
            record_metric("cached_input_token_count", usage.cached_tokens)

    def choice(self) -> Completion:
        self.choices.append(Completion())
        return self.choices[-1]

    @property
    def completion_tokens(self) -> int:
        return sum(c.tokens for c in self.choices)

    def as_dict(self) -> dict[str, Any]:
        return shapes.usage(self.prompt_tokens, self.completion_tokens, self.cached_tokens)
