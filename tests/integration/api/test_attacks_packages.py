"""Attacks a deploy-token holder made with the package it uploads (issue 18, items 5, 6 and
11), each reproduced against a real `ember serve` and shown not to work any more: the upload
is a 4xx that says what is wrong, nothing is written outside the package's folder, no
unpacked folder is left behind, and the server stays healthy."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.paths import model_path
from tests.support.server import EmberServer, running

pytestmark = pytest.mark.timeout(300)

PREDICTOR = b"def predict(text: str) -> str:\n    return text\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with running(tmp_path_factory.mktemp("ember-package-attacks")) as instance:
        instance.deploy(model_path("ember", "function"), "ember", "function")
        with instance.client() as admin:
            body = {"name": "function", "model": "ember/function"}
            made = admin.post("/v1/deployments", json=body)
            assert made.status_code == 201, made.text
            assert admin.post("/v1/models", json={"owner": "ember", "name": "hostile"}).is_success
        yield instance


def _entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data)
    return info, data


def _archive(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as bundle:
        for info, data in entries:
            bundle.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def _package(manifest: str, manifest_name: str = "ember.yaml", **files: bytes) -> bytes:
    files = {"predict.py": PREDICTOR, **files}
    return _archive(
        [_entry(manifest_name, manifest.encode())] + [_entry(n, d) for n, d in files.items()]
    )


def _upload(server: EmberServer, package: bytes) -> httpx.Response:
    with server.client() as api:
        return api.post(
            "/v1/models/ember/hostile/versions",
            files={"package": ("p.tar.gz", package)},
            timeout=300,
        )


def _unpacked(server: EmberServer) -> set[str]:
    return {p.name for p in (server.data_dir / "packages").iterdir()}


def _refused(server: EmberServer, package: bytes, *words: str) -> str:
    """Upload `package`; it must be a 422 naming `words`, leave no folder behind, and leave
    the server answering predictions."""
    before = _unpacked(server)
    answer = _upload(server, package)
    assert answer.status_code == 422, answer.text
    detail = str(answer.json()["detail"])
    for word in words:
        assert word in detail, detail
    assert _unpacked(server) == before
    with server.client() as api:
        assert api.get("/health").status_code == 200
        ok = api.post(
            "/v1/deployments/ember/function/predictions",
            json={"input": {"text": "still"}},
            headers={"Prefer": "wait=60"},
        )
    assert ok.status_code == 201 and ok.json()["output"] == "still-still", ok.text
    return detail


# -- item 5: extraction that escapes through links (CVE-2025-4517) --------------------------


def _realpath_limit_attack(destination: Path, ups: int, name: str) -> bytes:
    """An archive that, unpacked into `destination` by tarfile's `data` filter on a Python
    before 3.11.13, writes `name` `ups` folders above it (CVE-2025-4517).

    Sixteen one-letter links each lead one long folder deeper, so the short path a/b/.../p
    resolves to a path just under PATH_MAX; a link placed there, pointing back up sixteen
    levels, makes the resolved path overflow, and `os.path.realpath` gives up resolving
    beyond that point and takes the rest literally. The filter then believes `escape` (that
    link, and `..` past it) stays inside, while the kernel follows it out; a file written
    through `escape` lands outside."""
    steps = "abcdefghijklmnop"
    path_max = os.pathconf(destination.parent, "PC_PATH_MAX")
    component = "d" * ((path_max - len(str(destination)) - 1) // (len(steps) + 1))
    entries, path = [], ""
    for step in steps:
        entries.append(_entry(os.path.join(path, component), kind=tarfile.DIRTYPE))
        entries.append(_entry(os.path.join(path, step), kind=tarfile.SYMTYPE, link=component))
        path = os.path.join(path, component)
    overflow = os.path.join(*steps, "l" * 254)
    entries.append(_entry(overflow, kind=tarfile.SYMTYPE, link=os.path.join(*[".."] * len(steps))))
    entries.append(
        _entry("escape", kind=tarfile.SYMTYPE, link=os.path.join(overflow, *[".."] * ups))
    )
    entries.append(_entry(f"escape/{name}", b"written outside the package"))
    return _archive(entries)


def test_a_chain_of_links_past_path_max_cannot_write_outside_the_package(
    server: EmberServer,
) -> None:
    """The upload used to write the file outside (then answer 422, for want of a manifest)
    and keep the unpacked folder; every link is refused now, before anything is written."""
    data_dir = Path(os.path.realpath(server.data_dir))
    # Where the server unpacks: packages/<64 hex digits>.partial; three levels up is the
    # folder holding the server's data folder.
    staging = data_dir / "packages" / ("0" * 64 + ".partial")
    sentinel = data_dir.parent / f"escaped-{data_dir.name}"
    detail = _refused(server, _realpath_limit_attack(staging, 3, sentinel.name), "is a link")
    assert not sentinel.exists()
    assert "cannot be unpacked" in detail


@pytest.mark.parametrize(
    "entry",
    [
        _entry("weights", kind=tarfile.SYMTYPE, link="predict.py"),  # even pointing inside
        _entry("copy.py", kind=tarfile.LNKTYPE, link="predict.py"),
        _entry("pipe", kind=tarfile.FIFOTYPE),
    ],
    ids=["symlink", "hardlink", "fifo"],
)
def test_links_and_special_files_are_refused(server: EmberServer, entry: tuple) -> None:
    manifest = _entry("ember.yaml", b"name: hostile\npredictor: predict.py:predict\n")
    package = _archive([manifest, _entry("predict.py", PREDICTOR), entry])
    _refused(server, package, entry[0].name, "plain files and folders only")


def test_a_package_refused_after_unpacking_leaves_no_folder_behind(server: EmberServer) -> None:
    """A package that unpacks but fails its setup used to keep its folder for good."""
    failing = b"class Predictor:\n    def setup(self):\n        raise RuntimeError('no')\n"
    failing += b"    def predict(self) -> str:\n        return ''\n"
    manifest = "name: hostile\npredictor: predict.py:Predictor\n"
    _refused(server, _package(manifest, **{"predict.py": failing}), "setup failed")


# -- item 6: a YAML alias bomb ---------------------------------------------------------------

# The bomb, near enough: five levels of nine aliases over three strings stand for
# 177,147 of them (ten levels: billions); the spec reached a replica's environment as 2 MB,
# E2BIG, and a 500.
BOMB = (
    "name: hostile\n"
    "predictor: predict.py:predict\n"
    "scaling:\n"
    "  a: &a [xxxxxxxxx,xxxxxxxxx,xxxxxxxxx]\n"
    "  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "  f: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
)


def test_a_yaml_alias_bomb_is_refused_before_it_expands(server: EmberServer) -> None:
    _refused(server, _package(BOMB), "aliases", "ember.yaml")


def test_unknown_scaling_settings_are_refused_naming_the_known_ones(server: EmberServer) -> None:
    manifest = "name: hostile\npredictor: predict.py:predict\nscaling: {min_replicas: 1}\n"
    _refused(server, _package(manifest), "min_replicas", "min_instances", "max_instances")


# -- item 11: resource claims no machine can meet --------------------------------------------


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("resources: {gpu: 'H100:1000000'}", ["less than or equal to 16"]),
        ("resources: {memory: 99999999Ti}", ["memory", "at most 4Ti"]),
        ("resources: {cpu: 100000}", ["cpu", "at most 512 cores"]),
        ("timeout: .inf", ["timeout", "finite"]),
        ("timeout: 99999999", ["timeout", "less than or equal to 86400"]),
        ("concurrency: 1000000", ["concurrency", "less than or equal to 10000"]),
    ],
)
def test_absurd_resource_claims_are_refused(
    server: EmberServer, setting: str, words: list[str]
) -> None:
    manifest = f"name: hostile\npredictor: predict.py:predict\n{setting}\n"
    _refused(server, _package(manifest), *words)


def test_a_cog_concurrency_of_1e21_is_refused(server: EmberServer) -> None:
    """Cog's `concurrency.max` used to be taken through int(): 1.0e+21 became a
    21-digit slot count."""
    manifest = 'build:\n  python_version: "3.11"\npredict: "predict.py:predict"\n'
    manifest += "concurrency:\n  max: 1.0e+21\n"
    _refused(server, _package(manifest, "cog.yaml"), "cog.yaml", "max_concurrency")
