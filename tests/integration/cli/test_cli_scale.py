"""`ember scale`, the scaling flags of `ember deploy` and the live columns of `ember ls`, run as
real `python -m ember` processes against one real `ember serve` for the whole module."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.paths import MODELS
from tests.support.server import EmberServer, running

pytestmark = pytest.mark.timeout(120)

HELLO = MODELS / "cog" / "hello-world"
NAME = "hello-scale"
REF = f"ember/{NAME}"


def ember(server: EmberServer, *args: str) -> subprocess.CompletedProcess[str]:
    return server.cli(*args)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with running(tmp_path_factory.mktemp("ember-cli-scale")) as ember_server:
        yield ember_server


@pytest.fixture(scope="module")
def deployed(server: EmberServer) -> subprocess.CompletedProcess[str]:
    result = ember(
        server,
        "deploy",
        str(HELLO),
        "--name",
        REF,
        "--max-instances",
        "2",
        "--idle-timeout",
        "30",
        "--keep-warm",
        "mon-fri 08:00-19:00=1",
    )
    assert result.returncode == 0, result.stderr
    return result


def configuration(api: httpx.Client) -> dict:
    response = api.get(f"/v1/deployments/{REF}")
    assert response.status_code == 200, response.text
    return response.json()["current_release"]["configuration"]


def test_deploy_passes_the_scaling_flags(
    deployed: subprocess.CompletedProcess[str], api: httpx.Client
) -> None:
    config = configuration(api)
    assert config["max_instances"] == 2
    assert config["idle_timeout"] == 30
    assert config["keep_warm"] == ["mon,tue,wed,thu,fri 08:00-19:00=1"]  # stored normalized
    assert "idle_timeout 30s" in deployed.stderr


def test_redeploy_with_the_same_flags_makes_no_release(
    deployed: subprocess.CompletedProcess[str], server: EmberServer, api: httpx.Client
) -> None:
    before = api.get(f"/v1/deployments/{REF}").json()["current_release"]["number"]
    args = ("--idle-timeout", "30", "--keep-warm", "mon-fri 08:00-19:00=1")
    result = ember(server, "deploy", str(HELLO), "--name", REF, *args)
    assert result.returncode == 0, result.stderr
    assert "already runs this version" in result.stderr
    assert api.get(f"/v1/deployments/{REF}").json()["current_release"]["number"] == before


def test_scale_min_instances_starts_a_replica(
    deployed: subprocess.CompletedProcess[str], server: EmberServer, api: httpx.Client
) -> None:
    result = ember(server, "scale", REF, "--min-instances", "1")
    assert result.returncode == 0, result.stderr
    assert "min_instances 1" in result.stderr
    assert "min_instances" in result.stdout

    config = configuration(api)
    assert config["min_instances"] == 1
    assert config["max_instances"] == 2  # the other settings are kept
    assert config["idle_timeout"] == 30
    deadline = time.monotonic() + 20
    while (status := api.get(f"/v1/deployments/{REF}").json()["status"])["replicas"]["ready"] < 1:
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status["replicas"]["ready"] == 1


def test_scale_with_an_invalid_window_prints_the_servers_reason(
    deployed: subprocess.CompletedProcess[str], server: EmberServer, api: httpx.Client
) -> None:
    before = configuration(api)
    result = ember(server, "scale", REF, "--keep-warm", "someday 25:00=x")
    assert result.returncode == 2, result.stderr
    assert "keep-warm window 'someday 25:00=x' must look like" in result.stderr
    assert "Traceback" not in result.stderr
    assert configuration(api) == before


def test_scale_without_flags_shows_the_settings_and_status(
    deployed: subprocess.CompletedProcess[str], server: EmberServer
) -> None:
    result = ember(server, "scale", REF)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()

    def row(setting: str) -> str:
        return next(line for line in lines if f" {setting} " in line)

    assert "30s" in row("idle_timeout")
    assert "--idle-timeout" in row("idle_timeout")
    assert "60s (default)" in row("scale_down_delay")
    assert "10000 (default)" in row("queue_limit")
    assert "(default)" not in row("keep_warm")
    assert "ready" in row("replicas")
    assert "auto (default)" in row("cold_start_tier")


def test_scale_sets_the_cold_start_tier(
    deployed: subprocess.CompletedProcess[str], server: EmberServer, api: httpx.Client
) -> None:
    result = ember(server, "scale", REF, "--cold-start-tier", "disk")
    assert result.returncode == 0, result.stderr
    assert configuration(api)["cold_start_tier"] == "disk"
    assert "cold starts" in result.stdout and "disk" in result.stdout
    wrong = ember(server, "scale", REF, "--cold-start-tier", "lukewarm")
    assert wrong.returncode == 2 and "warm-host" in wrong.stderr


def test_scale_clears_keep_warm_and_refuses_contradictions(
    deployed: subprocess.CompletedProcess[str], server: EmberServer, api: httpx.Client
) -> None:
    both = ember(server, "scale", REF, "--keep-warm", "sat 10:00-11:00=1", "--no-keep-warm")
    assert both.returncode == 2
    assert "contradict" in both.stderr

    cleared = ember(server, "scale", REF, "--no-keep-warm")
    assert cleared.returncode == 0, cleared.stderr
    assert configuration(api)["keep_warm"] == []


def test_scale_of_a_missing_deployment_says_what_to_do(server: EmberServer) -> None:
    result = ember(server, "scale", "ember/nothing-here", "--min-instances", "1")
    assert result.returncode == 1
    assert "no deployment ember/nothing-here" in result.stderr
    assert "ember deploy PATH --name ember/nothing-here" in result.stderr


def test_ls_shows_replicas_queue_and_scaling(
    deployed: subprocess.CompletedProcess[str], server: EmberServer
) -> None:
    result = ember(server, "ls")
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "replicas" in line)
    assert "queued" in header and "scaling" in header
    row = next(line for line in result.stdout.splitlines() if REF in line)
    assert " ready" in row
