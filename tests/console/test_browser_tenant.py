"""Issue 14's tenant pages in a real browser (Debian's Chromium via Playwright) against a live `yun serve`
with the tiny model and the fake trainer: chat in the Playground with a streamed answer and its tokens, time
to first token and cost (which must be what the usage record says was charged), a refusal shown in the
page; the Models page; upload a dataset, train and follow a job, and try its model, on the Fine-tuning page;
every page at 1280x800 and at phone width, saved as screenshots (tests/artifacts/console/)."""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import WAIT_MS, priced_server
from tests.console.test_browser import DESKTOP, PASSWORD, PHONE, _shot, _sign_in, _user
from tests.reliability.conftest import MODEL, ReliabilityServer

FAKE_TRAINER = Path(__file__).parents[1] / "support" / "fake_trainer.py"
ANSWERED_OR_REFUSED = (
    "document.querySelector('.msg.assistant [data-stat=cost]') || !document.getElementById('chat-error').hidden"
)


@pytest.fixture(scope="module")
def tenant_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReliabilityServer]:
    """A priced `yun serve` with the tiny model whose fine-tuning jobs run the fake trainer (seconds, no torch)."""
    with priced_server(
        tmp_path_factory.mktemp("console-tenant"),
        YUN_JOBS__TRAINER_COMMAND=json.dumps(
            [sys.executable, str(FAKE_TRAINER), "--spec", "{spec}", "--events", "{events}"]
        ),
        YUN_JOBS__THREADS="1",
        FAKE_TRAINER_STEP_S="0.05",
    ) as server:
        yield server


def _page(browser: Any, server: ReliabilityServer, email: str, viewport: dict[str, int] = DESKTOP) -> Any:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    _sign_in(page, server, email)
    return page


def _usage_records(page: Any) -> list[dict[str, Any]]:
    """The org's usage records, read through the API with the page's own session."""
    r = page.request.get(page.url.split("/console")[0] + "/v1/organization/usage/records?limit=50")
    assert r.ok, r.text()
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def test_the_playground_streams_an_answer_with_its_tokens_ttft_and_cost(
    browser: Any, tenant_server: ReliabilityServer
) -> None:
    from playwright.sync_api import expect

    server = tenant_server
    _, email = _user(server)
    page = _page(browser, server, email)
    try:
        page.get_by_role("link", name="Playground", exact=True).click()
        page.get_by_role("heading", name="Playground", exact=True).wait_for()
        model = page.get_by_label("Model")
        expect(model.locator(f'option[value="{MODEL}"]')).to_have_count(1, timeout=WAIT_MS)
        model.select_option(MODEL)
        expect(page.locator("#model-price")).to_contain_text("output $2000 per 1M tokens")
        page.get_by_label("System prompt").fill("You answer briefly.")
        page.get_by_label("Max tokens").fill("12")
        page.get_by_label("Temperature").fill("0")

        page.get_by_label("Message").fill("Say hello")
        page.get_by_role("button", name="Send", exact=True).click()
        first = page.locator(".msg.assistant").nth(0)
        expect(first.locator('[data-stat="cost"]')).to_have_text(re.compile(r"^cost \$[\d,.]+$"), timeout=WAIT_MS)
        answer = first.locator(".text").inner_text()
        assert answer, "the streamed answer is shown (the tiny model's text is noise, even blank lines)"
        expect(first.locator('[data-stat="ttft"]')).to_have_text(re.compile(r"^TTFT \d+\.\d\d s$"))
        expect(first.locator('[data-stat="total"]')).to_have_text(re.compile(r"^total \d+\.\d\d s$"))
        tokens = first.locator('[data-stat="tokens"]').inner_text()
        prompt_tokens, completion_tokens = (int(n) for n in re.findall(r"\d+", tokens))

        # The request is in the organization's usage, with the tokens and the cost the page showed.
        request_id = first.get_attribute("data-request-id")
        (record,) = [r for r in _usage_records(page) if r["request_id"] == request_id]
        assert (record["model_id"], record["status"]) == (MODEL, "ok")
        assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt_tokens, completion_tokens)
        assert completion_tokens > 0
        assert record["cost_nanodollars"] == prompt_tokens * 1_000_000 + completion_tokens * 2_000_000
        assert round(float(first.get_attribute("data-charged") or "nan") * 1e9) == record["cost_nanodollars"]
        _shot(page, "playground-1280x800")

        # A second turn carries the first (multi-turn): its prompt is longer than the first's.
        page.get_by_label("Message").fill("And once more")
        page.get_by_role("button", name="Send", exact=True).click()
        second = page.locator(".msg.assistant").nth(1)
        expect(second.locator('[data-stat="cost"]')).to_have_text(re.compile(r"^cost \$[\d,.]+$"), timeout=WAIT_MS)
        second_id = second.get_attribute("data-request-id")
        (again,) = [r for r in _usage_records(page) if r["request_id"] == second_id]
        assert again["prompt_tokens"] > prompt_tokens + completion_tokens

        # Stop: the answer being streamed ends where it was, says so, and is billed for what was streamed.
        page.get_by_role("button", name="New conversation").click()
        expect(page.locator(".msg")).to_have_count(0)
        page.get_by_label("Max tokens").fill("400")
        page.get_by_label("Message").fill("Count from one to two hundred, one number a line.")
        page.get_by_role("button", name="Send", exact=True).click()
        # (the tiny model's text may be blank lines: the page counts the pieces that came)
        page.locator(".msg.assistant.streaming[data-chunks]").wait_for(timeout=WAIT_MS)
        page.get_by_role("button", name="Stop", exact=True).click()
        stopped = page.locator(".msg.assistant").nth(0)
        expect(stopped.locator('[data-stat="stopped"]')).to_have_text("stopped", timeout=WAIT_MS)
        expect(page.get_by_role("button", name="Send", exact=True)).to_be_enabled()
        stopped_id = stopped.get_attribute("data-request-id")
        assert stopped_id
        for _ in range(60):  # the gateway settles a stream its client left within moments (bounded anyway)
            cut = [r for r in _usage_records(page) if r["request_id"] == stopped_id]
            if cut:
                break
            page.wait_for_timeout(500)
        assert cut and cut[0]["completion_tokens"] < 400, cut
        expect(stopped.locator('[data-stat="cost"]')).to_have_text(re.compile(r"^cost \$[\d,.]+ charged$"))
        assert stopped.get_attribute("data-charged") == cut[0]["cost_usd"]
        assert page.errors == []
    finally:
        page.context.close()


def test_the_playground_shows_a_refusal_and_preselects_a_model(browser: Any, tenant_server: ReliabilityServer) -> None:
    from playwright.sync_api import expect

    server = tenant_server
    org_id = server.new_org(f"broke-{uuid.uuid4().hex[:6]}", None)  # no credit at all
    email = f"broke-{uuid.uuid4().hex[:6]}@example.com"
    with server.admin() as c:
        r = c.post("/admin/users", json={"email": email, "org": org_id, "role": "member", "password": PASSWORD})
    assert r.status_code == 201, r.text
    page = _page(browser, server, email)
    try:
        page.goto(f"{server.url}/console/playground?model={MODEL}")
        expect(page.get_by_label("Model")).to_have_value(MODEL, timeout=WAIT_MS)
        page.get_by_label("Message").fill("Hello")
        page.get_by_role("button", name="Send", exact=True).click()
        alert = page.locator("#chat-error")
        # No credit: OpenAI's (and Yun's) 429 insufficient_quota, with the API's own explanation.
        expect(alert).to_contain_text("429 insufficient_quota", timeout=WAIT_MS)
        expect(alert).to_contain_text("Add credits")
        expect(page.locator(".msg.assistant")).to_have_count(0)
        expect(page.get_by_label("Message")).to_have_value("Hello")  # given back, to send again
        _shot(page, "playground-refused-1280x800")
        # A bad parameter: the API's 400, naming it.
        page.get_by_label("Temperature").fill("7")
        page.get_by_role("button", name="Send", exact=True).click()
        expect(alert).to_contain_text("400", timeout=WAIT_MS)
        expect(alert).to_contain_text("temperature")
        page.goto(f"{server.url}/console/playground?model=ft:nobody:nothing")
        expect(page.locator("#chat-error")).to_contain_text("ft:nobody:nothing", timeout=WAIT_MS)
        assert page.errors == []
    finally:
        page.context.close()


def test_the_models_page_shows_the_catalog_prices_and_dedicated_deployments(
    browser: Any, tenant_server: ReliabilityServer
) -> None:
    from playwright.sync_api import expect

    server = tenant_server
    org_id, email = _user(server)
    with server.admin() as c:  # dedicated to the org, at no replicas (nothing more to run on 2 cores)
        r = c.post("/admin/deployments", json={"model": MODEL, "id": f"ded-{org_id}", "owner": org_id, "replicas": 0})
    assert r.status_code == 201, r.text
    page = _page(browser, server, email)
    try:
        page.get_by_role("link", name="Models", exact=True).click()
        page.get_by_role("heading", name="Models", exact=True).wait_for()
        row = page.locator("#catalog tr", has_text=MODEL)
        expect(row).to_contain_text("$1000", timeout=WAIT_MS)  # input, USD per 1M tokens
        expect(row).to_contain_text("$2000")
        # Its status for this org, as /v1/models says it (its requests go to its own, empty, deployment).
        status = page.request.get(f"{server.url}/v1/models/{MODEL}").json()["status"]
        expect(row.locator("td").nth(10)).to_have_text(status)
        expect(row).to_contain_text("512")  # the served context
        expect(page.locator("#fine-tuned")).to_contain_text("No fine-tuned models yet")
        dedicated = page.locator("#deployments tr", has_text=f"ded-{org_id}")
        expect(dedicated).to_contain_text("0 / 0")
        expect(dedicated).to_contain_text(MODEL)
        _shot(page, "models-1280x800")
        row.get_by_role("link", name=f"Try {MODEL} in the playground").click()
        page.get_by_role("heading", name="Playground", exact=True).wait_for()
        expect(page.get_by_label("Model")).to_have_value(MODEL, timeout=WAIT_MS)
        assert page.errors == []
    finally:
        page.context.close()
        with server.admin() as c:
            c.delete(f"/admin/deployments/ded-{org_id}")


def _dataset(path: Path, n: int = 12) -> Path:
    lines = [
        {"messages": [{"role": "user", "content": f"What is {i} + 1?"}, {"role": "assistant", "content": str(i + 1)}]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_fine_tuning_upload_train_follow_and_try(
    browser: Any, tenant_server: ReliabilityServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = tenant_server
    _, email = _user(server)
    _, other_email = _user(server, role="member")
    page = _page(browser, server, email)
    other = _page(browser, server, other_email)
    try:
        page.get_by_role("link", name="Fine-tuning", exact=True).click()
        page.get_by_role("heading", name="Fine-tuning", exact=True).wait_for()
        expect(page.locator("#files")).to_contain_text("No files yet", timeout=WAIT_MS)

        # A bad file is refused with the API's own message, in the page.
        (tmp_path / "bad.jsonl").write_text('{"messages": []}\n')
        page.get_by_label("JSONL file").set_input_files(str(tmp_path / "bad.jsonl"))
        page.get_by_role("button", name="Upload").click()
        expect(page.locator("#error")).to_contain_text("400", timeout=WAIT_MS)

        page.get_by_label("JSONL file").set_input_files(str(_dataset(tmp_path / "sums.jsonl")))
        page.get_by_role("button", name="Upload").click()
        file_row = page.locator("#files tr", has_text="sums.jsonl")
        expect(file_row).to_contain_text("fine-tune", timeout=WAIT_MS)
        file_id = file_row.locator("td").first.inner_text()
        expect(page.get_by_label("Training file")).to_have_value(file_id)

        page.get_by_label("Base model").select_option(MODEL)
        page.get_by_label("Suffix").fill("sums")
        page.get_by_label("Epochs").fill("2")
        page.get_by_role("button", name="Start job").click()
        job = page.locator("#job")
        expect(job).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#job-status")).to_have_text("succeeded", timeout=WAIT_MS * 3)
        job_id = page.locator("#job-title").inner_text().removeprefix("Job ")
        expect(page.locator("#events")).to_contain_text("training loss=")
        expect(page.locator("#checkpoints tr")).to_have_count(2)  # one per epoch
        expect(page.locator("canvas#loss")).to_be_visible()
        points = page.evaluate("Chart.getChart('loss').data.datasets[0].data.length")
        assert points >= 2, "the loss curve has a point per step"
        jobs_row = page.locator("#jobs tr", has_text=job_id)
        expect(jobs_row).to_contain_text("succeeded")
        fine_tuned = jobs_row.locator("td").nth(4).inner_text()
        assert fine_tuned.startswith(f"ft:{MODEL}:") and "sums" in fine_tuned
        _shot(page, "fine-tuning-1280x800")

        # Another organization's session: its pages' calls do not reach this org's job or file.
        base = server.url
        for path in (f"/v1/fine_tuning/jobs/{job_id}", f"/v1/fine_tuning/jobs/{job_id}/events", f"/v1/files/{file_id}"):
            assert other.request.get(base + path).status == 404, path
        other.goto(base + "/console/fine-tuning")
        expect(other.locator("#jobs")).to_contain_text("No fine-tuning jobs yet", timeout=WAIT_MS)
        expect(other.locator("#files")).not_to_contain_text("sums.jsonl")

        # Delete the file: it leaves the list.
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Delete sums.jsonl").click()
        expect(page.locator("#files")).not_to_contain_text("sums.jsonl", timeout=WAIT_MS)

        # Cancel: a long job (many examples) is stopped from the page while it runs.
        page.get_by_label("JSONL file").set_input_files(str(_dataset(tmp_path / "long.jsonl", 4000)))
        page.get_by_role("button", name="Upload").click()
        expect(page.locator("#files tr", has_text="long.jsonl")).to_be_visible(timeout=WAIT_MS)
        page.get_by_label("Suffix").fill("long")
        page.get_by_label("Epochs").fill("1")
        page.get_by_role("button", name="Start job").click()
        expect(page.locator("#job-status")).to_have_text("running", timeout=WAIT_MS)
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Cancel job").click()
        expect(page.locator("#job-status")).to_have_text("cancelled", timeout=WAIT_MS)
        expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
        expect(page.get_by_role("link", name="Try in playground")).to_be_hidden()

        # "Try in playground" on the job that succeeded opens the playground on its model, which answers
        # once its base's replica has loaded the adapter (the controller replaces it: retried, bounded).
        page.get_by_role("button", name=f"View {job_id}").click()
        expect(page.locator("#job-status")).to_have_text("succeeded", timeout=WAIT_MS)
        page.get_by_role("link", name="Try in playground").click()
        page.get_by_role("heading", name="Playground", exact=True).wait_for()
        expect(page.get_by_label("Model")).to_have_value(fine_tuned, timeout=WAIT_MS)
        page.get_by_label("Max tokens").fill("4")
        page.get_by_label("Message").fill("What is 2 + 1?")
        answered = page.locator(".msg.assistant [data-stat='cost']")
        for _ in range(20):
            page.get_by_role("button", name="Send", exact=True).click()
            page.wait_for_function(ANSWERED_OR_REFUSED, timeout=WAIT_MS)
            if answered.count():
                break
            page.wait_for_timeout(3000)  # the error put the message back in the box
        expect(answered).to_have_count(1)
        request_id = page.locator(".msg.assistant").first.get_attribute("data-request-id")
        (record,) = [r for r in _usage_records(page) if r["request_id"] == request_id]
        assert record["model_id"] == fine_tuned
        page.get_by_role("link", name="Models", exact=True).click()
        expect(page.locator("#fine-tuned")).to_contain_text(fine_tuned, timeout=WAIT_MS)
        assert page.errors == [] and other.errors == []
    finally:
        page.context.close()
        other.context.close()


def test_the_tenant_pages_at_both_widths(browser: Any, tenant_server: ReliabilityServer) -> None:
    """Each page at phone width with no horizontal overflow but its tables' own scroll boxes, and at 1280x800."""
    _, email = _user(tenant_server)
    for viewport, size in ((PHONE, "390x844"), (DESKTOP, "1280x800")):
        page = _page(browser, tenant_server, email, viewport)
        try:
            for path, heading in (("models", "Models"), ("playground", "Playground"), ("fine-tuning", "Fine-tuning")):
                page.goto(f"{tenant_server.url}/console/{path}")
                page.get_by_role("heading", name=heading, exact=True).wait_for()
                page.wait_for_load_state("networkidle")
                assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"], (path, size)
                if size == "390x844":
                    _shot(page, f"{path}-{size}")
            assert page.errors == []
        finally:
            page.context.close()
