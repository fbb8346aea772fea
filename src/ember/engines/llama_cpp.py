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

One ``Llama`` context runs one sequence at a time and is not thread-safe: a lock covers each
generation from its first token to its last, released as soon as a stream is closed early or
interrupted. A closed stream stops between tokens, where llama.cpp's cache is whole, so the
cache (and the prefix the next request may share) is kept; an interruption (an exception,
which a signal may raise in the middle of evaluating a batch) resets the cache, so a
half-evaluated batch is never reused.
"""

from __future__ import annotations

import codecs
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from ember.engines import openai_shapes as shapes
from ember.engines.base import RequestError, say
from ember.engines.llama_cpp_sampling import (
    CHAT_EXTRAS,
    COMPLETION_EXTRAS,
    SEED_RANGE,
    Sampling,
    grammar,
    nth,
    request_sampling,
)
from ember.engines.llama_cpp_setup import (
    SAYS,
    chat_formatter,
    check_options,
    gguf_file,
    load_progress,
)
from ember.engines.llama_cpp_tools import Support, ToolCalling, ToolStream, template_support
from ember.engines.llama_cpp_tools import plan as tool_plan
from ember.scope import record_metric
from ember.types import ConcatenateIterator, Input

ENGINE = "llama_cpp"
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


# What _generate yields: text that is final, and the sampled tokens it came from.
Steps = Iterator[tuple[str, list[SampledToken]]]


class Engine:
    """A GGUF model served by llama.cpp (``engine: llama_cpp`` in ember.yaml)."""

    def __init__(self, model: Path | None, options: dict[str, Any]) -> None:
        if model is None:
            raise ValueError("the llama_cpp engine needs `model:` in ember.yaml (a .gguf file)")
        self.model = model
        self.options = check_options(options)
        self.llm: llama_cpp.Llama | None = None
        self._lock = threading.Lock()
        self._threads_pid = 0
        self._format: Callable[..., Any] | None = None
        self._tools = Support(unsupported="the model is not loaded")  # tool calls, how

    # -- setup ---------------------------------------------------------------------------

    def setup(self) -> None:
        """Load the GGUF, saying what it loads and how long it took (shown by `ember deploy`)."""
        path = gguf_file(self.model)
        opts = self.options
        say(SAYS, f"loading {path} ({path.stat().st_size / 2**20:.0f} MB)")
        began = time.perf_counter()
        threads = self._threads()
        with load_progress():
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=opts["n_ctx"],
                n_batch=opts["n_batch"],
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=opts["n_gpu_layers"],
                use_mmap=opts["use_mmap"],
                # OpenAI's penalties count every generated token, not llama.cpp's last 64.
                last_n_tokens_size=opts["n_ctx"],
                verbose=False,
            )
        self._threads_pid = os.getpid()
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._n_vocab = self.llm.n_vocab()
        self._format, format_name = chat_formatter(self.llm, opts["chat_format"])
        self._tools = template_support(self._format)
        say(
            SAYS,
            f"loaded in {time.perf_counter() - began:.2f} s (context {opts['n_ctx']} tokens, "
            f"{threads} thread{'s' * (threads > 1)}, chat format {format_name})",
        )

    def _threads(self) -> int:
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

    def _set_threads(self, llm: llama_cpp.Llama) -> None:
        """Use this process's thread count: setup may have run in the warm host (one thread)
        before this replica was forked with a CPU count of its own. Called under the lock."""
        if self._threads_pid != os.getpid():
            threads = self._threads()
            llama_cpp.llama_set_n_threads(llm.ctx, threads, threads)
            self._threads_pid = os.getpid()

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
        with self._generating([tokens], sampling) as usage:
            _, steps = self._steps(usage, tokens, sampling)
            for text, _logprobs in steps:
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
        answer = shapes.Answer(request, "chat", FINGERPRINT)
        if request.get("stream"):
            return self._chat_stream(answer, asked.n, tokens, sampling, tools)
        with self._generating([tokens], sampling) as usage:
            choices = []
            for i in range(asked.n):
                choice = self._complete(tokens, nth(sampling, i), usage)
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
        n: int,
        tokens: list[int],
        sampling: Sampling,
        tools: ToolCalling | None,
    ) -> Iterator[dict[str, Any]]:
        with self._generating([tokens], sampling) as usage:
            for i in range(n):
                # The role chunk goes out with the first token, not before the prompt is
                # processed: the first chunk's arrival is then the true time to first token,
                # for the client and for Ember's metrics.
                role: dict[str, Any] | None = answer.chunk(shapes.chat_role_delta(i))
                choice, steps = self._steps(usage, tokens, nth(sampling, i))
                reading = ToolStream() if tools else None
                for text, logprobs in steps:
                    if role is not None:
                        yield role
                        role = None
                    if reading is not None:  # the reply's text, out of the JSON around it
                        if reply := reading.feed(text):
                            yield answer.chunk(shapes.chat_delta(i, {"content": reply}))
                        continue
                    delta = {"content": text}
                    logprob = self._chat_logprobs(logprobs, sampling)
                    yield answer.chunk(shapes.chat_delta(i, delta, logprob))
                if role is not None:
                    yield role
                finish = choice.finish_reason
                if reading is not None:
                    deltas, finish = reading.deltas(finish)
                    for delta in deltas:
                        yield answer.chunk(shapes.chat_delta(i, delta))
                yield answer.chunk(shapes.chat_delta(i, {}), finish)
            if answer.include_usage:
                yield answer.usage_chunk(usage.as_dict())

    def completions(self, request: dict[str, Any]) -> dict[str, Any] | Iterator[dict]:
        """POST /v1/completions: a text_completion, or a stream of them."""
        asked = shapes.completion_request(request, COMPLETION_EXTRAS, ENGINE)
        llm = self._ready()
        prompts = [self._completion_prompt(p) for p in shapes.prompts(request.get("prompt"))]
        for tokens in prompts:
            shapes.check_context(len(tokens), asked.max_tokens, self.options["n_ctx"], "prompt")
        sampling = request_sampling(request, asked, asked.stop, self.options["sampling"])
        sampling.max_tokens = asked.max_tokens
        # Logprobs' text offsets count from the prompt's start, so its text is needed too.
        texts = [llm.detokenize(p).decode("utf-8", errors="replace") for p in prompts]
        answer = shapes.Answer(request, "text", FINGERPRINT)
        if request.get("stream"):
            return self._completion_stream(answer, asked, prompts, texts, sampling)
        with self._generating(prompts, sampling) as usage:
            choices = []
            for p, (tokens, prompt_text) in enumerate(zip(prompts, texts, strict=True)):
                for i in range(asked.n):
                    choice = self._complete(tokens, nth(sampling, i), usage)
                    logprobs = self._text_logprobs(choice.logprobs, sampling, len(prompt_text))
                    text = (prompt_text if asked.echo else "") + choice.text
                    index = p * asked.n + i
                    choices.append(shapes.text_choice(index, text, choice.finish_reason, logprobs))
        return answer.response(choices, usage.as_dict())

    def _completion_stream(
        self,
        answer: shapes.Answer,
        asked: shapes.Asked,
        prompts: list[list[int]],
        texts: list[str],
        sampling: Sampling,
    ) -> Iterator[dict[str, Any]]:
        with self._generating(prompts, sampling) as usage:
            for p, (tokens, prompt_text) in enumerate(zip(prompts, texts, strict=True)):
                for i in range(asked.n):
                    index = p * asked.n + i
                    if asked.echo:
                        yield answer.chunk(shapes.text_choice(index, prompt_text))
                    choice, steps = self._steps(usage, tokens, nth(sampling, i))
                    for text, logprobs in steps:
                        lp = self._text_logprobs(logprobs, sampling, len(prompt_text))
                        yield answer.chunk(shapes.text_choice(index, text, logprobs=lp))
                    yield answer.chunk(shapes.text_choice(index, ""), choice.finish_reason)
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

    @contextmanager
    def _generating(self, prompts: list[list[int]], sampling: Sampling) -> Iterator[_Usage]:
        """Hold the model for one request and bill its tokens, even if it stops early.

        A seeded request starts from an empty cache: llama.cpp's logits depend on how the
        prompt was split into batches (a cached prefix plus a suffix differed from one batch by
        0.6 in a logit on SmolLM2), so reusing the previous request's prefix would make the same
        seed give different answers. Unseeded requests keep the prefix cache.

        Leaving early releases the lock at once. A closed stream (GeneratorExit, raised at a
        yield) stops between tokens: llama.cpp has evaluated every token it reports, and the
        one sampled last is not yet part of the cache, so the cache stays valid and is kept.
        Any other exception (a cancel signal, a timeout) may have landed in the middle of
        evaluating a batch and left the cache half-updated, so the context is reset and the
        next request evaluates its prompt from scratch."""
        usage = _Usage(prompt_tokens=sum(len(p) for p in prompts))
        record_metric("input_token_count", usage.prompt_tokens)
        with self._lock:
            llm = self._ready()
            self._set_threads(llm)
            if sampling.seed is not None:
                llm.reset()
            try:
                yield usage
            except GeneratorExit:  # closed between tokens: the cache is whole
                raise
            except BaseException:
                llm.reset()
                raise
            finally:
                # A stream closed at one of its own yields leaves the generator it was reading
                # suspended: close it now, not whenever it is collected after the lock is gone.
                usage.generators.close()
                record_metric("output_token_count", usage.completion_tokens)

    def _steps(self, usage: _Usage, prompt: list[int], s: Sampling) -> tuple[Completion, Steps]:
        """A new choice of the request, counted in `usage`, and the generator that fills it
        (closed when the request lets go of the model). Call with the lock held."""
        choice = usage.choice()
        return choice, usage.generators.enter_context(closing(self._generate(prompt, s, choice)))

    def _complete(self, prompt: list[int], s: Sampling, usage: _Usage) -> Completion:
        """One whole choice, counted in `usage`. Call with the lock held."""
        choice, steps = self._steps(usage, prompt, s)
        for _ in steps:
            pass
        return choice

    def _generate(self, prompt: list[int], s: Sampling, out: Completion) -> Steps:
        """Generate one completion into `out`, yielding its text as soon as it is final: whole
        UTF-8 characters, and never a tail that could still turn out to start a stop string.
        Call with the lock held."""
        llm = self._ready()
        limit = llm.n_ctx() - len(prompt)
        if s.max_tokens is not None:
            limit = min(limit, s.max_tokens)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        longest_stop = max((len(x) for x in s.stop), default=0)
        sent = given = 0  # characters of out.text, and entries of out.logprobs, yielded

        def logprobs_upto(end: int) -> list[SampledToken]:
            nonlocal given
            first = given
            while given < len(out.logprobs) and out.logprobs[given].end <= end:
                given += 1
            return out.logprobs[first:given]

        llm.set_seed(s.seed % SEED_RANGE if s.seed is not None else secrets.randbelow(SEED_RANGE))
        tokens = llm.generate(
            prompt,
            temp=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty,
            grammar=s.grammar,
        )
        stopped = False
        try:
            for token in tokens:
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    out.finish_reason = "stop"
                    break
                out.tokens += 1
                piece = llm.detokenize([token])
                start = len(out.text)
                out.text += decoder.decode(piece)
                if s.top_logprobs is not None:
                    out.logprobs.append(self._logprob(token, piece, s.top_logprobs, start, out))
                if stopped := self._cut_at_stop(out, s.stop, max(0, start - longest_stop)):
                    break
                if out.tokens >= limit:
                    break
                final = len(out.text) - shapes.held_back(out.text, s.stop)
                if final > sent:
                    yield out.text[sent:final], logprobs_upto(final)
                    sent = final
        finally:
            tokens.close()
        if out.finish_reason == "length":
            out.text += decoder.decode(b"", final=True)
            stopped = self._cut_at_stop(out, s.stop, max(0, sent - longest_stop))
        if stopped:  # tokens that only spell the stop string are not part of the answer
            out.logprobs = [t for t in out.logprobs if t.start < len(out.text)]
        if len(out.text) > sent or given < len(out.logprobs):
            yield out.text[sent:], out.logprobs[given:]

    @staticmethod
    def _cut_at_stop(out: Completion, stop: list[str], since: int) -> bool:
        at = shapes.stop_index(out.text, stop, since)
        if at is None:
            return False
        out.text = out.text[:at]
        out.finish_reason = "stop"
        return True

    def _logprob(
        self, token: int, piece: bytes, k: int, start: int, out: Completion
    ) -> SampledToken:
        """The sampled token's log-probability and the k likeliest, from the logits llama.cpp
        kept for the last position (valid until the next token is evaluated)."""
        assert self.llm is not None
        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        peak = float(logits.max())
        log_total = peak + float(np.log(np.exp(logits - peak).sum()))
        top: list[tuple[int, float]] = []
        if k:
            best = np.argpartition(logits, -k)[-k:]
            best = best[np.argsort(-logits[best])]
            top = [(int(i), float(logits[i]) - log_total) for i in best]
        return SampledToken(
            token, piece, float(logits[token]) - log_total, top, start, len(out.text)
        )

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


@dataclass
class _Usage:
    """The tokens of one request, counted as they are generated (a closed stream is billed for
    what it got)."""

    prompt_tokens: int
    choices: list[Completion] = field(default_factory=list)
    generators: ExitStack = field(default_factory=ExitStack)  # the choices' token loops

    def choice(self) -> Completion:
        self.choices.append(Completion())
        return self.choices[-1]

    @property
    def completion_tokens(self) -> int:
        return sum(c.tokens for c in self.choices)

    def as_dict(self) -> dict[str, int]:
        return shapes.usage(self.prompt_tokens, self.completion_tokens)
