"""Issue 14's operator pages in a real browser (Debian's Chromium via Playwright) against a live `yun serve`
with the tiny model: the platform admin signs in with the bootstrap key, scales and updates the tiny
model's deployment from Deployments and sees desired/ready change; grants credits, changes a role, invites
someone and sets a price on Organizations; sees revenue against compute cost charted on Economics. A
member gets a 403 page and no operator link. Screenshots at 1280x800 and 390x844 in tests/artifacts/console.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.console.conftest import WAIT_MS, admin_sign_in, priced_server
from tests.console.test_browser import DESKTOP, PASSWORD, PHONE, _shot, _sign_in, _user
from tests.reliability.conftest import MODEL, ReliabilityServer

SCALE_WAIT_MS = 240_000  # a second replica loads the tiny model on a busy 2-core machine: a bound only


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReliabilityServer]:
    """conftest's server, but metering compute every 2 s, so Economics has a cost to show within the test."""
    with priced_server(Path(tmp_path_factory.mktemp("operator-server")), YUN_BILLING__COMPUTE_INTERVAL_S="2") as server:
        yield server


def _no_overflow(page: Any, what: str) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{what} is {width}px wide at phone width"


def test_the_operator_scales_grants_and_reads_the_economics(browser: Any, console_server: ReliabilityServer) -> None:
    from playwright.sync_api import expect

    server = console_server
    org_id, email = _user(server, "member")
    with server.admin() as c:
        org_name = c.get(f"/admin/orgs/{org_id}").json()["name"]
        assert c.put("/admin/compute-prices/cpu1", json={"cost": "0.36", "price": "0.72"}).status_code == 200
        deployment = next(d for d in c.get("/admin/deployments").json()["data"] if d["model"] == MODEL)
    dep_id = deployment["id"]
    assert (deployment["desired"], deployment["ready"]) == (1, 1)
    # Some revenue for the economics page: one request with a key of the org.
    key = server.new_key(org_id)
    openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=4
    )

    context = browser.new_context(viewport=DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        admin_sign_in(page, server)

        # Deployments: scale the tiny model from 1 to 2 replicas; desired moves at once, ready follows.
        page.get_by_role("link", name="Deployments", exact=True).click()
        page.get_by_role("heading", name="Deployments", exact=True).wait_for()
        card = page.locator(f'section[data-deployment="{dep_id}"]')
        expect(card.locator(".desired")).to_have_text("1", timeout=WAIT_MS)
        expect(card.locator(".ready")).to_have_text("1")
        expect(card.locator(".replicas tr")).to_have_count(1)
        _shot(page, "deployments-1280x800")
        card.get_by_label(f"replicas of {dep_id}").fill("2")
        card.get_by_role("button", name=f"Scale {dep_id}").click()  # beyond its max of 1: refused, said
        expect(page.locator("#error")).to_contain_text("max", timeout=WAIT_MS)
        expect(card.locator(".desired")).to_have_text("1")
        card.get_by_label(f"replicas of {dep_id}").fill("2")
        card.get_by_label(f"max of {dep_id}").fill("2")
        card.get_by_role("button", name=f"Scale {dep_id}").click()
        expect(page.locator("#error")).to_be_hidden(timeout=WAIT_MS)
        expect(card.locator(".desired")).to_have_text("2", timeout=WAIT_MS)
        expect(card.locator(".ready")).to_have_text("2", timeout=SCALE_WAIT_MS)  # by polling, no reload
        expect(card.locator(".replicas tr")).to_have_count(2)
        expect(card.locator(".health")).to_have_text("ok")
        with server.admin() as c:
            assert c.get(f"/admin/deployments/{dep_id}").json()["desired"] == 2
        _shot(page, "deployments-scaled-1280x800")
        # And back to one, then update the engine's threads: a new generation, shown on the page.
        card.get_by_label(f"replicas of {dep_id}").fill("1")
        card.get_by_role("button", name=f"Scale {dep_id}").click()
        expect(card.locator(".desired")).to_have_text("1", timeout=WAIT_MS)
        expect(card.locator(".ready")).to_have_text("1", timeout=SCALE_WAIT_MS)
        card.get_by_label(f"threads of {dep_id}").fill("1")
        card.get_by_role("button", name=f"Update {dep_id}").click()
        expect(card.locator(".engine")).to_contain_text("1 threads", timeout=WAIT_MS)
        expect(card.locator(".engine")).to_contain_text("generation 2")
        with server.admin() as c:
            updated = c.get(f"/admin/deployments/{dep_id}").json()
        assert updated["threads"] == 1 and updated["generation"] == 2

        # Organizations: open the org, grant credits and see the balance change; change a role; invite.
        page.get_by_role("link", name="Organizations", exact=True).click()
        page.get_by_role("heading", name="Organizations", exact=True).wait_for()
        org_row = page.locator(f'#orgs tr[data-org="{org_id}"]')
        expect(org_row).to_be_visible(timeout=WAIT_MS)
        org_row.get_by_role("link").click()
        balance = page.locator("#org-balance")
        expect(balance).not_to_have_text("…", timeout=WAIT_MS)
        before = float(balance.inner_text().lstrip("$").replace(",", ""))
        page.get_by_label("Amount (USD)").fill("2.5")
        page.get_by_label("Note").fill("welcome credit")
        page.get_by_role("button", name="Grant credits").click()
        after = f"${before + 2.5:,.2f}"
        expect(balance).to_have_text(re.compile("^" + re.escape(after)), timeout=WAIT_MS)
        expect(org_row.locator("td").nth(2)).to_have_text(re.compile("^" + re.escape(after)))
        expect(page.locator("#ledger tr").first).to_contain_text("welcome credit")
        page.get_by_label(f"Role of {email}").select_option("admin")
        with server.admin() as c:
            for _ in range(100):  # the change is one PATCH; bounded wait for it to land
                roles = {m["email"]: m["role"] for m in c.get(f"/admin/orgs/{org_id}/members").json()["data"]}
                if roles[email] == "admin":
                    break
                page.wait_for_timeout(100)
        assert roles[email] == "admin"
        page.locator("#add-member").get_by_label("Email").fill("invitee@example.com")
        page.get_by_role("button", name="Invite by link").click()
        link = page.locator("#invite-link")
        expect(link).to_contain_text("/console/invite/", timeout=WAIT_MS)
        expect(page.locator("#invitations")).to_contain_text("invitee@example.com")
        invite_url = link.inner_text()

        # Prices: set a new version for the tiny model; current and history show it.
        page.get_by_label("Model", exact=True).fill(MODEL)
        page.locator("#set-price").get_by_label("Input", exact=True).fill("1500")
        page.locator("#set-price").get_by_label("Output", exact=True).fill("2500")
        page.get_by_role("button", name="Set price").click()
        expect(page.locator("#price-history tr").first).to_contain_text("1500", timeout=WAIT_MS)
        expect(page.locator("#price-list tr", has_text=MODEL)).to_contain_text("2500")
        assert page.locator("#price-history tr").count() >= 2  # the earlier version is still there
        _shot(page, "organizations-1280x800")

        # Economics: revenue against compute cost, charted (Chart.js drew on the canvases).
        page.get_by_role("link", name="Economics", exact=True).click()
        page.get_by_role("heading", name="Economics", exact=True).wait_for()
        expect(page.locator("#econ-table tr", has_text=MODEL)).to_be_visible(timeout=WAIT_MS)
        for _ in range(60):  # the replicas' seconds are metered every 2 s here; bounded wait for some
            if page.locator("#cost").inner_text() not in ("…", "$0.00"):
                break
            page.get_by_role("button", name="Show", exact=True).click()
            page.wait_for_timeout(500)
        assert float(page.locator("#cost").inner_text().lstrip("$")) > 0
        assert int(page.locator("#replica-seconds").inner_text().split()[0].replace(",", "")) > 0
        assert page.evaluate("Chart.getChart('econ-days') !== undefined && Chart.getChart('econ-keys') !== undefined")
        assert page.evaluate("Chart.getChart('econ-keys').data.labels").count(MODEL) == 1
        assert page.locator("#revenue").inner_text().startswith("$")
        page.get_by_label("By").select_option("org")
        expect(page.locator("#econ-key-head")).to_have_text("Organization", timeout=WAIT_MS)
        expect(page.locator("#econ-table")).to_contain_text(org_name)
        expect(page.locator("#econ-table")).to_contain_text("shared compute (operator)")
        _shot(page, "economics-1280x800")
        assert errors == []
    finally:
        context.close()

    # The invitee opens the link, sets a password and is signed in, as an admin of the org.
    invitee = browser.new_context(viewport=DESKTOP)
    try:
        page = invitee.new_page()
        page.goto(invite_url)
        page.get_by_role("heading", name="Invitation").wait_for()
        _shot(page, "invite-1280x800")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Password again").fill(PASSWORD)
        page.get_by_role("button", name="Set password and sign in").click()
        page.get_by_role("heading", name="Overview").wait_for(timeout=WAIT_MS)
        expect(page.locator(".who")).to_contain_text("invitee@example.com · member")
        page.goto(invite_url)
        expect(page.get_by_role("alert")).to_contain_text("already been used")
    finally:
        invitee.close()


def test_a_member_gets_a_403_page_and_no_operator_links(browser: Any, console_server: ReliabilityServer) -> None:
    from playwright.sync_api import expect

    _, email = _user(console_server, "admin")
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    try:
        _sign_in(page, console_server, email)
        for name in ("Organizations", "Deployments", "Economics"):
            expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)
        answer = page.goto(console_server.url + "/console/deployments")
        assert answer is not None and answer.status == 403
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
        expect(page.locator("main")).to_contain_text("platform admins only")
    finally:
        context.close()


def test_an_owner_invites_someone_from_the_people_page(browser: Any, console_server: ReliabilityServer) -> None:
    from playwright.sync_api import expect

    org_id, owner = _user(console_server, "owner")
    invitee = f"new-{uuid.uuid4().hex[:6]}@example.com"
    context = browser.new_context(viewport=DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console_server.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        _sign_in(page, console_server, owner)
        page.get_by_role("link", name="People", exact=True).click()
        page.get_by_role("heading", name="People", exact=True).wait_for()
        expect(page.locator("#people")).to_contain_text(owner, timeout=WAIT_MS)
        page.get_by_label("Email").fill(invitee)
        page.get_by_label("Role").select_option("billing-viewer")
        page.get_by_role("button", name="Invite", exact=True).click()
        link = page.locator("#invite-link")
        expect(link).to_contain_text("/console/invite/", timeout=WAIT_MS)
        expect(page.locator("#invitations tr", has_text=invitee)).to_contain_text("pending")
        url = link.inner_text()
        page.get_by_role("button", name="Copy").click()
        assert page.evaluate("navigator.clipboard.readText()") == url
        _shot(page, "people-1280x800")
        assert errors == []
    finally:
        context.close()
    other = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = other.new_page()
        page.goto(url)
        expect(page.locator("main")).to_contain_text(invitee)
        _no_overflow(page, "invite")
        _shot(page, "invite-390x844")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Password again").fill(PASSWORD + "!")
        page.get_by_role("button", name="Set password and sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("not the same")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Password again").fill(PASSWORD)
        page.get_by_role("button", name="Set password and sign in").click()
        page.get_by_role("heading", name="Overview").wait_for(timeout=WAIT_MS)
        expect(page.locator(".who")).to_contain_text(f"{invitee} · billing-viewer")
        expect(page.get_by_role("link", name="People", exact=True)).to_have_count(0)
    finally:
        other.close()
    with console_server.admin() as c:
        found = c.get(f"/admin/orgs/{org_id}/invitations").json()["data"]
    assert [(i["email"], i["state"]) for i in found] == [(invitee, "used")]


def test_operator_pages_at_phone_width(browser: Any, console_server: ReliabilityServer) -> None:
    from playwright.sync_api import expect

    org_id = console_server.new_org(f"phone-{uuid.uuid4().hex[:6]}", "3")
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        admin_sign_in(page, console_server)
        page.goto(f"{console_server.url}/console/organizations#{org_id}")
        page.get_by_role("heading", name="Organizations", exact=True).wait_for()
        expect(page.locator("#org-balance")).to_have_text("$3.00", timeout=WAIT_MS)
        page.wait_for_load_state("networkidle")
        _no_overflow(page, "organizations")
        _shot(page, "organizations-390x844")
        page.goto(f"{console_server.url}/console/deployments")
        expect(page.locator("section.deployment .ready").first).to_have_text(re.compile(r"^\d+$"), timeout=WAIT_MS)
        _no_overflow(page, "deployments")
        _shot(page, "deployments-390x844")
        page.goto(f"{console_server.url}/console/economics")
        expect(page.locator("#revenue")).not_to_have_text("…", timeout=WAIT_MS)
        page.wait_for_load_state("networkidle")
        _no_overflow(page, "economics")
        _shot(page, "economics-390x844")
        page.goto(f"{console_server.url}/console/people")
        expect(page.locator("#people")).not_to_contain_text("…", timeout=WAIT_MS)
        _no_overflow(page, "people")
        _shot(page, "people-390x844")
        assert errors == []
    finally:
        context.close()
