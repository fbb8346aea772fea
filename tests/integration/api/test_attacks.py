"""Attacks a hostile tenant made on a real `ember serve` (issue 18), each reproduced here and
shown not to work any more. (Lone surrogates: `test_bad_input.py`; a revocation raced by a
lookup in flight: `tests/integration/control/test_tokens.py`.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import ember
from tests.support.paths import model_path
from tests.support.server import EmberServer, package_archive, running

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with running(tmp_path_factory.mktemp("ember-attacks")) as instance:
        instance.deploy(model_path("ember", "active-output"), "ember", "pages")
        with instance.client() as admin:
            made = admin.post("/v1/deployments", json={"name": "pages", "model": "ember/pages"})
            assert made.status_code == 201, made.text
        yield instance


def _output_url(api: httpx.Client, kind: str) -> str:
    answer = api.post(
        "/v1/deployments/ember/pages/predictions",
        json={"input": {"kind": kind}},
        headers={"Prefer": "wait=60"},
    )
    assert answer.status_code == 201 and answer.json()["status"] == "succeeded", answer.text
    # (a waited-for answer inlines small files as data URIs; the stored prediction links them)
    return api.get(f"/v1/predictions/{answer.json()['id']}").json()["output"]


def _assert_cannot_run(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-security-policy"] == "sandbox"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize("kind", ["html", "svg", "js"])
def test_a_models_page_or_script_output_cannot_run_on_embers_origin(
    server: EmberServer, kind: str
) -> None:
    """A model's `.html`/`.svg` output used to be served inline with its own type, on the
    dashboard's origin: opened by the admin, it read the admin's token; a `.js` output was
    a same-origin script."""
    with server.client() as api:
        url = _output_url(api, kind)
        download = httpx.get(url)  # the signed link, as a browser opens it (no token)
    _assert_cannot_run(download)
    assert b"localStorage" in download.content  # still downloadable as it was made


def test_harmless_media_still_shows_inline_but_sandboxed(server: EmberServer) -> None:
    with server.client() as api:
        download = httpx.get(_output_url(api, "txt"))
    assert download.headers["content-type"].startswith("text/plain")
    assert download.headers["content-disposition"].startswith("inline")
    assert download.headers["content-security-policy"] == "sandbox"
    assert download.headers["x-content-type-options"] == "nosniff"


def test_an_uploaded_page_cannot_run_on_embers_origin(server: EmberServer) -> None:
    with server.client() as api:
        made = api.post(
            "/v1/files",
            files={"content": ("page.html", b"<script>alert(1)</script>", "text/html")},
        )
        assert made.status_code == 201, made.text
        download = api.get(f"/v1/files/{made.json()['id']}/download")
    _assert_cannot_run(download)
    assert 'filename="page.html"' in download.headers["content-disposition"]


def test_a_broken_package_is_explained_without_the_servers_paths(
    server: EmberServer, tmp_path: Path
) -> None:
    """Deploy errors showed where the operator keeps Ember's data (`.../packages/<id>`) and
    its source, in tracebacks full of Ember's own frames. The uploader now sees paths
    relative to the package and only the frames of the package's code."""
    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "ember.yaml").write_text("name: broken\npredictor: nothere.py:Predictor\n")
    crashing = tmp_path / "crashing"
    crashing.mkdir()
    (crashing / "ember.yaml").write_text("name: broken\npredictor: predict.py:Predictor\n")
    (crashing / "predict.py").write_text("import no_such_module_here\n")
    with server.client() as api:
        api.post("/v1/models", json={"owner": "ember", "name": "broken"})
        answers = [
            api.post(
                "/v1/models/ember/broken/versions",
                files={"package": ("p.tar.gz", package_archive(folder))},
                timeout=300,
            )
            for folder in (missing, crashing)
        ]
    assert [answer.status_code for answer in answers] == [422, 422]
    assert answers[0].json()["detail"] == "predictor file 'nothere.py' not found in the package"
    crash = answers[1].json()["detail"]
    assert 'File "predict.py", line 1, in <module>' in crash
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in crash
    ember_source = str(Path(ember.__file__).parent)
    for answer in answers:
        assert str(server.data_dir) not in answer.text and ember_source not in answer.text
