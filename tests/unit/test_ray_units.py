"""Cluster mode's pure parts: a package's resources as a Ray bundle, why no node fits, and
which GPU devices each replica on a node is given."""

from __future__ import annotations

import pytest

from ember.packages.spec import PackageSpec
from ember.runtime.ray_cluster import bundle, missing_resources
from ember.runtime.ray_node import GpuPool


def spec(**resources: object) -> PackageSpec:
    return PackageSpec.model_validate(
        {
            "name": "m",
            "format": "ember",
            "root": "/p",
            "predictor": "predict.py:P",
            "resources": resources,
        }
    )


def test_a_package_becomes_one_bundle_with_its_gpu_type_as_a_label() -> None:
    assert bundle(spec(cpu="500m", memory="1Gi")) == {"CPU": 0.5, "memory": float(2**30)}
    assert bundle(spec(gpu="A100:2")) == {
        "CPU": 1.0,
        "memory": float(2 * 2**30),
        "GPU": 2,
        "accelerator_type:A100": 0.001,
    }


def test_missing_resources_names_what_no_live_node_has() -> None:
    nodes = [
        {"Alive": True, "Resources": {"CPU": 4, "memory": 8 * 2**30}},
        {"Alive": False, "Resources": {"CPU": 4, "memory": 8 * 2**30, "GPU": 1}},
    ]
    assert missing_resources(bundle(spec()), nodes) is None
    why = missing_resources(bundle(spec(gpu="T4")), nodes)
    assert why is not None and "(1 alive) has 1 CPU, 2 GiB, 1 GPU of type T4" in why
    assert "--num-gpus 1 --resources '{\"accelerator_type:T4\": 1}'" in why
    assert "more CPUs or memory" in (missing_resources(bundle(spec(cpu=8)), nodes) or "")


def test_each_replica_gets_devices_no_other_holds_and_gives_them_back() -> None:
    pool = GpuPool(["0", "1", "2", "3"])
    first, second = pool.take(2), pool.take(1)
    pool.hold("r1", first)
    pool.hold("r2", second)
    assert (first, second) == (["0", "1"], ["2"])
    pool.release("r1")
    assert pool.take(3) == ["0", "1", "3"]
    with pytest.raises(RuntimeError, match="0 free GPUs, a replica asked for 1"):
        pool.take(1)
    pool.release("nobody")  # a replica without GPUs holds none
