"""The commands that talk to a server (`ember deploy/predict/ls/logs/rm/token`), run as real
`python -m ember` processes against one real `ember serve` for the whole module."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ember.packages.archive import write_archive
from tests.support.paths import EXAMPLES, MODELS
from tests.support.server import TOKEN, EmberServer, free_port, running

pytestmark = pytest.mark.timeout(120)

HELLO = MODELS / "cog" / "hello-world"
CANARY = MODELS / "cog" / "canary"
LIST_OUTPUT = MODELS / "cog" / "list-output"
FAULTS = MODELS / "faults" / "sync"

# A package that logs and yields slowly: for `logs -f` and Ctrl-C.
SLOW_YAML = "name: slow\npredictor: predict.py:Predictor\n"
SLOW_PY = """
import time
from collections.abc import Iterator


class Predictor:
    def predict(self, n: int = 5, delay: float = 0.2) -> Iterator[str]:
        for i in range(n):
            print(f"line {i}")
            yield f"item {i}"
            time.sleep(delay)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with running(tmp_path_factory.mktemp("ember-cli-remote")) as ember_server:
        yield ember_server


def ember(
    server: EmberServer, *args: str, token: str = TOKEN, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    return server.cli(*args, token=token, url=url)


_deployed: dict[str, subprocess.CompletedProcess[str]] = {}


def deployed(server: EmberServer, path: Path, name: str) -> subprocess.CompletedProcess[str]:
    """`ember deploy path --name ember/<name>` once per module run."""
    if name not in _deployed:
        result = ember(server, "deploy", str(path), "--name", f"ember/{name}")
        assert result.returncode == 0, result.stderr
        _deployed[name] = result
    return _deployed[name]


@pytest.fixture(scope="module")
def slow_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("slow")
    (folder / "ember.yaml").write_text(SLOW_YAML)
    (folder / "predict.py").write_text(SLOW_PY)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "junk.pyc").write_bytes(b"not a package file")
    return folder


def test_deploy_prints_the_endpoint_and_creates_the_deployment(
    server: EmberServer, api: httpx.Client
) -> None:
    result = deployed(server, HELLO, "hello-world")
    assert f"POST {server.url}/v1/deployments/ember/hello-world/predictions" in result.stdout
    assert f'base_url="{server.url}"' in result.stdout
    assert 'client.deployments.get("ember/hello-world")' in result.stdout
    assert "setup succeeded" in result.stderr

    deployment = api.get("/v1/deployments/ember/hello-world")
    assert deployment.status_code == 200, deployment.text
    release = deployment.json()["current_release"]
    latest = api.get("/v1/models/ember/hello-world").json()["latest_version"]
    assert release["model"] == "ember/hello-world"
    assert release["version"] == latest["id"]


def test_predict_prints_the_output(server: EmberServer) -> None:
    deployed(server, HELLO, "hello-world")
    result = ember(server, "predict", "ember/hello-world", "-i", "text=world")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello world"


def test_predict_refuses_an_input_the_model_does_not_take(server: EmberServer) -> None:
    """As `cog predict` does (Cog's `string_predictor` test): a misspelt input is an error
    naming it and the inputs there are, not a run with the default."""
    deployed(server, HELLO, "hello-world")
    result = ember(server, "predict", "ember/hello-world", "-i", "txet=world")
    assert result.returncode != 0
    assert 'unknown input "txet": this model takes text' in result.stderr


def test_redeploy_updates_scaling_and_keeps_the_version(
    server: EmberServer, api: httpx.Client
) -> None:
    deployed(server, HELLO, "hello-world")
    before = api.get("/v1/deployments/ember/hello-world").json()["current_release"]
    result = ember(
        server, "deploy", str(HELLO), "--name", "ember/hello-world", "--max-instances", "2"
    )
    assert result.returncode == 0, result.stderr
    after = api.get("/v1/deployments/ember/hello-world").json()["current_release"]
    assert after["version"] == before["version"]  # same files, same archive, same version
    assert after["configuration"]["max_instances"] == 2
    assert after["number"] == before["number"] + 1


def test_deploy_without_a_name_takes_the_packages_own(
    server: EmberServer, api: httpx.Client
) -> None:
    result = ember(server, "deploy", str(EXAMPLES / "hello"))  # ember.yaml: name: hello
    assert result.returncode == 0, result.stderr
    assert "/v1/deployments/ember/hello/predictions" in result.stdout
    assert api.get("/v1/deployments/ember/hello").status_code == 200
    result = ember(server, "deploy", str(EXAMPLES / "hello"), "--name", "hello")  # short form
    assert result.returncode == 0, result.stderr


def test_deploy_under_another_account_is_refused(server: EmberServer) -> None:
    result = ember(server, "deploy", str(HELLO), "--name", "alice/hello-world")
    assert result.returncode == 2
    assert "your account 'ember'" in result.stderr
    assert "--name ember/hello-world" in result.stderr


def test_predict_streams_concatenated_tokens_and_logs(server: EmberServer) -> None:
    deployed(server, CANARY, "canary")
    result = ember(server, "predict", "ember/canary", "-i", "text=bob")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello bob, how are you?\n"
    assert "token: 'bob'" in result.stderr
    assert result.stderr.count("token: 'how'") == 1


def test_predict_downloads_output_files(server: EmberServer, tmp_path: Path) -> None:
    deployed(server, LIST_OUTPUT, "list-output")
    result = ember(
        server, "predict", "ember/list-output", "-i", "count=3", "--output-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    for i in range(3):
        path = tmp_path / f"file-{i}.txt"
        assert path.read_text() == f"file number {i}\n"
        assert str(path) in result.stdout


def test_failed_prediction_exits_1_with_the_error(server: EmberServer) -> None:
    deployed(server, FAULTS, "faults")
    result = ember(server, "predict", "ember/faults", "-i", "mode=raise")
    assert result.returncode == 1
    assert "the model exploded" in result.stderr
    assert "about to fail" in result.stderr  # the prediction's logs
    assert "ember logs " in result.stderr


def test_invalid_input_exits_2_and_names_the_inputs(server: EmberServer) -> None:
    deployed(server, HELLO, "hello-world")
    result = ember(server, "predict", "ember/hello-world")
    assert result.returncode == 2
    # refused before a prediction is made, as `cog predict` does
    assert 'missing required input "text": add -i text=...' in result.stderr
    assert "text (string, required)" in result.stderr


def test_ls_shows_deployments_and_models(server: EmberServer, api: httpx.Client) -> None:
    deployed(server, HELLO, "hello-world")
    api.post("/v1/models", json={"owner": "ember", "name": "undeployed"})
    result = ember(server, "ls")
    assert result.returncode == 0, result.stderr
    version = api.get("/v1/models/ember/hello-world").json()["latest_version"]["id"]
    row = next(line for line in result.stdout.splitlines() if "ember/hello-world" in line)
    assert version[:12] in row
    assert "cpu" in row
    assert "warm-host" in row  # the tier kept ready for its starts
    models = result.stdout.split("Models without a deployment")[1]
    assert "ember/undeployed" in models
    assert "ember/hello-world" not in models


def test_logs_prints_a_finished_predictions_logs(server: EmberServer, api: httpx.Client) -> None:
    deployed(server, FAULTS, "faults")
    prediction = api.post(
        "/v1/deployments/ember/faults/predictions",
        json={"input": {"mode": "raise"}},
        headers={"Prefer": "wait"},
    ).json()
    assert prediction["status"] == "failed"
    result = ember(server, "logs", prediction["id"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("about to fail\n")
    assert "failed" in result.stderr

    missing = ember(server, "logs", "no-such-prediction")
    assert missing.returncode == 1
    assert "no prediction no-such-prediction" in missing.stderr


def test_logs_follow_prints_every_line_once(
    server: EmberServer, api: httpx.Client, slow_package: Path
) -> None:
    deployed(server, slow_package, "slow")
    prediction = api.post(
        "/v1/deployments/ember/slow/predictions", json={"input": {"n": 8, "delay": 0.2}}
    ).json()
    result = ember(server, "logs", prediction["id"], "-f")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(f"line {i}\n" for i in range(8))
    assert "succeeded" in result.stderr


def test_ctrl_c_cancels_the_prediction(
    server: EmberServer, api: httpx.Client, slow_package: Path
) -> None:
    deployed(server, slow_package, "slow")
    process = server.cli_process("predict", "ember/slow", "-i", "n=50")
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "item 0\n"  # streaming: output before the end
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    found = re.search(r"canceled prediction (\w+)", stderr)
    assert found, stderr
    deadline = time.monotonic() + 10
    while (status := api.get(f"/v1/predictions/{found[1]}").json()["status"]) != "canceled":
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_rm_removes_the_deployment_and_the_model(server: EmberServer, api: httpx.Client) -> None:
    deployed(server, HELLO, "to-remove")
    result = ember(server, "rm", "ember/to-remove")
    assert result.returncode == 0, result.stderr
    assert "removed deployment ember/to-remove" in result.stderr
    assert "removed model ember/to-remove" in result.stderr
    assert api.get("/v1/deployments/ember/to-remove").status_code == 404
    assert api.get("/v1/models/ember/to-remove").status_code == 404

    again = ember(server, "rm", "ember/to-remove")
    assert again.returncode == 1
    assert "nothing named ember/to-remove" in again.stderr


def test_token_create_prints_a_token_that_works(server: EmberServer) -> None:
    result = ember(
        server, "token", "create", "--name", "ci", "--owner", "alice", "--scope", "deploy"
    )
    assert result.returncode == 0, result.stderr
    assert "shown only now" in result.stderr
    token = result.stdout.strip()
    response = httpx.get(
        f"{server.url}/v1/account", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200
    assert response.json()["username"] == "alice"
    assert response.json()["scope"] == "deploy"


def test_token_create_with_a_rate_limit_and_a_bad_one(server: EmberServer) -> None:
    made = ember(server, "token", "create", "--name", "demo", "--scope", "predict",
                 "--rate-limit", "2/min")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "at most 2/min" in made.stderr
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
    codes = [
        httpx.get(f"{server.url}/v1/account", headers=headers, timeout=10).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    listed = ember(server, "token", "ls")
    assert "2/min" in listed.stdout
    bad = ember(server, "token", "create", "--name", "x", "--rate-limit", "lots")
    assert bad.returncode == 1 and "600/min" in bad.stderr, bad.stderr


def test_bad_token_says_how_to_pass_one(server: EmberServer) -> None:
    result = ember(server, "ls", token="not-a-token")
    assert result.returncode == 1
    assert "valid authentication token" in result.stderr
    assert "EMBER_TOKEN" in result.stderr


def test_no_server_gives_a_friendly_message(server: EmberServer) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = ember(server, "ls", url=url)
    assert result.returncode == 1
    assert f"no Ember server at {url}" in result.stderr
    assert "ember serve" in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_on_a_model_without_versions_says_to_deploy(
    server: EmberServer, api: httpx.Client
) -> None:
    api.post("/v1/models", json={"owner": "ember", "name": "empty"})
    result = ember(server, "predict", "ember/empty")
    assert result.returncode == 1
    assert "no versions yet" in result.stderr
    assert "ember deploy PATH --name ember/empty" in result.stderr


def test_package_archive_is_reproducible_and_skips_caches(slow_package: Path) -> None:
    first, second = io.BytesIO(), io.BytesIO()
    assert write_archive(slow_package, first) == 2
    write_archive(slow_package, second)
    assert first.getvalue() == second.getvalue()
    first.seek(0)
    with tarfile.open(fileobj=first, mode="r:gz") as bundle:
        names = sorted(bundle.getnames())
    assert names == [".", "./ember.yaml", "./predict.py"]
