"""The CLI's conveniences: `ember status`, `ember token ls/rm`, an example in every `--help`,
tab completion, waiting for --min-instances, hints that say what to do next and `ember logs -f`,
run as real `python -m ember` processes against one real `ember serve` for the whole module."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from ember import __version__
from ember.cli.main import app
from tests.support.server import TOKEN, EmberServer, free_port, running

pytestmark = pytest.mark.timeout(120)

NAME = "polish"
REF = f"ember/{NAME}"
# Logs and yields slowly (for `logs -f`), and fails on request (for `ember status`).
PREDICT_PY = """
import time
from collections.abc import Iterator
from pathlib import Path


class Predictor:
    def predict(self, n: int = 3, delay: float = 0.0, fail: str = "") -> Iterator[str]:
        for i in range(n):
            print(f"line {i}", flush=True)
            yield f"item {i}"
            time.sleep(delay)
        if fail:
            raise RuntimeError(fail)
"""


# The installed script, as shells complete it (`python -m ember` is another program name).
EMBER_SCRIPT = str(Path(sys.executable).parent / "ember")


def ember(*args: str, url: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    """The real `ember` command, as a user's shell runs it."""
    env = {**os.environ, "EMBER_URL": url, "EMBER_TOKEN": token, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "ember", *args], env=env, capture_output=True, text=True, timeout=90
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with running(tmp_path_factory.mktemp("ember-cli-polish")) as ember_server:
        yield ember_server


@pytest.fixture(scope="module")
def deployed(
    server: EmberServer, tmp_path_factory: pytest.TempPathFactory
) -> subprocess.CompletedProcess[str]:
    """ember/polish with one replica kept ready (so predictions start at once)."""
    folder = tmp_path_factory.mktemp("polish")
    (folder / "ember.yaml").write_text(f"name: {NAME}\npredictor: predict.py:Predictor\n")
    (folder / "predict.py").write_text(PREDICT_PY)
    result = ember("deploy", str(folder), "--name", REF, "--min-instances", "1", url=server.url)
    assert result.returncode == 0, result.stderr
    return result


def test_deploy_with_min_instances_waits_until_they_are_ready(
    deployed: subprocess.CompletedProcess[str], api: httpx.Client
) -> None:
    assert "1 ready" in deployed.stderr
    replicas = api.get(f"/v1/deployments/{REF}").json()["status"]["replicas"]
    assert replicas["ready"] == 1


def test_status_shows_server_deployments_spend_and_failures(
    server: EmberServer, api: httpx.Client, deployed: subprocess.CompletedProcess[str]
) -> None:
    failed = api.post(
        f"/v1/deployments/{REF}/predictions",
        json={"input": {"n": 1, "fail": "the polish cracked"}},
        headers={"Prefer": "wait"},
    ).json()
    assert failed["status"] == "failed"

    result = ember("status", url=server.url)
    assert result.returncode == 0, result.stderr
    assert f"Ember {__version__} at {server.url}" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith(f"│ {REF}"))
    assert "1 ready" in row
    assert "1-1" in row  # min-max instances
    assert "Spend, last 24 h" in result.stdout
    failure = next(line for line in result.stdout.splitlines() if failed["id"] in line)
    assert "the polish cracked" in failure
    assert "ember logs ID" in result.stderr


def test_status_without_a_server_says_how_to_start_one() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = ember("status", url=url)
    assert result.returncode != 0
    assert f"no Ember server at {url}" in result.stderr
    assert "start one with `ember serve`" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_without_a_token_shows_the_server_then_where_the_token_is(
    server: EmberServer,
) -> None:
    result = ember("status", url=server.url, token="")
    assert result.returncode == 1
    assert f"at {server.url}" in result.stdout  # the server itself is up
    assert "set EMBER_TOKEN or pass --token" in result.stderr
    assert "`ember serve` printed the admin token" in result.stderr


def test_token_ls_and_rm_round_trip(server: EmberServer, api: httpx.Client) -> None:
    created = api.post("/v1/tokens", json={"name": "polish-ci", "scope": "predict"}).json()
    listed = ember("token", "ls", url=server.url)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if created["id"] in line)
    assert "polish-ci" in row
    assert "predict" in row

    removed = ember("token", "rm", created["id"], url=server.url)
    assert removed.returncode == 0, removed.stderr
    assert f"revoked token {created['id']}" in removed.stderr
    refused = httpx.get(
        f"{server.url}/v1/account",
        headers={"Authorization": f"Bearer {created['token']}"},
        timeout=10,
    )
    assert refused.status_code == 401
    with_revoked = ember("ls", url=server.url, token=created["token"])
    assert with_revoked.returncode == 1
    assert "The token was refused" in with_revoked.stderr
    assert created["id"] not in ember("token", "ls", url=server.url).stdout

    again = ember("token", "rm", created["id"], url=server.url)
    assert again.returncode == 1
    assert "`ember token ls` lists them" in again.stderr


def test_unknown_names_point_at_the_listing_commands(server: EmberServer) -> None:
    advise = ember("advise", "ember/nothing-here", url=server.url)
    assert advise.returncode == 1
    assert "`ember ls` lists deployments" in advise.stderr
    budget = ember("budget", "rm", "bud_nothing", url=server.url)
    assert budget.returncode == 1
    assert "`ember budget ls` lists them" in budget.stderr
    limit = ember("budget", "set", "--token-id", "tok_nothing", "--limit", "1", url=server.url)
    assert limit.returncode == 1
    assert "no token tok_nothing: `ember token ls` lists ids" in limit.stderr


def test_logs_follow_prints_a_running_prediction_until_it_ends(
    server: EmberServer, api: httpx.Client, deployed: subprocess.CompletedProcess[str]
) -> None:
    prediction = api.post(
        f"/v1/deployments/{REF}/predictions", json={"input": {"n": 8, "delay": 0.5}}
    ).json()
    process = server.cli_process("logs", prediction["id"], "-f")
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "line 0\n"
        # Printed while the prediction still runs: followed, not read at the end.
        status = api.get(f"/v1/predictions/{prediction['id']}").json()["status"]
        assert status == "processing"
        # Read on through the same buffered file: communicate() would read the pipe beneath
        # it and miss what readline() had already buffered (two lines can come in one read).
        rest = process.stdout.read()
        process.wait(timeout=60)
        assert process.stderr is not None
        stderr = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "line 0\n" + rest == "".join(f"line {i}\n" for i in range(8))
    assert "succeeded" in stderr
    final = api.get(f"/v1/predictions/{prediction['id']}").json()
    assert final["status"] == "succeeded"


def test_bash_completion_completes_commands_and_deployment_names(
    server: EmberServer, deployed: subprocess.CompletedProcess[str]
) -> None:
    script = subprocess.run(
        [EMBER_SCRIPT, "--show-completion", "bash"], capture_output=True, text=True, timeout=30
    )
    assert script.returncode == 0, script.stderr
    assert "complete -o default -F _ember_completion ember" in script.stdout

    def complete(words: str) -> list[str]:
        env = {
            **os.environ,
            "EMBER_URL": server.url,
            "EMBER_TOKEN": TOKEN,
            "_EMBER_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1),
        }
        result = subprocess.run([EMBER_SCRIPT], env=env, capture_output=True, text=True, timeout=30)
        return result.stdout.split()

    assert complete("ember sta") == ["status"]
    assert complete("ember token ") == ["create", "ls", "rm"]
    assert complete("ember predict ember/pol") == [REF]


def _commands(group: TyperGroup, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group under `group`, as the words that name it."""
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, TyperGroup):
            yield from _commands(command, (*path, name))


def test_every_help_has_an_example() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    runner = CliRunner()
    names = list(_commands(root))
    assert ("status",) in names and ("token", "rm") in names
    for words in names:
        result = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, (words, result.output)
        assert "Example" in result.output, f"`ember {' '.join(words)} --help` has no example"


def test_top_level_help_teaches_the_first_steps() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    for step in ("ember serve", "ember deploy", "ember predict", "ember status"):
        assert step in result.output
    assert "ember --install-completion" in result.output


def test_completion_without_a_server_offers_nothing() -> None:
    env = {
        **os.environ,
        "EMBER_URL": f"http://127.0.0.1:{free_port()}",
        "_EMBER_COMPLETE": "complete_bash",
        "COMP_WORDS": "ember predict ",
        "COMP_CWORD": "2",
    }
    result = subprocess.run([EMBER_SCRIPT], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_tables_into_a_pipe_keep_every_name_whole(
    server: EmberServer, deployed: subprocess.CompletedProcess[str]
) -> None:
    """`ember costs | grep NAME`: a table printed to a pipe on a narrow terminal is as wide as
    its names need, not cut to the terminal's width with `…`."""
    set_budget = ember(
        "budget", "set", "--deployment", REF, "--per", "day", "--limit", "5", url=server.url
    )
    assert set_budget.returncode == 0, set_budget.stderr
    env = {**os.environ, "EMBER_URL": server.url, "EMBER_TOKEN": TOKEN, "COLUMNS": "30"}
    for command in (["ls"], ["status"], ["costs"], ["budget", "ls"], ["token", "ls"]):
        result = subprocess.run(
            [sys.executable, "-m", "ember", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert result.returncode == 0, result.stderr
        assert "…" not in result.stdout, (command, result.stdout)
        if command[0] != "token":
            assert REF in result.stdout, (command, result.stdout)
