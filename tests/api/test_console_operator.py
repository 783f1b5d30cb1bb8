"""The operator's console (issue 14) on the HTTP API, on SQLite and PostgreSQL, no browser: operator pages
for platform admins only (a 403 page, not JSON, for anyone else, and no nav link), admin calls refused to
a tenant's session, CSRF on the new state changes, invitations (single use, expiring, stored hashed), the
per-address sign-in limit, and sign-out with a bad CSRF token answered with a page.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa
import time_machine

from tests.api.conftest import Api
from tests.api.test_console_sessions import PASSWORD, browser, csrf_of, new_user, sign_in
from yun.tenancy.throttle import SignInThrottle

OPERATOR_PAGES = ("/console/organizations", "/console/deployments", "/console/economics")
TOKEN_RE = re.compile(r"/console/invite/([A-Za-z0-9_-]+)$")


async def admin_browser_sign_in(api: Api, b: httpx.AsyncClient) -> None:
    r = await b.post("/console/sign-in/key", data={"api_key": api.admin_key})
    assert r.status_code == 303, r.text


async def test_operator_pages_are_for_platform_admins_only(api: Api) -> None:
    org, _ = await api.new_org()
    for role in ("member", "admin", "owner"):
        email = await new_user(api, org, role)
        async with browser(api) as b:
            assert (await sign_in(b, email)).status_code == 303
            for page in OPERATOR_PAGES:
                r = await b.get(page)
                assert r.status_code == 403 and r.headers["content-type"].startswith("text/html"), (role, page)
                assert "<h1>Not allowed</h1>" in r.text and "platform admins only" in r.text
            home = (await b.get("/console")).text
            assert all(f'href="{p}"' not in home for p in OPERATOR_PAGES), role
            # The admin API itself refuses the session too (the pages' gate is not the only one).
            csrf = await csrf_of(b)
            assert (await b.get("/admin/orgs")).status_code == 403
            assert (await b.get("/admin/deployments")).status_code == 403
            assert (await b.get("/admin/economics")).status_code == 403
            r = await b.post(f"/admin/orgs/{org}/credits", json={"amount": "100"}, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 403 and r.json()["error"]["type"] == "invalid_request_error"
            r = await b.post(
                f"/admin/orgs/{org}/invitations",
                json={"email": "x@example.com", "role": "owner"},
                headers={"X-CSRF-Token": csrf},
            )
            assert r.status_code == 403
    async with browser(api) as anon:
        for page in OPERATOR_PAGES:
            r = await anon.get(page)
            assert r.status_code == 303 and r.headers["location"] == "/console/sign-in"
    async with browser(api) as b:
        await admin_browser_sign_in(api, b)
        for page, heading in zip(OPERATOR_PAGES, ("Organizations", "Deployments", "Economics"), strict=True):
            r = await b.get(page)
            assert r.status_code == 200 and f"<h1>{heading}</h1>" in r.text
            assert all(f'href="{p}"' in r.text for p in OPERATOR_PAGES)


async def test_an_operator_session_manages_people_credits_prices_with_csrf(api: Api) -> None:
    org, _ = await api.new_org(credits="1")
    email = await new_user(api, org, "member")
    async with browser(api) as b:
        await admin_browser_sign_in(api, b)
        csrf = await csrf_of(b)
        # Without the session's CSRF token, no state change goes through.
        for method, path, body in (
            ("POST", f"/admin/orgs/{org}/credits", {"amount": "5"}),
            ("POST", f"/admin/orgs/{org}/invitations", {"email": "a@example.com"}),
            ("PUT", "/admin/prices/m", {"input": "1", "output": "2"}),
            ("POST", "/admin/deployments/nope/scale", {"replicas": 2}),
        ):
            r = await b.request(method, path, json=body)
            assert r.status_code == 403 and "CSRF" in r.json()["error"]["message"], path
            r = await b.request(method, path, json=body, headers={"X-CSRF-Token": "not-it"})
            assert r.status_code == 403, path
        assert (await b.get(f"/admin/orgs/{org}/balance")).json()["available"] == 1.0
        h = {"X-CSRF-Token": csrf}
        r = await b.post(f"/admin/orgs/{org}/credits", json={"amount": "5", "note": "from the console"}, headers=h)
        assert r.status_code == 201 and r.json()["balance"]["available"] == 6.0
        ledger = (await b.get(f"/admin/orgs/{org}/ledger")).json()["data"]
        assert [e["note"] for e in ledger][-1] == "from the console"
        # Change a member's role, then remove them; a role outside the list is a 400, an unknown member a 404.
        members = (await b.get(f"/admin/orgs/{org}/members")).json()["data"]
        member = next(m for m in members if m["email"] == email)
        r = await b.patch(f"/admin/orgs/{org}/members/{member['id']}", json={"role": "admin"}, headers=h)
        assert r.status_code == 200 and r.json()["role"] == "admin"
        r = await b.patch(f"/admin/orgs/{org}/members/{member['id']}", json={"role": "root"}, headers=h)
        assert r.status_code == 400
        r = await b.patch(f"/admin/orgs/{org}/members/mem_nope", json={"role": "member"}, headers=h)
        assert r.status_code == 404
        assert (await b.patch(f"/admin/orgs/{org}/members/{member['id']}", json={"role": "member"})).status_code == 403
    # The new role acts at once on the person's own session.
    async with browser(api) as person:
        assert (await sign_in(person, email)).status_code == 303
        assert (await person.get("/console/api/me")).json()["role"] == "admin"


async def test_economics_takes_a_date_range(api: Api) -> None:
    today = datetime.now(UTC).date()
    r = await api.get("/admin/economics", start=(today - timedelta(days=6)).isoformat(), end=today.isoformat())
    assert r.status_code == 200 and r.json()["start"] == (today - timedelta(days=6)).isoformat()
    r = await api.get("/admin/economics", start=today.isoformat(), end=(today - timedelta(days=1)).isoformat())
    assert r.status_code == 400 and r.json()["error"]["param"] == "start"
    assert (await api.get("/admin/economics", start="yesterday")).status_code == 400


async def test_an_invitation_works_once_is_stored_hashed_and_signs_in(api: Api) -> None:
    org, _ = await api.new_org()
    r = await api.http.post(
        f"/admin/orgs/{org}/invitations", json={"email": "New.Person@Example.com", "role": "admin"}, headers=api.auth()
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["email"] == "new.person@example.com" and made["state"] == "pending" and made["role"] == "admin"
    found = TOKEN_RE.search(made["url"])
    assert found is not None and made["url"].startswith("http://yun/console/invite/")
    token = found.group(1)
    # Only the token's SHA-256 is stored; listings never show a token.
    with api.services.db.read_session() as s:
        rows = s.execute(sa.text("SELECT token_hash FROM invitations")).scalars().all()
    assert rows == [hashlib.sha256(token.encode()).hexdigest()]
    listed = (await api.get(f"/admin/orgs/{org}/invitations")).json()["data"]
    assert token not in str(listed) and listed[0]["state"] == "pending"

    async with browser(api) as b:
        page = await b.get(f"/console/invite/{token}")
        assert (
            page.status_code == 200
            and "new.person@example.com" in page.text
            and "as <strong>admin</strong>" in page.text
        )
        assert page.headers["referrer-policy"] == "no-referrer"
        r = await b.post(f"/console/invite/{token}", data={"password": "short", "password_again": "short"})
        assert r.status_code == 400 and "8-1024 characters" in r.text
        r = await b.post(f"/console/invite/{token}", data={"password": PASSWORD, "password_again": PASSWORD + "x"})
        assert r.status_code == 400 and "not the same" in r.text
        assert "yun_session" not in b.cookies
        r = await b.post(f"/console/invite/{token}", data={"password": PASSWORD, "password_again": PASSWORD})
        assert r.status_code == 303 and r.headers["location"] == "/console" and "yun_session" in b.cookies
        me = (await b.get("/console/api/me")).json()
        assert me["email"] == "new.person@example.com" and me["org_id"] == org and me["role"] == "admin"
    # Single use: the link now says so (a page, not JSON), and a second use does nothing.
    async with browser(api) as other:
        r = await other.get(f"/console/invite/{token}")
        assert r.status_code == 410 and "already been used" in r.text
        r = await other.post(f"/console/invite/{token}", data={"password": "another password", "password_again": "x"})
        assert r.status_code == 410 and "yun_session" not in other.cookies
        assert (await sign_in(other, "new.person@example.com", "another password")).status_code == 401
        assert (await sign_in(other, "new.person@example.com")).status_code == 303
        r = await other.get("/console/invite/not-a-token")
        assert r.status_code == 404 and "not valid" in r.text
    assert (await api.get(f"/admin/orgs/{org}/invitations")).json()["data"][0]["state"] == "used"


async def test_an_invitation_expires(api: Api) -> None:
    org, _ = await api.new_org()
    r = await api.http.post(f"/admin/orgs/{org}/invitations", json={"email": "late@example.com"}, headers=api.auth())
    token = r.json()["url"].rsplit("/", 1)[1]
    ttl = api.services.settings.console.invitation_ttl_s
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=ttl + 60)):
        async with browser(api) as b:
            r = await b.get(f"/console/invite/{token}")
            assert r.status_code == 410 and "expired" in r.text
            r = await b.post(f"/console/invite/{token}", data={"password": PASSWORD, "password_again": PASSWORD})
            assert r.status_code == 410 and "yun_session" not in b.cookies
        assert (await api.get(f"/admin/orgs/{org}/invitations")).json()["data"][0]["state"] == "expired"


async def test_org_owners_and_admins_invite_to_their_own_org(api: Api) -> None:
    org, _ = await api.new_org()
    other_org, _ = await api.new_org()
    owner, admin, member = [await new_user(api, org, role) for role in ("owner", "admin", "member")]
    existing = await new_user(api, other_org, "member")  # already signs in, elsewhere
    async with browser(api) as b:
        assert (await sign_in(b, admin)).status_code == 303
        h = {"X-CSRF-Token": await csrf_of(b)}
        assert (await b.post("/v1/organization/invitations", json={"email": "x@example.com"})).status_code == 403
        r = await b.post("/v1/organization/invitations", json={"email": "x@example.com", "role": "owner"}, headers=h)
        assert r.status_code == 400 and r.json()["error"]["param"] == "role"
        r = await b.post("/v1/organization/invitations", json={"email": existing, "role": "member"}, headers=h)
        assert r.status_code == 201 and r.json()["org_id"] == org
        token = r.json()["path"].rsplit("/", 1)[1]
        assert len((await b.get("/v1/organization/invitations")).json()["data"]) == 1
    async with browser(api) as b:
        assert (await sign_in(b, owner)).status_code == 303
        h = {"X-CSRF-Token": await csrf_of(b)}
        r = await b.post("/v1/organization/invitations", json={"email": "y@example.com", "role": "owner"}, headers=h)
        assert r.status_code == 201
    async with browser(api) as b:
        assert (await sign_in(b, member)).status_code == 303
        h = {"X-CSRF-Token": await csrf_of(b)}
        assert (
            await b.post("/v1/organization/invitations", json={"email": "z@example.com"}, headers=h)
        ).status_code == 403
        assert (await b.get("/v1/organization/invitations")).status_code == 403
    # Someone who already has a password keeps it: the link asks for it, and a wrong one uses nothing.
    async with browser(api) as b:
        page = await b.get(f"/console/invite/{token}")
        assert page.status_code == 200 and "give your password" in page.text
        r = await b.post(f"/console/invite/{token}", data={"password": "not my password"})
        assert r.status_code == 400 and "yun_session" not in b.cookies
        r = await b.post(f"/console/invite/{token}", data={"password": PASSWORD})
        assert r.status_code == 303
    async with browser(api) as b:
        assert (
            await b.post("/console/sign-in", data={"email": existing, "password": PASSWORD, "org": org})
        ).status_code == 303
        assert (await b.get("/console/api/me")).json()["org_id"] == org


async def test_an_invitation_cannot_take_over_someone_or_change_a_role(api: Api) -> None:
    org_a, _ = await api.new_org()
    org_b, _ = await api.new_org()
    admin = await new_user(api, org_a, "admin")
    # Someone in org B with no password yet (added as a member only): an admin of A invites their email.
    r = await api.http.post(
        f"/admin/orgs/{org_b}/members", json={"email": "quiet@example.com", "role": "owner"}, headers=api.auth()
    )
    assert r.status_code == 201, r.text
    async with browser(api) as b:
        assert (await sign_in(b, admin)).status_code == 303
        h = {"X-CSRF-Token": await csrf_of(b)}
        r = await b.post("/v1/organization/invitations", json={"email": "quiet@example.com"}, headers=h)
        assert r.status_code == 201
        token = r.json()["path"].rsplit("/", 1)[1]
        # An existing member is not invited again (an invitation never changes anyone's role).
        r = await b.post("/v1/organization/invitations", json={"email": admin, "role": "member"}, headers=h)
        assert r.status_code == 400 and r.json()["error"]["param"] == "email"
    async with browser(api) as holder:  # whoever holds the link: here, the inviting admin
        data = {"password": "chosen by the admin", "password_again": "chosen by the admin"}
        r = await holder.post(f"/console/invite/{token}", data=data)
        assert r.status_code == 400 and "another organization" in r.text and "yun_session" not in holder.cookies
        assert (await sign_in(holder, "quiet@example.com", "chosen by the admin")).status_code == 401
    listed = (await api.get(f"/admin/orgs/{org_a}/invitations")).json()["data"]
    assert listed[0]["state"] == "pending"  # refused as a whole: the link was not used up
    members_b = (await api.get(f"/admin/orgs/{org_b}/members")).json()["data"]
    assert [(m["email"], m["role"]) for m in members_b] == [("quiet@example.com", "owner")]


async def test_the_people_page_is_for_owners_and_admins(api: Api) -> None:
    org, _ = await api.new_org()
    for role, allowed in (("owner", True), ("admin", True), ("member", False), ("billing-viewer", False)):
        email = await new_user(api, org, role)
        async with browser(api) as b:
            assert (await sign_in(b, email)).status_code == 303
            r = await b.get("/console/people")
            assert r.status_code == (200 if allowed else 403), role
            assert ("<h1>People</h1>" in r.text) is allowed and r.headers["content-type"].startswith("text/html")
            assert ('href="/console/people"' in (await b.get("/console")).text) is allowed, role
            # Only an owner is offered the owner role (the API refuses it to an admin anyway).
            assert ("<option>owner</option>" in r.text) is (role == "owner"), role


async def test_one_address_is_limited_and_cannot_lock_an_account_alone(api: Api) -> None:
    org, _ = await api.new_org()
    email = await new_user(api, org)
    limit = api.services.settings.console.max_failed_logins_per_ip
    async with browser(api, ip="203.0.113.7") as guesser:
        for _ in range(limit):
            assert (await sign_in(guesser, email, "a wrong guess")).status_code == 401
        r = await sign_in(guesser, email)  # even the right password, from this address, for a while
        assert r.status_code == 429 and r.headers["content-type"].startswith("text/html")
        assert int(r.headers["retry-after"]) > 0 and "Too many failed sign-ins" in r.text
        assert "yun_session" not in guesser.cookies
        r = await guesser.post("/console/sign-in/key", data={"api_key": api.admin_key})
        assert r.status_code == 429
        # Nor can the address guess through an invitation link of someone who has a password.
        other_org, _ = await api.new_org()
        r = await api.http.post(f"/admin/orgs/{other_org}/invitations", json={"email": email}, headers=api.auth())
        token = r.json()["path"].rsplit("/", 1)[1]
        r = await guesser.post(f"/console/invite/{token}", data={"password": PASSWORD})
        assert r.status_code == 429 and "Too many failed sign-ins" in r.text and "retry-after" in r.headers
    # Those guesses did not lock the account: its person signs in from their own address.
    async with browser(api, ip="198.51.100.20") as person:
        assert (await sign_in(person, email)).status_code == 303


def test_the_throttle_forgets_failures_after_its_window() -> None:
    now = [1000.0]
    throttle = SignInThrottle(3, 60, clock=lambda: now[0])
    assert throttle.failed("1.2.3.4", "user-a") is True  # counts toward user-a's lockout
    assert throttle.failed("1.2.3.4", "user-a") is False  # the same address again: not twice
    assert throttle.failed("1.2.3.4", "user-b") is True
    assert throttle.retry_after("1.2.3.4") == 60 and throttle.retry_after("5.6.7.8") == 0
    now[0] += 30
    assert throttle.retry_after("1.2.3.4") == 30
    now[0] += 30
    assert throttle.retry_after("1.2.3.4") == 0
    assert throttle.failed("1.2.3.4", "user-a") is True  # a new window counts it again


async def test_signing_out_with_a_bad_csrf_token_is_a_page(api: Api) -> None:
    org, _ = await api.new_org()
    email = await new_user(api, org)
    async with browser(api) as b:
        assert (await sign_in(b, email)).status_code == 303
        for data in ({}, {"csrf_token": "forged"}):
            r = await b.post("/console/sign-out", data=data)
            assert r.status_code == 403 and r.headers["content-type"].startswith("text/html"), data
            assert "CSRF token" in r.text and "<h1>Not allowed</h1>" in r.text
        assert (await b.get("/console/api/me")).status_code == 200  # still signed in
        r = await b.post("/console/sign-out", data={"csrf_token": await csrf_of(b)})
        assert r.status_code == 303 and (await b.get("/console/api/me")).status_code == 401
