"""How the llama.cpp engine draws tokens: an OpenAI request's sampling fields (and the
package's defaults for them) as one ``Sampling``, JSON mode as a llama.cpp grammar, and the
seeds of n choices.

It is kept apart from the engine class (``llama_cpp.py``), which drives the token loop, so
that the mapping from request fields to llama.cpp's sampler settings can be read in one place.

Sampling follows OpenAI's defaults (temperature 1, top_p 1, no top_k, min_p or repetition
penalty) rather than llama-cpp-python's, and a request without a seed gets a random one:
llama-cpp-python's default derives it from a fixed value, so every replica would answer alike.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from llama_cpp._internals import LlamaModel, LlamaSampler
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from ember.engines import openai_shapes as shapes
from ember.engines.base import RequestError

SEED_RANGE = 0xFFFFFFFF  # llama.cpp seeds are uint32; 0xFFFFFFFF itself means "random"

# Request fields → Sampling attributes (top_k, min_p, repetition_penalty as vLLM takes them).
SAMPLING_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
# Fields beyond OpenAI's own (openai_shapes) that this engine honours.
COMPLETION_EXTRAS = shapes.VLLM_SAMPLING_FIELDS
CHAT_EXTRAS = COMPLETION_EXTRAS | {"response_format"}


@dataclass
class Sampling:
    """How to draw one completion; defaults are OpenAI's."""

    max_tokens: int | None = None  # None: until the context is full
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    top_logprobs: int | None = None  # None: no logprobs; k: the token's and k alternatives
    grammar: LlamaGrammar | None = None


def request_sampling(
    request: dict[str, Any],
    asked: shapes.Asked,
    stop: list[str],
    defaults: dict[str, Any] | None,
) -> Sampling:
    """The request's sampling, over the package's defaults (``engine_options.sampling``), over
    OpenAI's."""
    s = Sampling(stop=stop, seed=request.get("seed"), top_logprobs=asked.top_logprobs)
    for source in (defaults or {}, request):
        for key, attr in SAMPLING_FIELDS.items():
            if source.get(key) is not None:
                setattr(s, attr, source[key])
    if s.top_k < 0:  # vLLM's "off"
        s.top_k = 0
    return s


def sampler_chain(s: Sampling, model: LlamaModel, n_vocab: int, last_n: int) -> LlamaSampler:
    """llama.cpp's sampler chain for `s`, in the order llama-cpp-python's ``Llama.generate``
    builds it (penalties over the last `last_n` drawn tokens, the grammar, then greedy or
    top-k, top-p, min-p, temperature and a seeded draw), so that an answer does not depend on
    which of the two drew it."""
    chain = LlamaSampler()
    chain.add_penalties(
        n_vocab=n_vocab,
        penalty_last_n=last_n,
        penalty_repeat=s.repeat_penalty,
        penalty_freq=s.frequency_penalty,
        penalty_present=s.presence_penalty,
    )
    if s.grammar is not None:
        chain.add_grammar(model, s.grammar)
    if s.temperature == 0:
        chain.add_greedy()
        return chain
    chain.add_top_k(s.top_k)
    chain.add_typical(1.0, 1)
    chain.add_top_p(s.top_p, 1)
    chain.add_min_p(s.min_p, 1)
    chain.add_temp(s.temperature)
    chain.add_dist(s.seed % SEED_RANGE if s.seed is not None else secrets.randbelow(SEED_RANGE))
    return chain


def nth(s: Sampling, i: int) -> Sampling:
    """Choice i of n: its own seed (seed + i), so n choices differ yet replay alike."""
    if i == 0 or s.seed is None:
        return s
    return Sampling(**{**s.__dict__, "seed": s.seed + i})


def grammar(response_format: dict[str, Any] | None) -> LlamaGrammar | None:
    """JSON mode and structured outputs as a llama.cpp grammar."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    if kind == "json_schema":
        schema = (response_format or {}).get("json_schema", {}).get("schema")
        if not isinstance(schema, dict):
            raise RequestError("response_format.json_schema.schema is required", "response_format")
        try:
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except Exception as exc:
            raise RequestError(f"response_format: {exc}", param="response_format") from exc
    raise RequestError(f"response_format: unknown type {kind!r}", param="response_format")
