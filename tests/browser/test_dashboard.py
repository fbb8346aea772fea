"""The web dashboard in a real browser: headless Debian Chromium, driven by Playwright, against
one real `ember serve` with real replicas. Each step saves a screenshot to
`artifacts/screenshots/` (or $EMBER_SCREENSHOTS); the README's tour shows them.

The tests run in file order and share one browser page, as a person would move through the
dashboard; each still navigates to what it checks, so it reads on its own.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, Request, expect, sync_playwright

from tests.support.paths import MODELS, ROOT
from tests.support.server import TOKEN, EmberServer, running

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (scripts/test.sh installs it with apt-get)",
    ),
]

DESCRIBE = ROOT / "examples" / "describe"
IMAGE_OUT = MODELS / "ember" / "image-out"
ALL_INPUTS = MODELS / "ember" / "all-inputs"
SHOTS = Path(os.environ.get("EMBER_SCREENSHOTS", ROOT / "artifacts" / "screenshots"))
# As the machine's probe found: without these, Chromium dials out at start and is refused.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = (b"\x00" + b"\x20\x80\xc0" * width) * height
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with running(tmp_path_factory.mktemp("ember-dashboard")) as ember_server:
        ember_server.deploy(DESCRIBE, "ember", "describe")
        ember_server.deploy(IMAGE_OUT, "ember", "image-out")
        ember_server.deploy(ALL_INPUTS, "ember", "all-inputs")
        yield ember_server


@pytest.fixture(scope="module")
def page(server: EmberServer) -> Iterator[Page]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=server.url)
        context.set_default_timeout(30_000)
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        yield tab
        browser.close()
    assert not errors, f"the dashboard's scripts failed: {errors}"


def shot(page, name: str) -> None:
    page.wait_for_timeout(300)  # let charts and fonts settle
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def assert_no_script_can_read_the_token(page: Page) -> None:
    """Issue 18: the token sat in web storage, where any script of the origin (a model's HTML
    output, once) read it. Now the browser holds an HttpOnly session cookie, scoped to /v1."""
    held = page.evaluate("() => [localStorage.length, sessionStorage.length, document.cookie]")
    assert held == [0, 0, ""]
    [session] = page.context.cookies()
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/v1"
    assert TOKEN not in session["value"]


def test_login_refuses_a_wrong_token_then_shows_deployments_as_they_appear(
    page: Page, api: httpx.Client
) -> None:
    page.goto("/")
    page.evaluate("localStorage.setItem('ember.token', 'kept by an older dashboard')")
    page.reload()
    token = page.get_by_label("API token")
    expect(token).to_be_focused()
    token.fill("r8_not-a-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    shot(page, "01-login")

    token.fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Deployments")).to_be_visible()
    expect(page.get_by_text("No deployment yet")).to_be_visible()
    assert_no_script_can_read_the_token(page)
    page.reload()  # the session outlives the page
    expect(page.get_by_text("No deployment yet")).to_be_visible()

    # Deployed through the API while the page is open: it appears without a reload.
    for name in ("describe", "image-out"):
        created = api.post("/v1/deployments", json={"name": name, "model": f"ember/{name}"})
        assert created.status_code == 201, created.text
    row = page.locator("tr[data-deployment='ember/describe']")
    expect(row).to_be_visible()
    expect(row).to_contain_text("0 ready")
    expect(page.locator("tr[data-deployment='ember/image-out']")).to_be_visible()
    shot(page, "02-deployments")


def test_playground_uploads_a_file_and_streams_the_output(page: Page, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("first line\nsecond line\nthird line\n")
    page.goto("/#/playground/ember/describe")
    expect(page.get_by_role("heading", name="Playground: ember/describe")).to_be_visible()
    page.get_by_label("file").set_input_files(str(notes))
    page.get_by_label("Lines").fill("2")
    page.get_by_label("Pause").fill("0.4")
    page.get_by_role("button", name="Run").click()

    output = page.locator("section.output pre")
    # Streamed: the first lines are there while the prediction still runs.
    expect(output).to_contain_text("name: ")
    expect(page.locator("section.output")).to_have_attribute("aria-busy", "true")
    shot(page, "03-playground-streaming")
    expect(page.locator(".timings .badge")).to_have_text("succeeded")
    expect(output).to_contain_text("name: notes.txt\nsize: 34 bytes\ntype: text/plain")
    expect(output).to_contain_text("first 2 lines:\n  first line\n  second line")
    expect(page.locator("pre.logs")).to_contain_text("read 34 bytes")
    shot(page, "04-playground-done")


def test_the_playground_is_labelled_and_works_from_the_keyboard(
    page: Page, api: httpx.Client
) -> None:
    page.goto("/#/playground/ember/image-out")
    form = page.get_by_role("form", name="Model input")
    expect(form).to_be_visible()
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map(el => el.outerHTML)"""
    )
    assert unlabelled == []

    width = page.get_by_label("Width")
    width.focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("8")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Height")).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("5")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Run")).to_be_focused()
    page.keyboard.press("Enter")

    image = page.locator("section.output img.output-image")
    expect(image).to_be_visible()
    expect(image).to_have_js_property("naturalWidth", 8)  # the PNG itself, loaded
    shot(page, "05-playground-image")


def test_the_form_has_a_fitting_control_for_every_input_type(
    page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    created = api.post("/v1/deployments", json={"name": "all-inputs", "model": "ember/all-inputs"})
    assert created.status_code == 201, created.text
    files = {}
    for name in ("image.txt", "blob.txt", "one.txt", "two.txt"):
        files[name] = tmp_path / name
        files[name].write_text(f"content of {name}")
    page.goto("/#/playground/ember/all-inputs")
    expect(page.get_by_label("Color")).to_have_js_property("tagName", "SELECT")
    expect(page.get_by_label("Color").locator("option")).to_have_text(["red", "green", "blue"])
    expect(page.get_by_label("Token")).to_have_attribute("type", "password")
    expect(page.get_by_label("Flag")).to_have_attribute("type", "checkbox")
    expect(page.get_by_label("Files")).to_have_attribute("multiple", "")
    expect(page.get_by_label("Steps")).to_have_value("10")  # the default, with its range:
    expect(page.get_by_text("Denoising steps · from 1 to 50 · default: 10")).to_be_visible()

    page.get_by_label("Text").fill("hi")
    page.get_by_label("Count").fill("3")
    page.get_by_label("Ratio").fill("0.5")
    page.get_by_label("Flag").check()
    page.get_by_label("Image").set_input_files(str(files["image.txt"]))
    page.get_by_label("Blob").set_input_files(str(files["blob.txt"]))
    page.get_by_label("Token").fill("s3cret")
    page.get_by_label("Tags").fill("a\nb")
    page.get_by_label("Numbers").fill("1\n2")
    page.get_by_label("Files").set_input_files([str(files["one.txt"]), str(files["two.txt"])])
    page.get_by_label("Color").select_option("blue")
    page.get_by_label("Size").select_option("1024")
    page.get_by_role("button", name="Run").click()

    expect(page.locator(".timings .badge")).to_have_text("succeeded", timeout=60_000)
    [prediction] = api.get("/v1/predictions", params={"deployment": "ember/all-inputs"}).json()[
        "results"
    ]
    output = prediction["output"]
    assert output["text"] == "hi" and output["count"] == 3 and output["ratio"] == 0.5
    assert output["flag"] is True and output["types"] == ["int", "float", "bool"]
    assert output["image"] == "content of image.txt" and output["blob"] == "content of blob.txt"
    assert output["token_received"] and output["token_length"] == 6
    assert output["tags"] == ["a", "b"] and output["numbers"] == [1, 2]
    assert output["files"] == ["content of one.txt", "content of two.txt"]
    assert output["color"] == "blue" and output["size"] == 1024 and output["size_type"] == "int"
    assert output["note"] is None and output["steps"] == 10 and output["name"] == "ab"
    shot(page, "05b-playground-all-inputs")


def test_the_deployment_page_shows_the_replica_and_live_charts(
    page: Page, api: httpx.Client
) -> None:
    page.goto("/#/deployments/ember/describe")
    starts = page.locator("table.starts tbody tr")
    expect(starts.first).to_contain_text("warm-host")  # the playground's run started one
    expect(page.locator("#chart-latency [role=img]")).to_have_attribute(
        "aria-label", re.compile(r"p50 \d")
    )
    latest = page.get_by_role("region", name="Latest predictions").locator("tbody tr")
    expect(latest).to_have_count(1)

    # New traffic shows up without a reload: the replica (back from zero, if the learned
    # keep-alive let it go) while the predictions run, then the predictions and the charts.
    upload = api.post("/v1/files", files={"content": ("tiny.png", png(3, 2), "image/png")})
    slow = {"file": upload.json()["urls"]["get"], "pause": 1.0}  # about 5 s each
    ids = [
        api.post("/v1/deployments/ember/describe/predictions", json={"input": slow}).json()["id"]
        for _ in range(2)
    ]
    expect(page.locator("#replica-state")).to_contain_text("1 ready", timeout=20_000)
    for prediction_id in ids:
        expect(latest.filter(has_text=prediction_id)).to_contain_text("succeeded", timeout=30_000)
    expect(latest).to_have_count(3)
    expect(page.locator("#chart-requests [role=img]")).to_have_attribute(
        "aria-label", re.compile(r"finished")
    )
    page.get_by_label("Time range").select_option("1h")
    expect(page.get_by_text("Buckets of 30 s")).to_be_visible()
    shot(page, "06-deployment")


def test_a_prediction_shows_input_output_logs_and_cost(page: Page, api: httpx.Client) -> None:
    page.goto("/#/predictions")
    page.get_by_label("Status").select_option("succeeded")
    page.get_by_label("Name").fill("ember/image-out")
    page.get_by_label("Name").press("Enter")
    rows = page.locator("table.predictions tbody tr")
    expect(rows).to_have_count(1)
    shot(page, "07-predictions")

    page.get_by_label("Name").fill("ember/describe")
    page.get_by_label("Name").press("Enter")
    expect(rows).to_have_count(3)
    rows.last.get_by_role("link").first.click()  # the oldest: the playground's run
    expect(page.get_by_role("heading", name=re.compile("^Prediction"))).to_be_visible()
    expect(page.locator("section.output pre")).to_contain_text("second line")
    expect(page.locator("pre.logs")).to_contain_text("read 34 bytes")
    expect(page.locator(".timings")).to_contain_text("$")
    expect(page.get_by_role("region", name="Input")).to_contain_text('"lines": 2')
    shot(page, "08-prediction")


def test_a_scaling_setting_changed_on_the_page_is_a_new_release(
    page: Page, api: httpx.Client
) -> None:
    page.goto("/#/deployments/ember/describe")
    page.get_by_label("Maximum instances").fill("3")
    page.get_by_label("Scale-down delay (s)").fill("30")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status")).to_contain_text("Saved as release 2")
    configuration = api.get("/v1/deployments/ember/describe").json()["current_release"]
    assert configuration["number"] == 2
    assert configuration["configuration"]["max_instances"] == 3
    assert configuration["configuration"]["scale_down_delay"] == 30

    page.get_by_label("Queue limit").fill("-5")
    page.get_by_role("button", name="Save settings").click()  # the browser refuses min=0
    assert api.get("/v1/deployments/ember/describe").json()["current_release"]["number"] == 2


def test_the_costs_page_reports_spend_and_applies_advice(page: Page, api: httpx.Client) -> None:
    page.goto("/#/costs")
    row = page.locator("table.costs tbody tr", has_text="ember/describe")
    expect(row).to_be_visible()
    expect(row).to_contain_text("$")
    expect(page.locator("table.costs tr.total")).to_be_visible()
    advice = page.get_by_role("article", name="ember/describe")
    advice.get_by_role("button", name="Get advice").click()
    expect(page.locator(".advice .verdict").first).to_be_visible()
    expect(page.locator(".advice tr.recommended")).to_be_visible()
    shot(page, "09-costs")

    page.get_by_role("button", name="Apply scale to zero after 60 s idle").click()
    expect(page.get_by_role("status")).to_contain_text("as release 3")
    current = api.get("/v1/deployments/ember/describe").json()["current_release"]
    assert current["configuration"]["idle_timeout"] == 60


def test_tokens_are_made_shown_once_and_revoked_and_budgets_set(
    page: Page, server: EmberServer
) -> None:
    page.goto("/#/tokens")
    page.get_by_label("Name", exact=True).fill("ci-bot")
    page.get_by_label("Scope").select_option("predict")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_label("The new token").input_value()
    assert secret.startswith("r8_")
    row = page.locator("tr", has_text="ci-bot")
    expect(row).to_be_visible()
    with server.client(secret) as client:
        assert client.get("/v1/account").status_code == 200

    page.get_by_label("Which").select_option("ember/describe")
    page.get_by_label("Limit (USD)").fill("5")
    page.get_by_role("button", name="Add budget").click()
    expect(page.locator("tr", has_text="deployment ember/describe")).to_be_visible()
    shot(page, "10-tokens")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke ci-bot").click()
    expect(row).to_have_count(0)
    with server.client(secret) as client:
        assert client.get("/v1/account").status_code == 401


def test_a_request_the_dashboard_did_not_make_cannot_use_its_session(
    page: Page, api: httpx.Client
) -> None:
    """The cookie goes with every /v1 request of the browser, but acts only with the session's
    CSRF token, which the dashboard's calls send (and made every other test's actions work)."""
    page.goto("/#/deployments")
    expect(page.get_by_role("heading", name="Deployments")).to_be_visible()
    forged = page.evaluate(
        """() => fetch('/v1/tokens', {method: 'POST', headers: {'Content-Type':
            'application/json'}, body: JSON.stringify({name: 'forged', scope: 'admin'})})
            .then(answer => answer.status)"""
    )
    assert forged == 403
    assert page.evaluate("() => fetch('/v1/account').then(answer => answer.status)") == 401
    assert "forged" not in api.get("/v1/tokens").text


def test_the_api_reference_runs_from_embers_own_files_under_its_csp(
    page: Page, server: EmberServer
) -> None:
    """Issue 18: /docs loaded Swagger UI from a CDN, with no Content-Security-Policy."""
    requested: list[str] = []
    console: list[str] = []

    def on_request(request: Request) -> None:
        requested.append(request.url)

    def on_console(message: ConsoleMessage) -> None:
        console.append(message.text)

    page.on("request", on_request)
    page.on("console", on_console)
    try:
        page.goto("/docs")
        operation = page.locator(".opblock", has_text="/v1/predictions").first
        expect(operation).to_be_visible()
        operation.locator(".opblock-summary").first.click()  # expands: the scripts run
        expect(page.get_by_role("button", name="Try it out").first).to_be_visible()
        shot(page, "11-api-docs")
    finally:
        page.remove_listener("request", on_request)
        page.remove_listener("console", on_console)
    assert [url for url in requested if not url.startswith((server.url, "data:"))] == []
    assert not [text for text in console if "Content Security Policy" in text]


def test_logging_out_ends_the_session(page: Page) -> None:
    page.goto("/#/deployments")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    assert page.context.cookies() == []
    assert page.evaluate("() => fetch('/v1/account').then(answer => answer.status)") == 401
    page.reload()
    expect(page.get_by_label("API token")).to_be_visible()
