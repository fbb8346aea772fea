"""`ember logs`: a prediction's logs, and with -f, its logs as they come until it ends."""

from __future__ import annotations

from typing import Annotated

import typer

from ember.cli.client import DEFAULT_URL, ApiError, Client, CommandFailed
from ember.cli.console import err
from ember.cli.options import ApiToken, ServerUrl, connect, examples
from ember.cli.predict import TERMINAL, follow, write

app = typer.Typer()


@app.command(
    epilog=examples(
        "ember logs 4dhb7hve3b18pjbvxyif7fkesr",
        "ember logs 4dhb7hve3b18pjbvxyif7fkesr -f  # until it ends",
        "ember status  # lists recent failures with their ids",
    )
)
def logs(
    prediction_id: Annotated[str, typer.Argument(help="The prediction's id.")],
    follow_logs: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new logs until it ends.")
    ] = False,
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Print a prediction's logs; with -f, follow a running one until it ends."""
    with connect(url, token) as client:
        _logs(client, prediction_id, follow_logs)


def _logs(client: Client, prediction_id: str, keep_following: bool) -> None:
    if not prediction_id or "/" in prediction_id:
        raise CommandFailed(f"{prediction_id!r} is not a prediction id", 2)
    try:
        prediction = client.get(f"/v1/predictions/{prediction_id}")
    except ApiError as exc:
        if exc.status == 404:
            raise CommandFailed(
                f"no prediction {prediction_id}: copy the id `ember predict` printed"
            ) from None
        raise
    if keep_following and prediction["status"] not in TERMINAL:
        final = follow(client, prediction, None, write)
    else:
        write(prediction.get("logs") or "")
        final = prediction
    note = f"prediction {final['id']}: {final['status']}"
    if final.get("error"):
        note += f" ({final['error']})"
    err.print(f"[dim]{note}[/dim]", highlight=False)
