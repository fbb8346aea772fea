"""LoRA adapters for SmolLM2 written as GGUF files, for the llama.cpp engine's tests: no
adapter ships on PyPI, and what is tested is that one is applied per sequence (a zero adapter
must change nothing, a random one must change the answer), not what a trained one says."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

# Square projections (576 x 576 on SmolLM2-135M), so ggml's and numpy's axis orders agree.
TARGETS = ("attn_q", "attn_output")


def write_lora(
    base: Path, out: Path, *, rank: int = 8, strength: float = 0.0, seed: int = 0
) -> Path:
    """A LoRA adapter for `base` at `out`: A random, B drawn with standard deviation
    `strength` (0: B = 0, an adapter that adds nothing)."""
    reader = gguf.GGUFReader(base)
    arch = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")
    shapes = {t.name: [int(n) for n in t.shape] for t in reader.tensors}
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(out, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    for name, shape in sorted(shapes.items()):
        if not name.startswith("blk.") or name.split(".")[2] not in TARGETS:
            continue
        n_in, n_out = shape
        stem = name.removesuffix(".weight")
        a = rng.normal(0, 1 / np.sqrt(n_in), (rank, n_in)).astype(np.float32)
        b = (
            rng.normal(0, strength, (n_out, rank)).astype(np.float32)
            if strength
            else np.zeros((n_out, rank), np.float32)
        )
        writer.add_tensor(f"{stem}.weight.lora_a", a)
        writer.add_tensor(f"{stem}.weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
