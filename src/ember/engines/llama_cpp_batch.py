"""Continuous batching for the llama.cpp engine: many sequences share each decode step of one
llama.cpp context, prompts start from the evaluated prefixes of earlier ones, and each
sequence may run with a LoRA adapter of its own.

Why one scheduler thread: a llama.cpp context is not thread-safe, and its throughput comes
from evaluating the next token of many sequences in one ``llama_decode`` (the weights are read
once per step, not once per sequence). One thread owns the context; a request hands it
``Draw``s (a prompt and how to sample it) and reads what it samples, token by token, from its
``Generation``'s queue. Requests' threads never touch the context, so a cancelled or timed-out
request (an exception raised in its thread) cannot leave a half-evaluated batch behind: it only
marks its sequences closed, and the scheduler drops them between steps.

Exactness. llama.cpp's CPU kernels pick their path by how many tokens one call evaluates:
with ~64 or more, a prompt's logits differ from the same prompt evaluated in smaller calls
(0.6 in a logit on SmolLM2), so a sequence's answer would depend on who it was batched with.
Calls of fewer tokens all take the same path, so a decode step packs the sequences' next tokens
and short prompts (or prompt ends) into calls of at most ``SMALL_CALL`` tokens, and a longer
prompt is evaluated in calls of its own, in chunks of ``n_batch``, as a one-sequence engine does:
at temperature 0 every sequence gets the answer it would get alone.

Each sequence has a KV cache stream of its own (llama.cpp's non-unified cache), so that its
attention sums run over its own cells in its own order: in one pool shared by all sequences,
where cells interleave, the same sums in other SIMD lanes differ in the last bits and a greedy
answer can flip. A finished sequence's stream is kept as a cache entry later prompts start
from (least recently used dropped first): a prompt takes over the entry holding the longest
prefix of it, or, when a running sequence holds more, copies that sequence's stream. A prompt
that shares more with one still being evaluated waits for it rather than evaluating the same
tokens twice. Prefixes are only shared between sequences of the same adapter: the KV an
adapter computed is not the base model's.

This module runs in model environments: standard library, numpy and llama-cpp-python.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np

logger = logging.getLogger("ember.engines.llama_cpp")

SMALL_CALL = 32  # tokens of a shared call: below the ~64 at which the kernels change
WAKE_SECONDS = 0.1  # how often a waiting request's thread runs Python (to see a cancel)
# A prompt waits for a sequence evaluating at least this many more tokens of it: sharing them
# saves more than the wait costs (a shared chat template's first few tokens are not worth it).
WORTH_WAITING = 32
COPY_WORTH = 16  # shared tokens for which copying a running sequence's cache stream pays


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter loaded on the base model, and the scale it is applied with."""

    name: str
    handle: Any  # llama_adapter_lora_p
    scale: float = 1.0


@dataclass
class Draw:
    """One sequence to generate: its prompt, its sampler (a llama.cpp sampler chain, owned by
    the draw from then on) and its limits."""

    prompt: list[int]
    sampler: Any  # llama_cpp._internals.LlamaSampler
    max_tokens: int
    top_logprobs: int | None = None  # None: none; k: the token's and the k likeliest
    adapter: Adapter | None = None
    fresh: bool = False  # evaluate the whole prompt (no shared prefix): seeded requests replay
    prompt_index: int = 0  # which of the request's prompts (cached tokens count once each)


@dataclass(frozen=True)
class Sampled:
    """A token one of a request's sequences drew, with its log-probability and the k likeliest
    (token id, logprob) when its draw asked for them."""

    choice: int
    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Ended:
    """A sequence is over: "stop" (the model's end of generation), "length" (max_tokens) or
    "error" (then `error` says what happened)."""

    choice: int
    reason: str
    error: str | None = None


class Generation:
    """A request's view of its sequences: their tokens as they are drawn, and the means to stop
    one or all of them. Closing is idempotent and safe from any thread."""

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self._events: queue.SimpleQueue[Sampled | Ended] = queue.SimpleQueue()
        self.closed = False
        self.stopped: set[int] = set()
        self.cached_tokens: dict[int, int] = {}  # prompt index → tokens it found evaluated

    def next(self) -> Sampled | Ended:
        """The next token or end of any of the sequences. Waits in short slices, so that an
        exception raised in this thread (a cancel, a timeout) is seen within WAKE_SECONDS."""
        while True:
            try:
                return self._events.get(timeout=WAKE_SECONDS)
            except queue.Empty:
                continue

    def stop(self, choice: int) -> None:
        """Draw no more tokens for one sequence (its answer reached a stop string)."""
        self._batcher.release(self, choice)

    def close(self) -> None:
        """Draw no more tokens for any sequence of the request."""
        self._batcher.release(self, None)

    @property
    def cached_prompt_tokens(self) -> int:
        return sum(self.cached_tokens.values())

    def put(self, event: Sampled | Ended) -> None:
        self._events.put(event)


@dataclass
class _Sequence:
    generation: Generation
    choice: int
    draw: Draw
    id: int = -1  # llama.cpp sequence id, once admitted
    kv: list[int] = field(default_factory=list)  # tokens evaluated, at positions 0..len-1
    todo: list[int] = field(default_factory=list)  # prompt tokens still to evaluate
    last: int | None = None  # drawn, not yet evaluated
    drawn: int = 0

    @property
    def released(self) -> bool:
        return self.generation.closed or self.choice in self.generation.stopped

    @property
    def adapter(self) -> str | None:
        return self.draw.adapter.name if self.draw.adapter else None


@dataclass
class _Entry:
    """A finished sequence's evaluated tokens, kept in the KV cache for later prompts."""

    adapter: str | None
    tokens: list[int]


def common_prefix(a: list[int], b: list[int], offset: int = 0) -> int:
    """How many leading tokens `a` shares with `b` from `offset` on."""
    n = min(len(a), len(b) - offset)
    i = 0
    while i < n and a[i] == b[offset + i]:
        i += 1
    return i


class Batcher:
    """The scheduler that owns one llama.cpp context (see the module's docstring).

    `parallel` sequences are decoded together; more wait their turn, first come first served.
    `cache_entries` finished sequences are kept for their prefixes. The context must have been
    made with ``n_seq_max >= parallel + cache_entries`` and a stream per sequence.
    """

    def __init__(
        self,
        ctx: Any,
        vocab: Any,
        *,
        parallel: int,
        cache_entries: int,
        n_batch: int,
        threads: Callable[[], int],
    ) -> None:
        self.ctx = ctx
        self.vocab = vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self.parallel = parallel
        self.cache_entries = cache_entries
        self.n_batch = n_batch
        self._threads = threads
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._batch = llama_cpp.llama_batch_init(max(n_batch, SMALL_CALL), 0, 1)
        self._cond = threading.Condition()
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._cached: OrderedDict[int, _Entry] = OrderedDict()  # seq id → entry, LRU first
        self._free = list(range(parallel + cache_entries - 1, -1, -1))
        self._adapter: str | None = None  # what the context applies now
        self._pid = 0

    # -- requests' side -------------------------------------------------------------------

    def submit(self, draws: list[Draw]) -> Generation:
        """Queue a request's sequences; its tokens come through the returned Generation."""
        generation = Generation(self)
        with self._cond:
            self._start_thread()
            self._waiting.extend(_Sequence(generation, i, d) for i, d in enumerate(draws))
            self._cond.notify()
        return generation

    def release(self, generation: Generation, choice: int | None) -> None:
        with self._cond:
            if choice is None:
                generation.closed = True
            else:
                generation.stopped.add(choice)
            self._cond.notify()

    def load(self) -> tuple[int, int]:
        """How many sequences run now, and how many wait for a place."""
        with self._cond:
            return len(self._running), len(self._waiting)

    def _start_thread(self) -> None:
        """Start the scheduler in this process. Threads do not survive a fork, and the model
        may have been loaded in the warm host before this replica was forked from it."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        threads = self._threads()
        llama_cpp.llama_set_n_threads(self.ctx, threads, threads)
        threading.Thread(target=self._loop, name="llama-cpp-batch", daemon=True).start()

    # -- the scheduler --------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._settle()
                while not self._running:
                    self._cond.wait()
                    self._settle()
                step = list(self._running)
            try:
                self._step(step)
            except Exception as exc:  # a bug here must not leave requests waiting forever
                logger.exception("llama.cpp batch step failed")
                for seq in step:
                    if seq in self._running:
                        self._fail(seq, f"the engine failed: {exc}")

    def _settle(self) -> None:
        """Between steps (lock held): let go of released sequences, admit waiting ones."""
        for seq in [s for s in self._running if s.released]:
            self._finish(seq)
        for seq in [s for s in self._waiting if s.released]:
            self._waiting.remove(seq)
        for seq in list(self._waiting):
            if len(self._running) >= self.parallel:
                break
            if self._admit(seq):
                self._waiting.remove(seq)

    def _admit(self, seq: _Sequence) -> bool:
        """Give `seq` a sequence id and the longest evaluated prefix of its prompt; False
        (stay waiting) while another sequence is still evaluating more of that prompt.

        The prefix comes from a cache entry, whose sequence id `seq` then takes over (its
        cells past the prefix are dropped), or from a running sequence, whose cache stream is
        copied (a whole-stream copy: only worth it for COPY_WORTH tokens or more)."""
        prompt = seq.draw.prompt
        running, shared_running = -1, 0
        entry, shared_entry = -1, 0
        if not seq.draw.fresh:
            for other in self._running:
                if other.adapter != seq.adapter:
                    continue
                n = common_prefix(other.kv, prompt)
                pending = common_prefix(other.todo, prompt, n) if n == len(other.kv) else 0
                if pending >= WORTH_WAITING:
                    return False  # it is evaluating our prefix right now: wait for it
                if n > shared_running:
                    running, shared_running = other.id, n
            for sid, cached in self._cached.items():
                if cached.adapter != seq.adapter:
                    continue
                if (n := common_prefix(cached.tokens, prompt)) > shared_entry:
                    entry, shared_entry = sid, n
        # The last prompt token is always evaluated: its logits are what the first draw needs.
        limit = len(prompt) - 1
        if entry >= 0 and min(shared_entry, limit) >= min(shared_running, limit):
            shared = min(shared_entry, limit)
            del self._cached[entry]
            seq.id = entry
        else:
            shared = min(shared_running, limit) if shared_running >= COPY_WORTH else 0
            seq.id = self._take_id()
            if shared:
                llama_cpp.llama_memory_seq_cp(self._memory, running, seq.id, -1, -1)
        llama_cpp.llama_memory_seq_rm(self._memory, seq.id, shared, -1)
        seq.kv, seq.todo = prompt[:shared], prompt[shared:]
        seq.generation.cached_tokens.setdefault(seq.draw.prompt_index, shared)
        self._running.append(seq)
        return True

    def _take_id(self) -> int:
        if not self._free:
            self._forget(next(iter(self._cached)))
        return self._free.pop()

    def _forget(self, sid: int) -> None:
        """Drop a cache entry and its cells."""
        del self._cached[sid]
        llama_cpp.llama_memory_seq_rm(self._memory, sid, -1, -1)
        self._free.append(sid)

    def _finish(self, seq: _Sequence) -> None:
        """A sequence is done: keep what it evaluated as a cache entry (an entry it extends
        is dropped: it adds nothing), or drop it if it holds nothing."""
        self._running.remove(seq)
        if not seq.kv:
            llama_cpp.llama_memory_seq_rm(self._memory, seq.id, -1, -1)
            self._free.append(seq.id)
            return
        for sid, entry in list(self._cached.items()):
            if entry.adapter == seq.adapter and common_prefix(entry.tokens, seq.kv) == len(
                entry.tokens
            ):
                self._forget(sid)
        self._cached[seq.id] = _Entry(seq.adapter, seq.kv)
        while len(self._cached) > self.cache_entries:
            self._forget(next(iter(self._cached)))

    def _fail(self, seq: _Sequence, why: str) -> None:
        seq.generation.put(Ended(seq.choice, "error", why))
        seq.kv = []
        with self._cond:
            self._finish(seq)

    def _end(self, seq: _Sequence, reason: str) -> None:
        seq.generation.put(Ended(seq.choice, reason))
        with self._cond:
            self._finish(seq)

    # -- one step -------------------------------------------------------------------------

    def _step(self, sequences: list[_Sequence]) -> None:
        """Every decoding sequence's next token and every short prompt, packed into calls of
        at most SMALL_CALL tokens (each adapter's in calls of their own); then long prompts,
        a chunk of n_batch each in a call of its own, up to n_batch tokens in all."""
        by_adapter: dict[str | None, list[_Sequence]] = {}
        for seq in sequences:
            by_adapter.setdefault(seq.adapter, []).append(seq)
        for group in by_adapter.values():
            self._use_adapter(group[0].draw.adapter)
            parts = [
                (seq, 1 if seq.last is not None else len(seq.todo))
                for seq in group
                if seq.last is not None or 0 < len(seq.todo) <= SMALL_CALL
            ]
            call: list[tuple[_Sequence, int]] = []
            for part in parts:
                if sum(n for _, n in call) + part[1] > SMALL_CALL:
                    self._evaluate(call)
                    call = []
                call.append(part)
            if call:
                self._evaluate(call)
        budget = self.n_batch
        for seq in sequences:
            if budget > 0 and len(seq.todo) > SMALL_CALL and seq in self._running:
                self._use_adapter(seq.draw.adapter)
                n = min(self.n_batch, len(seq.todo))
                self._evaluate([(seq, n)])
                budget -= n

    def _use_adapter(self, adapter: Adapter | None) -> None:
        name = adapter.name if adapter else None
        if name == self._adapter:
            return
        if adapter is None:
            llama_cpp.llama_set_adapters_lora(self.ctx, None, 0, None)
        else:
            handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter.handle)
            scales = (ctypes.c_float * 1)(adapter.scale)
            llama_cpp.llama_set_adapters_lora(self.ctx, handles, 1, scales)
        self._adapter = name

    def _evaluate(self, parts: list[tuple[_Sequence, int]]) -> None:
        """One call: for each (sequence, n), its drawn token (n = 1) or the next n tokens of
        its prompt; then a draw for each sequence whose prompt is whole."""
        entries: list[tuple[int, int, int, bool]] = []
        for seq, n in parts:
            tokens = [seq.last] if seq.last is not None else seq.todo[:n]
            whole = seq.last is not None or n == len(seq.todo)
            start = len(seq.kv)
            entries.extend(
                (t, start + i, seq.id, whole and i == n - 1) for i, t in enumerate(tokens)
            )
        status = self._decode(entries)
        if status != 0:
            for seq, _ in parts:
                self._fail(seq, f"llama_decode failed ({status})")
            return
        at = -1
        for seq, n in parts:
            at += n
            if seq.last is not None:
                seq.kv.append(seq.last)
                seq.last = None
            else:
                seq.kv.extend(seq.todo[:n])
                seq.todo = seq.todo[n:]
                if seq.todo:
                    continue
            self._draw(seq, at)

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> int:
        """Evaluate `entries` (token, position, sequence id, wants logits) in one call; the
        status llama_decode returns."""
        batch = self._batch
        batch.n_tokens = len(entries)
        for i, (token, pos, sid, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.seq_id[i][0] = sid
            batch.n_seq_id[i] = 1
            batch.logits[i] = logits
        return llama_cpp.llama_decode(self.ctx, batch)

    def _draw(self, seq: _Sequence, index: int) -> None:
        """Draw the sequence's next token from the logits at batch position `index`."""
        draw = seq.draw
        token = llama_cpp.llama_sampler_sample(draw.sampler.sampler, self.ctx, index)
        if llama_cpp.llama_vocab_is_eog(self.vocab, token):
            self._end(seq, "stop")
            return
        seq.drawn += 1
        if draw.top_logprobs is None:
            seq.generation.put(Sampled(seq.choice, token))
        else:
            logprob, top = self._logprobs(index, token, draw.top_logprobs)
            seq.generation.put(Sampled(seq.choice, token, logprob, top))
        if seq.drawn >= draw.max_tokens:
            self._end(seq, "length")
        else:
            seq.last = token

    def _logprobs(self, index: int, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
        """The token's log-probability and the k likeliest, from the logits at `index` (valid
        until the next call evaluates anything)."""
        pointer = llama_cpp.llama_get_logits_ith(self.ctx, index)
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        peak = float(logits.max())
        log_total = peak + float(np.log(np.exp(logits - peak).sum()))
        top: list[tuple[int, float]] = []
        if k:
            best = np.argpartition(logits, -k)[-k:]
            best = best[np.argsort(-logits[best])]
            top = [(int(i), float(logits[i]) - log_total) for i in best]
        return float(logits[token]) - log_total, top
