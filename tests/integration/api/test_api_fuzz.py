"""Property-based fuzzing of Ember's HTTP API with schemathesis, against the OpenAPI
description a real `ember serve` publishes at /openapi.json: every operation is called with
generated requests, valid and invalid (and without its token, and with methods it does not
have), and every answer must be no 5xx, a documented status with the documented content type
and error shape, and an invalid request refused.

Half of the requests that have path parameters name objects the fixture made instead of
generated names (the model and deployment `ember/hello`, one of its versions and predictions,
a file, a token, a budget, the `cpu` price), so the routes reach real records and not only
their 404s. DELETEs name objects made to be deleted, so the others survive them; PATCHes of a
deployment change `ember/scratch`, which no prediction uses.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from schemathesis.specs.openapi.schemas import OpenApiSchema

from ember.api import openapi
from tests.support.paths import EXAMPLES
from tests.support.server import TOKEN, EmberServer, running

pytestmark = pytest.mark.timeout(240)

HELLO = EXAMPLES / "hello"
EXAMPLES = 50  # generated requests per operation, besides the coverage phase's own
MOST_INSTANCES = 1  # the replicas a generated deployment may ask for on a test machine


@dataclass(frozen=True)
class Known:
    """Values of path parameters that name real objects."""

    kept: dict[str, str]  # for every method but DELETE
    doomed: dict[str, str]  # for DELETE

    def for_case(self, case: schemathesis.Case) -> dict[str, str]:
        if case.method.upper() == "DELETE":
            return self.doomed
        if case.method.upper() == "PATCH" and case.path.startswith("/v1/deployments/"):
            return {**self.kept, "name": "scratch"}
        return self.kept


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with running(tmp_path_factory.mktemp("ember-fuzz")) as instance:
        yield instance


@pytest.fixture(scope="module")
def known(server: EmberServer) -> Known:
    """Deploy examples/hello as three deployments and make two of each other object."""
    version = server.deploy(HELLO, "ember", "hello")["id"]
    with server.client() as api:
        for name in ("hello", "scratch", "doomed"):
            response = api.post(
                "/v1/deployments", json={"name": name, "model": "ember/hello", "hardware": "cpu"}
            )
            assert response.status_code == 201, response.text
        prediction = server.predict("hello", name="Ada")
        files, tokens, budgets = [], [], []
        for i in range(2):
            upload = api.post("/v1/files", files={"content": ("a.txt", b"abc", "text/plain")})
            token = api.post("/v1/tokens", json={"name": f"fuzz-{i}", "scope": "predict"})
            budget = api.post(
                "/v1/budgets",
                json={
                    "scope": "deployment",
                    "target": "ember/scratch",
                    "period": "day",
                    "limit_usd": 1000,
                },
            )
            for response in (upload, token, budget):
                assert response.status_code == 201, response.text
            files.append(upload.json()["id"])
            tokens.append(token.json()["id"])
            budgets.append(budget.json()["id"])
    kept = {
        "owner": "ember",
        "name": "hello",
        "model_id": "hello",
        "version_id": version,
        "prediction_id": prediction["id"],
        "file_id": files[0],
        "token_id": tokens[0],
        "budget_id": budgets[0],
        "sku": "cpu",
    }
    doomed = {
        **kept,
        "name": "doomed",
        "file_id": files[1],
        "token_id": tokens[1],
        "budget_id": budgets[1],
    }
    return Known(kept, doomed)


@pytest.fixture(scope="module")
def api_schema(server: EmberServer) -> OpenApiSchema:
    """The server's own description; schemathesis sends the admin token for its bearer
    scheme, except in the cases that test what happens without a token."""
    config = schemathesis.Config.from_dict({"auth": {"openapi": {"bearer": {"bearer": TOKEN}}}})
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api(case: schemathesis.Case, known: Known) -> None:
    """Every check schemathesis has, but two:

    - `positive_data_acceptance` (a request the description allows must not be refused) is
      off: Ember refuses, with a documented 400 or 422 in its error shape, requests that break
      rules a JSON schema of the API cannot hold — a prediction's `input` is checked against
      the schema of the model version it names, names must be lowercase slugs, `since` is a
      span or a date, `stream_options` needs `stream`, `metadata` must be a JSON object.
    - `negative_data_rejection` is off for multipart bodies only: every part is bytes on the
      wire, so a "number" generated for a file part arrives as a file whose bytes spell it,
      which is a valid upload, not an invalid request.

    Generated `min_instances`/`max_instances` within their range are lowered to one, so a
    fuzzed deployment cannot start a hundred replicas on the test machine (values beyond the
    range are left alone: they are the violations under test).
    """
    if case.path_parameters and zlib.crc32(repr(case.path_parameters).encode()) % 2:
        real = known.for_case(case)
        case.path_parameters = {k: real.get(k, v) for k, v in case.path_parameters.items()}
    if isinstance(case.body, dict):
        for field in ("min_instances", "max_instances"):
            value = case.body.get(field)
            if type(value) is int and MOST_INSTANCES < value <= 100:
                case.body[field] = MOST_INSTANCES
    excluded = [positive_data_acceptance]
    if (case.media_type or "").startswith("multipart/"):
        excluded.append(negative_data_rejection)
    case.call_and_validate(timeout=30, excluded_checks=excluded)


def test_the_notes_name_real_operations(server: EmberServer) -> None:
    """A route renamed or removed must take its notes in `api/openapi.py` with it."""
    with server.client() as api:
        paths = api.get("/openapi.json").json()["paths"]
    described = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    notes = {*openapi.EXTRA_STATUSES, *openapi.OTHER_MEDIA, *openapi.NOT_JSON, *openapi.SIGNED}
    assert notes <= described, notes - described
