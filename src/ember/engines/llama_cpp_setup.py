"""What the llama.cpp engine needs to load a model: the ``engine_options`` ember.yaml may set
and their checks, the GGUF file a package names, the chat template it formats prompts with,
and llama.cpp's weight-loading progress on the replica's log.

It is kept apart from the engine class (``llama_cpp.py``) because none of it runs per
request: it is what ``Engine.__init__`` and ``Engine.setup`` call once, and most of it works
around what llama-cpp-python does not expose (named chat templates, a progress callback).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import llama_chat_format

from ember.engines.llama_cpp_batch import SMALL_CALL, Adapter
from ember.engines.llama_cpp_sampling import SAMPLING_FIELDS

SAYS = "llama.cpp"  # the prefix of this engine's setup lines
MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ: sequence ids one context may hold

# engine_options → (type, default, what it does)
OPTIONS: dict[str, tuple[type | tuple[type, ...], Any, str]] = {
    "n_ctx": (int, 2048, "context length in tokens of each sequence (prompt + completion)"),
    "n_threads": (int, None, "CPU threads; default: the replica's OMP_NUM_THREADS, else 1"),
    "n_batch": (int, 512, "prompt tokens evaluated per batch"),
    "parallel": (int, 8, "sequences decoded together (continuous batching); the concurrency"),
    "cached_prompts": (int, 2, "finished sequences kept for later prompts' shared prefixes"),
    "lora_adapters": (dict, None, "name: GGUF LoRA file; a request picks one with `model`"),
    "chat_format": (str, None, "a llama-cpp-python chat format; default: the GGUF's template"),
    "n_gpu_layers": (int, 0, "layers offloaded to a GPU (GPU builds only; -1: all)"),
    "use_mmap": (bool, True, "map the weights instead of reading them into memory"),
    "sampling": (dict, None, "defaults for requests that leave them out, e.g. {temperature: 0.2}"),
}


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """The package's engine_options, every one of OPTIONS present (its default where left
    out); an unknown name or a value of the wrong type is a ValueError naming what is known."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        known = "; ".join(f"{k} ({why})" for k, (_, _, why) in OPTIONS.items())
        raise ValueError(f"unknown llama_cpp engine_options {', '.join(unknown)}: known: {known}")
    checked = {}
    for name, (kind, default, _) in OPTIONS.items():
        value = options.get(name, default)
        if value is not None and (
            not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        ):
            raise ValueError(f"engine_options.{name} must be {kind.__name__}, not {value!r}")
        checked[name] = value
    for name in ("n_ctx", "n_batch", "parallel"):
        if checked[name] is not None and checked[name] < 1:
            raise ValueError(f"engine_options.{name} must be at least 1, not {checked[name]}")
    sequences = checked["parallel"] + checked["cached_prompts"]
    if checked["cached_prompts"] < 0 or sequences > MAX_SEQUENCES:
        raise ValueError(
            f"engine_options: parallel + cached_prompts must be at most {MAX_SEQUENCES} "
            f"(llama.cpp's limit), and cached_prompts at least 0; got {checked['parallel']} + "
            f"{checked['cached_prompts']}"
        )
    adapters = checked["lora_adapters"] or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in adapters.items()):
        raise ValueError("engine_options.lora_adapters maps names to GGUF file paths (strings)")
    unknown = sorted(set(checked["sampling"] or {}) - set(SAMPLING_FIELDS))
    if unknown:
        raise ValueError(
            f"engine_options.sampling: unknown {', '.join(unknown)}; known: "
            + ", ".join(SAMPLING_FIELDS)
        )
    return checked


def gguf_file(model: Path) -> Path:
    """`model` itself, or the one .gguf file in the folder it names."""
    if model.is_file():
        return model
    found = sorted(model.glob("*.gguf"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise FileNotFoundError(f"{model}: expected exactly one .gguf file, found {names}")
    return found[0]


def chat_formatter(llm: llama_cpp.Llama, name: str | None) -> tuple[Callable[..., Any] | None, str]:
    """The prompt formatter for chat: the GGUF's own template, one of its named templates
    (``chat_template.<name>``), or a format llama-cpp-python ships (chatml, llama-3...)."""
    metadata = llm.metadata

    def jinja(template: str) -> Callable[..., Any]:
        def text(token: int) -> str:
            return llm.detokenize([token], special=True).decode() if token >= 0 else ""

        return llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=text(llm.token_eos()),
            bos_token=text(llm.token_bos()),
            stop_token_ids=[llm.token_eos()],
        )

    if name is None:
        template = metadata.get("tokenizer.chat_template")
        return (jinja(template), "from the GGUF") if template else (None, "none")
    if name.startswith("chat_template."):
        key = "tokenizer." + name
        if key not in metadata:
            raise ValueError(f"chat_format {name!r}: the GGUF has no {key}")
        return jinja(metadata[key]), name
    try:
        handler = llama_chat_format.get_chat_completion_handler(name)
    except llama_chat_format.LlamaChatCompletionHandlerNotFoundException as exc:
        raise ValueError(f"chat_format: {exc}") from None
    # Formats registered with @register_chat_format wrap a plain prompt formatter; the others
    # (function calling, vision) generate by themselves and do not fit this engine.
    free = handler.__code__.co_freevars
    if "chat_formatter" not in free or handler.__closure__ is None:
        raise ValueError(f"chat_format {name!r} is not a prompt format this engine can use")
    return handler.__closure__[free.index("chat_formatter")].cell_contents, name


def batch_context(llm: llama_cpp.Llama, options: dict[str, Any], threads: int) -> Any:
    """The context the batcher decodes in: a KV cache stream of n_ctx cells for each of the
    `parallel` running sequences and the `cached_prompts` kept ones (llama_cpp_batch.py says
    why each sequence has a stream of its own)."""
    params = llama_cpp.llama_context_default_params()
    params.n_seq_max = options["parallel"] + options["cached_prompts"]
    params.n_ctx = options["n_ctx"] * params.n_seq_max
    params.n_batch = params.n_ubatch = max(options["n_batch"], SMALL_CALL)
    params.kv_unified = False
    params.n_threads = params.n_threads_batch = threads
    params.no_perf = True
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    if not ctx:
        raise RuntimeError(
            f"llama.cpp could not make a context of {params.n_seq_max} sequences of "
            f"{options['n_ctx']} tokens: lower engine_options.n_ctx, parallel or cached_prompts"
        )
    return ctx


def load_adapter(llm: llama_cpp.Llama, name: str, path: Path, scale: float = 1.0) -> Adapter:
    """A GGUF LoRA adapter loaded on the model (made for it: same architecture and shapes)."""
    if not path.is_file():
        raise FileNotFoundError(f"LoRA adapter {name!r}: {path} does not exist")
    handle = llama_cpp.llama_adapter_lora_init(llm.model, str(path).encode())
    if not handle:
        raise ValueError(
            f"LoRA adapter {name!r}: llama.cpp could not load {path} (a GGUF LoRA made for this "
            "model is needed; convert_lora_to_gguf.py makes one from a PEFT adapter)"
        )
    return Adapter(name, handle, scale)


@contextmanager
def load_progress() -> Iterator[None]:
    """Print llama.cpp's weight-loading progress at each quarter.

    llama-cpp-python offers no hook for llama.cpp's progress callback and silences fds 1 and 2
    while loading, so the callback is set on the load call's parameters, and writes to the
    stream stderr was before (the worker's capture), or to a copy of fd 2 when that stream is
    the process's own stderr (which is silenced)."""
    module = llama_cpp.llama_cpp
    load = getattr(module, "llama_model_load_from_file", None)
    if load is None:  # another llama-cpp-python: load without progress rather than fail
        yield
        return
    stream = sys.stderr
    fd = os.dup(2) if stream is sys.__stderr__ else None
    reached = [0]

    def report(progress: float, _user_data: Any) -> bool:
        quarter = int(progress * 4 + 1e-6)
        if quarter > reached[0]:
            reached[0] = quarter
            line = f"{SAYS}: weights {quarter * 25}%\n"
            try:
                if fd is not None:
                    os.write(fd, line.encode())
                else:
                    stream.write(line)
                    stream.flush()
            except Exception:  # progress is a courtesy, never a reason to fail the load
                pass
        return True

    callback = llama_cpp.llama_progress_callback(report)

    def load_with_progress(path: bytes, params: Any) -> Any:
        params.progress_callback = callback
        try:
            return load(path, params)
        finally:
            params.progress_callback = llama_cpp.llama_progress_callback()

    module.llama_model_load_from_file = load_with_progress
    try:
        yield
    finally:
        module.llama_model_load_from_file = load
        if fd is not None:
            os.close(fd)
