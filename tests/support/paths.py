"""Where the tests' models and the repository's examples are."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests" / "models"  # Cog, Truss and Ember packages written for the tests
EXAMPLES = ROOT / "examples"
BENCH = ROOT / "bench"


def model_path(kind: str, name: str) -> Path:
    """A test model's package folder, e.g. `model_path("cog", "hello-world")`."""
    return MODELS / kind / name
