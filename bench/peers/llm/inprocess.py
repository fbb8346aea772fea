"""llama-cpp-python called directly, the way a user without a server would: one `Llama`, and
for concurrent streams threads sharing it behind a lock (a `Llama` runs one sequence at a time
and is not thread-safe). Run by bench/llm.py inside the llama-cpp bench virtualenv (the same
one `python -m llama_cpp.server` runs from).

    python inprocess.py --model GGUF --threads N [--n-ctx 2048]

Loads the model, prints `ready`, then answers each JSON line on stdin
({"concurrency", "prompts", "max_tokens", "seed"}: one request per prompt) with one JSON line: every
request's start, the arrival of each chunk with content, its end (perf_counter_ns), its text
and its token count. `quit` (or EOF) exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import llama_cpp

now_ns = time.perf_counter_ns


def one_request(
    llm: llama_cpp.Llama, lock: threading.Lock, job: dict[str, Any], messages: list[dict]
) -> dict:
    start = now_ns()  # "sent": before waiting for the model, as a queued HTTP request would
    chunks: list[int] = []
    text: list[str] = []
    first_event = None
    with lock:
        stream = llm.create_chat_completion(
            messages,
            max_tokens=job["max_tokens"],
            temperature=0.0,
            seed=job["seed"],
            stream=True,
        )
        for chunk in stream:
            first_event = first_event or now_ns()
            choices = chunk["choices"]
            content = choices[0]["delta"].get("content") if choices else None
            if content:
                chunks.append(now_ns())
                text.append(content)
    end = now_ns()
    prompt = messages[0]["content"]
    return {"start": start, "chunks": chunks, "end": end, "text": "".join(text), "usage": None,
            "prompt": prompt, "first_event": first_event}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()
    llm = llama_cpp.Llama(
        model_path=args.model,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    lock = threading.Lock()
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip() or line.strip() == "quit":
            break
        job = json.loads(line)
        with ThreadPoolExecutor(job["concurrency"]) as pool:
            futures = [pool.submit(one_request, llm, lock, job, m) for m in job["prompts"]]
            results = [f.result() for f in futures]
        print(json.dumps({"requests": results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
