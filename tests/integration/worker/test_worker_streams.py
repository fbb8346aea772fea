"""A streamed output's iterator is closed the moment its prediction ends, whatever ended it:
a generator suspended at a yield may hold a lock or a model's context (one llama.cpp context
per replica), and waiting for the garbage collector would stall the replica's next request."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ember.packages.predictor import Predictor
from ember.worker.runner import Job, Runner


def _streaming_predictor(lock: threading.Lock) -> Predictor:
    def chat_completions(request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with lock:
            for i in range(3):
                yield {"choices": [{"index": 0, "delta": {"content": str(i)}}]}

    def predict() -> str:
        return "unused"

    return Predictor(
        name="streams",
        setup=lambda: None,
        predict=predict,
        inputs=[],
        output_type=str,
        openai={"chat.completions": chat_completions},
    )


def test_a_failed_send_closes_the_stream_and_frees_its_lock(tmp_path: Path) -> None:
    lock = threading.Lock()
    sent: list[dict[str, Any]] = []

    def send(message: dict[str, Any]) -> None:
        if message["ev"] == "output":
            raise ConnectionError("the runtime went away mid-stream")
        sent.append(message)

    gc.disable()  # the generator must be closed by the runner, not collected
    try:
        runner = Runner(_streaming_predictor(lock), send, tmp_path)
        runner.run_sync_job(Job("p1", {"stream": True}, {}, None, "chat.completions"))
        assert not lock.locked()
    finally:
        gc.enable()
    done = sent[-1]
    assert done["ev"] == "done" and done["status"] == "failed"
    assert "went away" in done["error"]


def test_an_openai_stream_is_not_sent_twice(tmp_path: Path) -> None:
    sent: list[dict[str, Any]] = []
    runner = Runner(_streaming_predictor(threading.Lock()), sent.append, tmp_path)
    runner.run_sync_job(Job("p2", {"stream": True}, {}, None, "chat.completions"))
    outputs = [m for m in sent if m["ev"] == "output"]
    assert [m["value"]["choices"][0]["delta"]["content"] for m in outputs] == ["0", "1", "2"]
    assert sent[-1]["status"] == "succeeded" and sent[-1]["output"] is None
