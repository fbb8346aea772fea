"""Cluster mode: a real `ember serve --runtime ray` on a real three-node Ray cluster started on
this machine with Ray's own cluster utilities: a head that runs no replicas (no CPUs to give),
a CPU node, and a node advertising a T4 GPU (`num_gpus=1` plus `accelerator_type:T4`) standing
in for a GPU machine. The last test kills a node under load."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate

from tests.support.api import poll
from tests.support.paths import model_path
from tests.support.processes import reported_pid
from tests.support.server import TOKEN, EmberServer, package_archive, ray_cluster, running

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The cluster's address and its worker nodes ("cpu", "gpu": Ray's node objects)."""
    workers = [
        {"num_cpus": 4},
        {"num_cpus": 4, "num_gpus": 1, "resources": {"accelerator_type:T4": 1}},
    ]
    nodes = tmp_path_factory.mktemp("ray-nodes")
    with ray_cluster(nodes, {"num_cpus": 0}, workers) as (cluster, (cpu, gpu)):
        yield {"address": cluster.address, "cluster": cluster, "cpu": cpu, "gpu": gpu}


def gpu_variant(folder: Path, gpu: str) -> Path:
    """tests/models/ember/where asking for a GPU of type `gpu`, as package where-<gpu>."""
    name = f"where-{gpu.lower()}"
    target = folder / name
    shutil.copytree(model_path("ember", "where"), target)
    spec = (target / "ember.yaml").read_text().replace("name: where", f"name: {name}")
    (target / "ember.yaml").write_text(spec + f"  gpu: {gpu}\n")
    return target


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("packages")
    return {
        "where": model_path("ember", "where"),
        "where-t4": gpu_variant(folder, "T4"),
        "where-a100": gpu_variant(folder, "A100"),
    }


@pytest.fixture(scope="module")
def server(
    cluster: dict[str, Any],
    packages: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmberServer]:
    args = ["--runtime", "ray", "--ray-address", cluster["address"]]
    os.environ["EMBER_RAY_PLACE_TIMEOUT"] = "3"  # an upload's wait for a node that fits
    with running(tmp_path_factory.mktemp("ember-ray"), extra_args=args) as instance:
        for name in ("where", "where-t4"):
            instance.deploy(packages[name], "ember", name)
            with instance.client() as client:
                created = client.post(
                    "/v1/deployments", json={"name": name, "model": f"ember/{name}"}
                )
                assert created.status_code == 201, created.text
        yield instance
    os.environ.pop("EMBER_RAY_PLACE_TIMEOUT", None)


def node_of(prediction: dict) -> str:
    """The node whose data dir holds the package the replica ran from."""
    folder = prediction["output"][0].removeprefix("folder=")
    return Path(folder).parent.parent.name


def test_a_gpu_model_lands_on_the_node_with_that_gpu(
    server: EmberServer, cluster: dict[str, Any]
) -> None:
    for _ in range(2):
        prediction = server.predict("where-t4")
        assert prediction["status"] == "succeeded", prediction
        assert node_of(prediction) == cluster["gpu"].node_id[:12]
        assert prediction["output"][2] == "gpus=0"  # the node's one GPU, given to the replica
    assert server.predict("where")["output"][2] == "gpus=not set"  # as Ray leaves a CPU task


def test_predictions_stream_across_nodes_through_the_official_client(
    server: EmberServer,
) -> None:
    client = replicate.Client(api_token=TOKEN, base_url=server.url)
    events = [str(e) for e in client.stream("ember/where", input={"items": 4, "delay": 0.2})]
    items = [e for e in events if e.startswith("item")]
    assert items == [f"item {i}" for i in range(4)]


def test_an_upload_no_node_can_check_fails_after_its_wait_saying_what_is_missing(
    api: httpx.Client, packages: dict[str, Path]
) -> None:
    response = api.post("/v1/models", json={"owner": "ember", "name": "where-a100"})
    assert response.status_code == 201
    upload = api.post(
        "/v1/models/ember/where-a100/versions",
        files={"package": ("p.tar.gz", package_archive(packages["where-a100"]))},
        timeout=120,
    )
    assert upload.status_code == 422, upload.text
    detail = upload.json()["detail"]
    assert "no node of the Ray cluster (3 alive) has 1 CPU, 0.25 GiB, 1 GPU of type A100" in detail
    assert "--num-gpus 1 --resources '{\"accelerator_type:A100\": 1}'" in detail
    assert "(waited 3 s)" in detail


def test_scale_to_zero_and_back_on_the_cluster(server: EmberServer, api: httpx.Client) -> None:
    first = server.predict("where")
    assert first["status"] == "succeeded"
    changed = api.patch("/v1/deployments/ember/where", json={"idle_timeout": 0})
    assert changed.status_code == 200
    deadline = time.monotonic() + 30
    status = {}
    while time.monotonic() < deadline:
        status = api.get("/v1/deployments/ember/where").json()["status"]
        if status["replicas"]["ready"] == 0 and status["replicas"]["starting"] == 0:
            break
        time.sleep(0.2)
    assert status["replicas"] == {"starting": 0, "ready": 0}, status
    while time.monotonic() < deadline and not status["cold_start"]["ready"]:
        time.sleep(0.2)  # the node that ran it keeps a warm host
        status = api.get("/v1/deployments/ember/where").json()["status"]
    assert status["cold_start"]["tier"] == "warm-host" and status["cold_start"]["ready"]
    again = server.predict("where")
    assert again["status"] == "succeeded"
    assert again["output"][1] != first["output"][1]  # a new replica process
    # Placed where the package is kept warm (either node has room), and forked from there.
    assert node_of(again) == node_of(first)
    series = api.get("/v1/deployments/ember/where/timeseries", params={"since": "15m"}).json()
    assert series["cold_starts"][-1]["tier"] == "warm-host"


def test_output_files_made_on_a_node_are_served_by_the_server(
    server: EmberServer, api: httpx.Client
) -> None:
    server.deploy(model_path("ember", "image-out"), "ember", "image-out")
    prediction = api.post(
        "/v1/models/ember/image-out/predictions",
        json={"input": {"width": 5, "height": 2}},
        headers={"Prefer": "wait=60, files=url"},  # a link to the server, not a data URI
    ).json()
    assert prediction["status"] == "succeeded", prediction
    image = httpx.get(prediction["output"], timeout=30)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert image.content[16:24] == (5).to_bytes(4, "big") + (2).to_bytes(4, "big")


def test_the_next_start_comes_from_a_warm_host_on_the_node(api: httpx.Client) -> None:
    deadline = time.monotonic() + 30
    cold_start: dict = {}
    while time.monotonic() < deadline:
        cold_start = api.get("/v1/deployments/ember/where-t4").json()["status"]["cold_start"]
        if cold_start["tier"] == "warm-host" and cold_start["ready"]:
            break
        time.sleep(0.5)
    assert cold_start["tier"] == "warm-host" and cold_start["ready"], cold_start


def test_a_preempted_replica_on_a_node_drains_and_the_rest_run_on_a_replacement(
    server: EmberServer, api: httpx.Client
) -> None:
    """SIGTERM to a replica on a node (a spot machine's notice): it finishes what it runs, and
    predictions made after the notice run on the replacement the runner starts, even those
    the head sent before it heard of the drain (the node hands them back)."""
    created = api.post(
        "/v1/deployments",
        json={"name": "spot", "model": "ember/where", "min_instances": 1, "max_instances": 1},
    )
    assert created.status_code == 201, created.text
    victim = server.predict("spot")["output"][1].removeprefix("pid=")  # "<pid>@<namespace>"

    def submit(**inputs: object) -> str:
        response = api.post("/v1/deployments/ember/spot/predictions", json={"input": inputs})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    ids = [submit(items=10, delay=0.1)]
    deadline = time.monotonic() + 30
    while not api.get(f"/v1/predictions/{ids[0]}").json()["output"]:
        assert time.monotonic() < deadline, "the first prediction never started"
        time.sleep(0.05)
    os.kill(reported_pid(victim), signal.SIGTERM)
    ids += [submit(items=1), submit(items=1)]
    final = {i: poll(api, i, timeout=60) for i in ids}
    assert [final[i]["status"] for i in ids] == ["succeeded"] * 3, final
    assert len(final[ids[0]]["output"]) == 13  # it ran to the end where it was
    ran_on = [final[i]["output"][1].removeprefix("pid=") for i in ids]
    assert ran_on[0] == victim and victim not in ran_on[1:], ran_on
    assert all("retries" not in final[i]["metrics"] for i in ids)
    assert api.delete("/v1/deployments/ember/spot").status_code == 204  # room for the next


def test_a_lost_node_loses_no_accepted_prediction(
    server: EmberServer, api: httpx.Client, cluster: dict[str, Any]
) -> None:
    """Kill the node running a replica while it holds a prediction that has streamed output,
    one that has not yet, and two queued: the first fails saying why, the others run on a new
    replica on the other node, which the controller starts to restore the count."""
    created = api.post(
        "/v1/deployments",
        json={"name": "survivor", "model": "ember/where", "min_instances": 1, "max_instances": 1},
    )
    assert created.status_code == 201, created.text
    warmup = server.predict("survivor")
    doomed = {n.node_id[:12]: n for n in (cluster["cpu"], cluster["gpu"])}[node_of(warmup)]

    def submit(**inputs: object) -> str:
        response = api.post("/v1/deployments/ember/survivor/predictions", json={"input": inputs})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    streaming = submit(items=100, delay=0.1)
    silent = submit(pause=3)
    queued = [submit(items=1), submit(items=1)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the first has shown output, the second has started
        first = api.get(f"/v1/predictions/{streaming}").json()
        second = api.get(f"/v1/predictions/{silent}").json()
        if first["output"] and second["status"] == "processing":
            break
        time.sleep(0.1)
    cluster["cluster"].remove_node(doomed, allow_graceful=False)

    final: dict[str, dict] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(final) < 4:
        for pid in (streaming, silent, *queued):
            body = api.get(f"/v1/predictions/{pid}").json()
            if body["status"] in ("succeeded", "failed", "canceled"):
                final[pid] = body
        time.sleep(0.25)
    assert len(final) == 4, {pid: final.get(pid, {}).get("status") for pid in final}
    assert final[streaming]["status"] == "failed"
    assert "node running this prediction's replica went away" in final[streaming]["error"]
    for pid in (silent, *queued):
        assert final[pid]["status"] == "succeeded", (final[pid]["error"], final[pid]["logs"])
        assert node_of(final[pid]) != doomed.node_id[:12]  # ran on the node that is left
    status = api.get("/v1/deployments/ember/survivor").json()["status"]
    assert status["replicas"]["ready"] == 1
    # The ledger keeps the lost replica's time: two replicas billed, the lost one included.
    [row] = [
        r
        for r in api.get("/v1/costs", params={"by": "deployment", "since": "1h"}).json()["rows"]
        if r["key"] == "ember/survivor"
    ]
    assert row["replicas"] == 2 and row["gpu_seconds"] > 3 and row["cost"] > 0


def test_a_replica_no_node_can_hold_waits_saying_why_until_a_node_joins(
    api: httpx.Client, cluster: dict[str, Any]
) -> None:
    """As with an autoscaler: the T4 node is gone, a request for the T4 model is held while the
    status says what the start waits for, and a T4 node that joins takes it."""
    ray_cluster_ = cluster["cluster"]
    if cluster["gpu"] in ray_cluster_.worker_nodes:
        ray_cluster_.remove_node(cluster["gpu"], allow_graceful=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until Ray, and so Ember, know the node is gone
        replicas = api.get("/v1/deployments/ember/where-t4").json()["status"]["replicas"]
        if replicas["ready"] == 0:
            break
        time.sleep(0.2)
    response = api.post("/v1/deployments/ember/where-t4/predictions", json={"input": {}})
    assert response.status_code == 201, response.text
    held = response.json()["id"]
    status: dict = {}
    while time.monotonic() < deadline:
        status = api.get("/v1/deployments/ember/where-t4").json()["status"]
        if status["placement"]:
            break
        time.sleep(0.2)
    assert "has 1 CPU, 0.25 GiB, 1 GPU of type T4" in (status["placement"] or ""), status
    waiting = api.get(f"/v1/predictions/{held}").json()
    assert waiting["status"] == "starting", waiting["error"]

    joined = ray_cluster_.add_node(num_cpus=4, num_gpus=1, resources={"accelerator_type:T4": 1})
    prediction = {}
    while time.monotonic() < deadline + 60:
        prediction = api.get(f"/v1/predictions/{held}").json()
        if prediction["status"] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.2)
    assert prediction["status"] == "succeeded", prediction
    assert node_of(prediction) == joined.node_id[:12]
    assert api.get("/v1/deployments/ember/where-t4").json()["status"]["placement"] is None


def test_a_setup_that_raises_on_a_node_fails_the_upload_with_its_error(
    api: httpx.Client,
) -> None:
    api.post("/v1/models", json={"owner": "ember", "name": "broken"})
    upload = api.post(
        "/v1/models/ember/broken/versions",
        files={"package": ("p.tar.gz", package_archive(model_path("faults", "setup-raises")))},
        timeout=120,
    )
    assert upload.status_code == 422, upload.text
    assert "weights file is corrupt" in upload.json()["detail"]
