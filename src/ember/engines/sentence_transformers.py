"""Embeddings with sentence-transformers, batching concurrent requests into one forward pass.

An embedding request is small (a sentence or a few) and the model is cheap per text but not
per call: one `encode()` of 16 sentences costs little more than one of a single sentence,
because a forward pass has a fixed cost (Python dispatch, kernel launches, thread wake-ups)
that a lone sentence does not amortise. The worker runs up to the replica's concurrency (32
by default: the engine's entry in ``ember/packages/engines.py``) handler calls at once, each
on its own pool thread; calling `encode()` from each of them would only make them contend
for the same cores. So every caller hands its texts to one batcher thread and waits: the
batcher takes everything queued (up to `max_batch_size` texts), runs one `encode()` over it,
and gives each caller its own rows.

Engine options (``engine_options`` in ``ember.yaml``):

- ``device``: ``cuda`` when torch sees a GPU, else ``cpu``.
- ``max_batch_size`` (64): the most texts one forward pass takes. A request with more texts
  is still served whole, in one `encode()` that splits it into batches of this size.
- ``batch_wait_ms`` (0): how long the batcher waits for more requests after the first one
  before encoding. Zero is right almost always: while one batch runs, the next requests
  queue up, and the batcher takes them all at once when it is free (natural batching). Under
  load, batches grow by themselves; when idle, a lone request is served at once instead of
  waiting for company that is not coming. A wait only pays where a forward pass is so cheap
  (a big GPU, tiny model) that batches would otherwise stay small.
- ``normalize`` (unset): the model's own pipeline decides (all-MiniLM-L6-v2 ends in a
  Normalize module, so its vectors are unit length); ``true`` normalizes the output of models
  whose pipeline does not. ``false`` cannot undo a pipeline's Normalize and is refused.
- ``threads`` (unset): torch's intra-op threads; unset, torch follows ``OMP_NUM_THREADS``,
  which the runtime sets from the package's CPU request. Applied by the batcher thread when
  it starts (with the replica's first request): `setup()` may run in a warm host, which sets
  each replica's thread count from its environment after forking it.
- ``matryoshka_dimensions`` (unset): the shorter sizes the model was trained to be cut to
  (Matryoshka representation learning, stated on its model card). Only these may be asked
  for with the request's ``dimensions``; cutting any other model's vectors short degrades
  them silently, so that is refused.

Vectors equal ``SentenceTransformer.encode(texts)`` for the same texts (within float
rounding: a text's padding depends on its batch neighbours). Texts longer than the model's
``max_seq_length`` (256 tokens for all-MiniLM-L6-v2) are truncated, as sentence-transformers
does; the usage counts the tokens the model actually saw, read from the attention masks of the
same forward pass (texts are tokenized once).
"""

from __future__ import annotations

import base64
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from ember import scope
from ember.engines.base import RequestError, say
from ember.types import Input, InputSpec

SAYS = "sentence_transformers"  # the prefix of this engine's setup lines
OPTIONS = {
    "device",
    "max_batch_size",
    "batch_wait_ms",
    "normalize",
    "threads",
    "matryoshka_dimensions",
}
# The body fields of OpenAI's embeddings request; anything else is refused, not ignored.
REQUEST_FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}
MAX_INPUTS = 2048  # OpenAI's limit on one request's inputs
# How often a waiting caller wakes: a cancellation or timeout raised into its thread by the
# worker is only delivered between bytecodes, never inside a lock wait without a timeout.
POLL_SECONDS = 0.1

Embedded = tuple[np.ndarray, list[int]]  # one row per text, and each text's token count


@dataclass
class _Job:
    """One caller's texts waiting for the batcher, and where its answer goes."""

    texts: list[str]
    future: Future[Embedded] = field(default_factory=Future)


class Engine:
    """A sentence-transformers model serving OpenAI's `/v1/embeddings` and `predict()`."""

    def __init__(self, model: Path | None, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown sentence_transformers engine option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(OPTIONS))}"
            )
        self.model_path = model
        self.device: str | None = options.get("device")
        self.max_batch_size = int(options.get("max_batch_size", 64))
        self.batch_wait = float(options.get("batch_wait_ms", 0)) / 1000
        self.normalize: bool | None = options.get("normalize")
        threads = options.get("threads")
        self.threads = None if threads is None else int(threads)
        self.matryoshka_dimensions = {int(d) for d in options.get("matryoshka_dimensions", [])}
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.batch_wait < 0:
            raise ValueError("batch_wait_ms cannot be negative")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be at least 1")
        self.model: SentenceTransformer | None = None
        self.dimension = 0
        self.normalized = False
        # Observable by tests and logs: forward passes run, and texts they embedded.
        self.batches = 0
        self.texts_embedded = 0
        self._pending: deque[_Job] = deque()
        self._wake = threading.Condition()
        self._batcher: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # -- loading --------------------------------------------------------------------------

    def setup(self) -> None:
        """Load the model. Nothing here starts a thread, runs the model or sets torch's thread
        count: a warm host may run `setup()` and fork replicas from it, which threads (and the
        tokenizer's and OpenMP's native pools, started by a first `encode()`) would make
        unsafe, and each replica's thread count is set after its fork. The batcher starts
        with the first request instead, and applies the `threads` option then."""
        if self.model_path is None:
            raise ValueError(
                "the sentence_transformers engine needs `model:` in ember.yaml: a folder "
                "holding a sentence-transformers model (modules.json, weights, tokenizer)"
            )
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        threads = "from OMP_NUM_THREADS" if self.threads is None else f"{self.threads} per replica"
        say(SAYS, f"loading {self.model_path} on {device} (torch threads {threads})")
        began = time.perf_counter()
        # local_files_only: the weights are in the package; nothing may come from a hub.
        model = SentenceTransformer(str(self.model_path), device=device, local_files_only=True)
        model.eval()
        pipeline_normalizes = any(type(module).__name__ == "Normalize" for module in model)
        if self.normalize is False and pipeline_normalizes:
            raise ValueError(
                "normalize: false, but this model's pipeline ends in a Normalize module, "
                "which an engine option cannot take out; drop the option"
            )
        self.normalized = pipeline_normalizes or self.normalize is True
        self.dimension = int(model.get_embedding_dimension() or 0)
        too_long = sorted(d for d in self.matryoshka_dimensions if not 0 < d < self.dimension)
        if too_long:
            raise ValueError(
                f"matryoshka_dimensions {too_long}: each must be below the model's "
                f"{self.dimension} dimensions"
            )
        self.model = model
        say(
            SAYS,
            f"loaded in {time.perf_counter() - began:.2f} s ({self.dimension} dimensions, "
            f"max_seq_length {model.max_seq_length}, "
            f"{'normalized' if self.normalized else 'not normalized'})",
        )

    # -- serving --------------------------------------------------------------------------

    def embeddings(self, request: dict[str, Any]) -> dict[str, Any]:
        """OpenAI's `/v1/embeddings`: `input` is a string or a list of strings.

        Token-id inputs (lists of ints) are refused rather than decoded: OpenAI's clients
        send them in OpenAI's own tokenization (tiktoken), which means nothing to this
        model's vocabulary, and decoding ids of this model's tokenizer back to text would not
        reproduce the ids anyway. `encoding_format: base64` (what the official openai client
        asks for by default) is little-endian float32 bytes, base64-encoded.
        """
        unknown = sorted(set(request) - REQUEST_FIELDS)
        if unknown:
            raise RequestError(
                f"{unknown[0]} is not a parameter of the embeddings API", param=unknown[0]
            )
        texts = _texts(request.get("input"))
        encoding = request.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise RequestError(
                f"encoding_format must be 'float' or 'base64', not {encoding!r}",
                param="encoding_format",
            )
        dimensions = self._dimensions(request.get("dimensions"))
        vectors, counts = self._embed(texts)
        if dimensions is not None:
            vectors = self._shorten(vectors, dimensions)
        tokens = sum(counts)
        scope.record_metric("input_token_count", tokens)
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(vector, encoding)}
            for i, vector in enumerate(vectors)
        ]
        return {
            "object": "list",
            "data": data,
            "model": request.get("model") or self._name(),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def predict(
        self,
        text: str | None = Input(default=None, description="One text to embed"),
        texts: list[str] | None = Input(
            default=None, description="Several texts to embed (give text or texts, not both)"
        ),
    ) -> list[list[float]]:
        """Embed one text or several: one vector (a list of floats) per text, in order."""
        # Called directly (not through the worker), unset parameters are Input(...) records.
        text = None if isinstance(text, InputSpec) else text
        texts = None if isinstance(texts, InputSpec) else texts
        if (text is None) == (texts is None):
            raise ValueError("give exactly one of `text` (one string) or `texts` (a list)")
        try:
            batch = _texts(text if text is not None else texts)
        except RequestError as exc:  # name the input as this API calls it
            raise RequestError(str(exc), param="text" if text is not None else "texts") from None
        vectors, counts = self._embed(batch)
        scope.record_metric("input_token_count", sum(counts))
        return vectors.tolist()

    # -- the batcher ----------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> Embedded:
        """Queue `texts` for the batcher and wait for their rows and token counts."""
        if self.model is None:
            raise RuntimeError("setup() has not loaded the model")
        batcher = self._ensure_batcher()
        job = _Job(texts)
        with self._wake:
            self._pending.append(job)
            self._wake.notify()
        try:
            while True:
                try:
                    return job.future.result(timeout=POLL_SECONDS)
                except TimeoutError:
                    if not batcher.is_alive():
                        raise RuntimeError("the embedding batcher thread has stopped") from None
        except BaseException:
            # Canceled or timed out while queued: the batcher skips a canceled job.
            job.future.cancel()
            raise

    def _ensure_batcher(self) -> threading.Thread:
        batcher = self._batcher
        if batcher is not None and batcher.is_alive():
            return batcher
        with self._start_lock:
            if self._batcher is None or not self._batcher.is_alive():
                self._batcher = threading.Thread(
                    target=self._run_batcher, name="ember-embedding-batcher", daemon=True
                )
                self._batcher.start()
            return self._batcher

    def _run_batcher(self) -> None:
        # Here, not in setup(): this runs in the replica, after the warm host's fork and its
        # thread setting, and on the thread that runs every forward pass (OpenMP's thread
        # count is a per-thread setting).
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        while True:
            jobs = [job for job in self._take_batch() if job.future.set_running_or_notify_cancel()]
            if jobs:
                self._encode_jobs(jobs)

    def _take_batch(self) -> list[_Job]:
        """Block for the first job, then take whatever else is queued, up to max_batch_size
        texts (waiting up to batch_wait_ms for more when that is set)."""
        with self._wake:
            while not self._pending:
                self._wake.wait()
            batch = [self._pending.popleft()]
            size = len(batch[0].texts)
            deadline = time.monotonic() + self.batch_wait
            while True:
                while self._pending and size + len(self._pending[0].texts) <= self.max_batch_size:
                    job = self._pending.popleft()
                    batch.append(job)
                    size += len(job.texts)
                remaining = deadline - time.monotonic()
                if size >= self.max_batch_size or self._pending or remaining <= 0:
                    return batch
                self._wake.wait(remaining)

    def _encode_jobs(self, jobs: list[_Job]) -> None:
        """One forward pass for all jobs; if it fails, each job alone, so that one bad input
        (or a batch too big for the device) fails only the requests it belongs to."""
        try:
            vectors, counts = self._encode([text for job in jobs for text in job.texts])
        except Exception as exc:
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
                return
            for job in jobs:
                try:
                    job.future.set_result(self._encode(job.texts))
                except Exception as alone:
                    job.future.set_exception(alone)
            return
        except BaseException as exc:  # the thread is going down: nobody may wait forever
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            raise
        start = 0
        for job in jobs:
            end = start + len(job.texts)
            job.future.set_result((vectors[start:end], counts[start:end]))
            start = end

    def _encode(self, texts: list[str]) -> Embedded:
        """Rows for `texts` and each text's token count as the model sees it (special tokens
        included, truncated to max_seq_length), from one tokenization: with
        ``output_value=None``, `encode()` gives each text's features (its attention mask
        among them) beside its embedding.

        Those features hold each batch's token embeddings too, so `encode()` gets one batch at
        a time (of the longest texts left, as it would batch them itself), and only the rows
        are kept. Runs on the batcher thread only: a fast tokenizer must not be used from two
        threads at once."""
        assert self.model is not None
        rows: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        counts = [0] * len(texts)
        longest_first = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(texts), self.max_batch_size):
            batch = longest_first[start : start + self.max_batch_size]
            outputs = self.model.encode(
                [texts[i] for i in batch],
                batch_size=len(batch),
                output_value=None,
                show_progress_bar=False,
            )
            for i, features in zip(batch, outputs, strict=True):
                rows[i] = features["sentence_embedding"]
                counts[i] = _token_count(features)
            self.batches += 1
        with torch.inference_mode():
            vectors = torch.stack(rows).float()
            if self.normalize is True:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        self.texts_embedded += len(texts)
        return vectors.cpu().numpy(), counts

    # -- request details ------------------------------------------------------------------

    def _dimensions(self, value: Any) -> int | None:
        """The size to cut vectors to, or None for the model's own."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError("dimensions must be a positive integer", param="dimensions")
        if value == self.dimension:
            return None
        if value in self.matryoshka_dimensions:
            return value
        allowed = sorted(self.matryoshka_dimensions | {self.dimension})
        raise RequestError(
            f"dimensions={value} is not available: this model makes {self.dimension}-"
            f"dimensional embeddings and can only give {allowed} (shortening a model's vectors "
            "only works for the sizes it was trained for; see the engine's "
            "matryoshka_dimensions option)",
            param="dimensions",
        )

    def _shorten(self, vectors: np.ndarray, dimensions: int) -> np.ndarray:
        """The first `dimensions` components, renormalized when the model's vectors are unit
        length (as OpenAI does for text-embedding-3), so cosine and dot product still agree."""
        cut = vectors[:, :dimensions]
        if not self.normalized:
            return cut
        norms = np.linalg.norm(cut, axis=1, keepdims=True)
        return (cut / np.maximum(norms, 1e-12)).astype(np.float32)

    def _name(self) -> str:
        return self.model_path.name if self.model_path is not None else "sentence-transformers"


def _texts(value: Any) -> list[str]:
    """The request's `input` as a non-empty list of non-empty strings, or a RequestError."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RequestError(
            "input must be a non-empty string or a non-empty list of strings", param="input"
        )
    if all(isinstance(item, str) for item in value):
        if any(not item for item in value):
            raise RequestError("input cannot contain empty strings", param="input")
        if len(value) > MAX_INPUTS:
            raise RequestError(
                f"input has {len(value)} items; at most {MAX_INPUTS} per request", param="input"
            )
        return value
    if all(isinstance(item, int) and not isinstance(item, bool) for item in value) or all(
        isinstance(item, list) for item in value
    ):
        raise RequestError(
            "token-id input is not supported: this model has its own tokenizer, so send text "
            "(e.g. langchain's OpenAIEmbeddings(check_embedding_ctx_length=False))",
            param="input",
        )
    raise RequestError("input must be a string or a list of strings", param="input")


def _token_count(features: dict[str, Any]) -> int:
    """The tokens the model saw of one text: its attention mask's ones, or, where the
    tokenizer gives no mask, its ids (padding included: there is nothing to tell it by)."""
    mask = features.get("attention_mask")
    if mask is not None:
        return int(mask.sum())
    return len(features["input_ids"])


def _encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()
