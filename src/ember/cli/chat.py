"""`ember chat`: talk to an LLM deployment through Ember's OpenAI-compatible API, the way an
application would, with the answer printed as it is generated and a line of figures after
each turn (time to first token, tokens/s) to check a deployment at a glance."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer
from rich.text import Text

from ember.cli.client import DEFAULT_URL, Client, CommandFailed
from ember.cli.console import err, out
from ember.cli.options import ApiToken, ServerUrl, complete_deployments, connect, examples

QUIT = {"/quit", "/exit", ":q"}

app = typer.Typer()


@app.command(
    epilog=examples(
        'ember chat ember/smollm2 -m "Name three colours"',
        'ember chat ember/smollm2 --system "Answer in French"  # a conversation',
        "ember chat ember/smollm2 < questions.txt  # one message per line",
    )
)
def chat(
    name: Annotated[
        str,
        typer.Argument(
            help="owner/name (or alias) of an LLM deployment.",
            autocompletion=complete_deployments,
        ),
    ],
    message: Annotated[
        str | None,
        typer.Option("--message", "-m", help="Ask one question and exit (else: a conversation)."),
    ] = None,
    system: Annotated[
        str | None, typer.Option(help="A system prompt for the conversation.")
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Most tokens per answer.")] = 512,
    temperature: Annotated[
        float | None, typer.Option(min=0, max=2, help="Sampling temperature (model default).")
    ] = None,
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Chat with an LLM deployment through the OpenAI-compatible API, answers streamed as they
    are generated, then time to first token and tokens/s. Reads stdin when it is not a
    terminal, one message per line.
    """
    with connect(url, token) as client:
        _chat(client, name, message, system, max_tokens, temperature)


def _chat(
    client: Client,
    model: str,
    message: str | None,
    system: str | None,
    max_tokens: int,
    temperature: float | None,
) -> None:
    """One turn when `message` is given, else a conversation on stdin until EOF or /quit."""
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    options: dict[str, Any] = {"max_tokens": max_tokens}
    if temperature is not None:
        options["temperature"] = temperature
    if message is not None:
        _turn(client, model, [*history, {"role": "user", "content": message}], options)
        return
    interactive = sys.stdin.isatty()
    if interactive:
        err.print(f"[dim]Chatting with {model}. /quit or Ctrl-D to leave.[/dim]")
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            return
        if line.strip() in QUIT:
            return
        if not line.strip():
            continue
        question = {"role": "user", "content": line}
        answer = _turn(client, model, [*history, question], options)
        history += [question, {"role": "assistant", "content": answer}]


def _turn(client: Client, model: str, messages: list[dict[str, str]], options: dict) -> str:
    body = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        **options,
    }
    started = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    usage: dict[str, int] | None = None
    with client.events("POST", "/v1/chat/completions", json=body) as events:
        for _, data in events:
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise CommandFailed(f"the model failed mid-answer: {chunk['error']['message']}")
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices", []):
                text = choice.get("delta", {}).get("content") or ""
                if text:
                    first = first or time.perf_counter()
                    pieces.append(text)
                    out.print(text, end="", markup=False, highlight=False, soft_wrap=True)
    out.print()
    out.file.flush()  # the answer before the figures, also when stdout is a pipe
    _figures(started, first, usage)
    return "".join(pieces)


def _figures(started: float, first: float | None, usage: dict[str, int] | None) -> None:
    ended = time.perf_counter()
    parts = []
    if first is not None:
        parts.append(f"first token {1000 * (first - started):.0f} ms")
    if usage:
        generated = usage.get("completion_tokens", 0)
        parts.append(f"{usage.get('prompt_tokens', 0)} in / {generated} out")
        if first is not None and generated > 1 and ended > first:
            parts.append(f"{(generated - 1) / (ended - first):.1f} tok/s")
    err.print(Text(" · ".join(parts), style="dim"))
