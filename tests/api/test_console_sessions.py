"""Console sign-in and sessions on the HTTP API (issue 14), on SQLite and PostgreSQL, no browser.

Each "browser" is an httpx client of its own (its own cookie jar) on the real app. A session must act as
its person with their role in their organization (or as the admin key it was opened with) on Yun's own
API, must carry its CSRF token on every state change, and must end on sign-out; passwords and session
tokens are never stored, nor logged, in the clear.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
import time_machine

from tests.api.conftest import Api

PASSWORD = "correct horse battery staple"
CSRF_RE = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
PAGES = ("/console", "/console/usage", "/console/keys", "/console/account")


@asynccontextmanager
async def browser(api: Api, base_url: str = "http://yun", ip: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    """A browser of its own (cookie jar) at client address `ip`."""
    transport = httpx.ASGITransport(app=api.app, client=(ip, 50000))
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client


async def new_user(api: Api, org_id: str, role: str = "member", password: str = PASSWORD) -> str:
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    r = await api.http.post(
        "/admin/users", json={"email": email, "org": org_id, "role": role, "password": password}, headers=api.auth()
    )
    assert r.status_code == 201, r.text
    return email


async def sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/console/sign-in", data={"email": email, "password": password})


async def csrf_of(client: httpx.AsyncClient) -> str:
    r = await client.get("/console")
    assert r.status_code == 200, r.text
    found = CSRF_RE.search(r.text)
    assert found is not None
    return found.group(1)


async def test_nothing_of_the_console_works_without_a_session(api: Api) -> None:
    async with browser(api) as anon:
        for page in PAGES:
            r = await anon.get(page)
            assert r.status_code == 303 and r.headers["location"] == "/console/sign-in", page
        assert (await anon.get("/console/sign-in")).status_code == 200
        assert (await anon.get("/console/api/me")).status_code == 401
        r = await anon.post("/console/api/password", json={"current_password": "x", "new_password": "y" * 8})
        assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
        # A forged or stale cookie opens nothing either, pages or API.
        anon.cookies.set("yun_session", "not-a-session")
        assert (await anon.get("/console")).status_code == 303
        assert (await anon.get("/console/api/me")).status_code == 401
        r = await anon.get("/v1/organization/balance")
        assert r.status_code == 401 and "session" in r.json()["error"]["message"]
    # The session-only calls act on a signed-in person: an API key does not open them.
    assert (await api.get("/console/api/me")).status_code == 401


async def test_a_member_session_sees_its_own_org_only_and_no_admin(api: Api) -> None:
    org_a, _ = await api.new_org()
    org_b, _ = await api.new_org()
    await api.spend(org_a)
    await api.spend(org_b)
    email = await new_user(api, org_a, "member")
    async with browser(api) as b:
        r = await sign_in(b, email)
        assert r.status_code == 303 and r.headers["location"] == "/console"
        me = (await b.get("/console/api/me")).json()
        assert me == {
            "email": email,
            "org_id": org_a,
            "role": "member",
            "is_platform_admin": False,
            "signed_in_with": "password",
        }
        r = await b.get("/v1/organization/usage")
        assert r.status_code == 200 and r.json()["org_id"] == org_a and org_b not in r.text
        assert (await b.get("/v1/organization/balance")).json()["org_id"] == org_a
        # A member's role holds with a cookie as with a key: no key management, no operator API.
        assert (await b.get("/v1/organization/keys")).status_code == 403
        for path in ("/admin/orgs", f"/admin/orgs/{org_b}", f"/admin/orgs/{org_b}/keys", "/admin/users"):
            assert (await b.get(path)).status_code == 403, path
        csrf = await csrf_of(b)
        r = await b.post("/admin/orgs", json={"name": "sneaky"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 403
        # Every page renders for the member, each under a heading that names it.
        for page, heading in zip(PAGES, ("Overview", "Usage", "Keys", "Account"), strict=True):
            r = await b.get(page)
            assert r.status_code == 200 and f"<h1>{heading}</h1>" in r.text, page
            assert r.headers["cache-control"] == "no-store"


async def test_state_changes_with_a_cookie_need_the_csrf_token(api: Api) -> None:
    org, owner_key = await api.new_org()
    email = await new_user(api, org, "owner")
    async with browser(api) as b:
        await sign_in(b, email)
        csrf = await csrf_of(b)
        for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
            r = await b.post("/v1/organization/keys", json={"name": "k"}, headers=headers)
            assert r.status_code == 403 and "CSRF" in r.json()["error"]["message"], headers
        r = await b.post("/v1/organization/keys", json={"name": "from-the-console"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["org_id"] == org and made["secret"].startswith("yun-")
        r = await b.delete(f"/v1/organization/keys/{made['id']}")
        assert r.status_code == 403
        r = await b.delete(f"/v1/organization/keys/{made['id']}", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json()["revoked_at"] is not None
        # A key on the same request wins over the cookie and needs no CSRF token (nor gets the cookie's rights).
        r = await b.post("/v1/organization/keys", json={"name": "by-key"}, headers=api.auth(owner_key))
        assert r.status_code == 201
        r = await b.post("/admin/orgs", json={"name": "x"}, headers=api.auth(owner_key))
        assert r.status_code == 403 and "CSRF" not in r.json()["error"]["message"]
    # Without any cookie, keys work as they always did.
    assert (
        await api.http.post("/v1/organization/keys", json={"name": "k2"}, headers=api.auth(owner_key))
    ).status_code == 201


async def test_cookie_flags(api: Api) -> None:
    org, _ = await api.new_org()
    email = await new_user(api, org)
    async with browser(api) as b:
        cookie = (await sign_in(b, email)).headers["set-cookie"]
    parts = [p.strip().lower() for p in cookie.split(";")]
    assert parts[0].startswith("yun_session=")
    assert {"httponly", "samesite=strict", "path=/"} <= set(parts)
    assert "secure" not in parts  # plain http: a Secure cookie would never come back
    assert any(p.startswith("max-age=") for p in parts)
    async with browser(api, "https://yun") as b:
        cookie = (await sign_in(b, email)).headers["set-cookie"].lower()
    assert "secure" in [p.strip() for p in cookie.split(";")]
    # Behind a TLS-terminating proxy Yun sees plain http: the setting makes the cookie Secure anyway.
    api.services.settings.console.secure_cookie = True
    async with browser(api) as b:
        cookie = (await sign_in(b, email)).headers["set-cookie"].lower()
    assert "secure" in [p.strip() for p in cookie.split(";")]


async def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(api: Api) -> None:
    org, _ = await api.new_org()
    email = await new_user(api, org)
    async with browser(api) as b:
        await sign_in(b, email)
        token = b.cookies["yun_session"]
        csrf = await csrf_of(b)
        assert (await b.post("/console/sign-out", data={"csrf_token": "wrong"})).status_code == 403
        assert (await b.get("/console/api/me")).status_code == 200
        # Another site's page cannot post the sign-out (nor sign-in) form.
        r = await b.post("/console/sign-out", data={"csrf_token": csrf}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        r = await b.post("/console/sign-out", data={"csrf_token": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/console/sign-in"
        assert "yun_session" not in b.cookies
    async with browser(api) as replay:
        replay.cookies.set("yun_session", token)
        assert (await replay.get("/console/api/me")).status_code == 401
        assert (await replay.get("/console")).status_code == 303


async def test_an_admin_key_opens_the_console_as_that_key(api: Api) -> None:
    async with browser(api) as b:
        r = await b.post("/console/sign-in/key", data={"api_key": api.admin_key})
        assert r.status_code == 303
        me = (await b.get("/console/api/me")).json()
        assert me["is_platform_admin"] and me["signed_in_with"] == "api_key" and me["email"] is None
        assert (await b.get("/admin/orgs")).status_code == 200
        assert (await b.post("/admin/orgs", json={"name": f"o-{uuid.uuid4().hex[:6]}"})).status_code == 403
        csrf = await csrf_of(b)
        r = await b.post("/admin/orgs", json={"name": f"o-{uuid.uuid4().hex[:6]}"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201
        # The key is the session's authority: revoking it ends the session.
        second = api.services.keys.issue("org-default", "second admin", platform_admin=True)
    async with browser(api) as b:
        assert (await b.post("/console/sign-in/key", data={"api_key": second.secret})).status_code == 303
        assert (await b.get("/admin/orgs")).status_code == 200
        r = await api.http.delete(f"/admin/keys/{second.record.id}", headers=api.auth())
        assert r.status_code == 200
        assert (await b.get("/admin/orgs")).status_code == 401
    # A tenant's key does not open the console (its people sign in with their email).
    _, tenant_key = await api.new_org()
    async with browser(api) as b:
        for secret in (tenant_key, "yun-" + "x" * 43, ""):
            r = await b.post("/console/sign-in/key", data={"api_key": secret})
            assert r.status_code == 401 and "yun_session" not in b.cookies and "<h1>Sign in</h1>" in r.text


async def test_repeated_failures_lock_the_account_without_telling_who_exists(api: Api) -> None:
    org, _ = await api.new_org()
    email = await new_user(api, org)
    refusal = api.services.accounts.refusal
    assert "5 failed attempts" in refusal and "15 minutes" in refusal
    # Failures from five addresses lock the account (one address alone cannot: test_sign_in_limits.py).
    for i in range(5):
        async with browser(api, ip=f"10.0.0.{i + 1}") as b:
            r = await sign_in(b, email, "wrong password")
            assert r.status_code == 401 and r.text.count(refusal) == 1
    async with browser(api) as b:
        answers = []
        answers.append(await sign_in(b, email))  # locked: even the right password is refused
        answers.append(await sign_in(b, "nobody-here@example.com"))
        answers.append(await sign_in(b, "nobody-here@example.com", "wrong password"))
        for r in answers:
            assert r.status_code == 401 and "yun_session" not in b.cookies
            assert r.text.count(refusal) == 1
        # The lockout lasts its minutes, then the right password works again (and only it).
        with time_machine.travel(datetime.now(UTC) + timedelta(minutes=16)):
            assert (await sign_in(b, email, "wrong again")).status_code == 401
            assert (await sign_in(b, email)).status_code == 303
    # A success clears the count: four more failures do not lock it.
    for i in range(4):
        async with browser(api, ip=f"10.0.1.{i + 1}") as b:
            assert (await sign_in(b, email, "wrong")).status_code == 401
    async with browser(api) as b:
        assert (await sign_in(b, email)).status_code == 303


async def test_an_admin_reset_unlocks_and_signs_out_and_a_user_changes_their_own(api: Api) -> None:
    org, _ = await api.new_org()
    email = await new_user(api, org, "admin")
    async with browser(api) as first, browser(api) as second:
        assert (await sign_in(first, email)).status_code == 303
        assert (await sign_in(second, email)).status_code == 303
        csrf = await csrf_of(first)
        body = {"current_password": "not it", "new_password": "a new password"}
        r = await first.post("/console/api/password", json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 400 and r.json()["error"]["param"] == "current_password"
        body = {"current_password": PASSWORD, "new_password": "a new password"}
        assert (await first.post("/console/api/password", json=body)).status_code == 403
        r = await first.post("/console/api/password", json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        assert (await first.get("/console/api/me")).status_code == 200  # this session stays
        assert (await second.get("/console/api/me")).status_code == 401  # the other one ends
        assert (await sign_in(second, email)).status_code == 401
        assert (await sign_in(second, email, "a new password")).status_code == 303
        # The admin sets a password: the person's sessions end, a lockout is lifted.
        for i in range(5):
            async with browser(api, ip=f"10.0.2.{i + 1}") as guesser:
                await sign_in(guesser, email, "wrong")
        assert (await sign_in(first, email, "a new password")).status_code == 401  # locked
        r = await api.http.put(
            f"/admin/users/{email}/password", json={"password": "reset by admin"}, headers=api.auth()
        )
        assert r.status_code == 200, r.text
        assert (await second.get("/console/api/me")).status_code == 401
        assert (await sign_in(first, email, "reset by admin")).status_code == 303


async def test_bad_input_is_a_400_that_never_echoes_the_password(api: Api) -> None:
    org, owner_key = await api.new_org()
    email = await new_user(api, org)
    cases = [
        ({"email": "x@example.com", "org": org, "password": "short"}, 400, "password"),
        ({"email": "not-an-email", "org": org, "password": PASSWORD}, 400, "email"),
        ({"email": "x@example.com", "org": org, "role": "god", "password": PASSWORD}, 400, "role"),
        ({"email": "x@example.com", "org": "no-such-org", "password": PASSWORD}, 404, "org"),
        ({"email": email, "org": org, "password": PASSWORD}, 400, "email"),  # already has a password
        ({"email": "x@example.com", "org": org, "password": PASSWORD, "extra": 1}, 400, "extra"),
    ]
    for body, status, param in cases:
        r = await api.http.post("/admin/users", json=body, headers=api.auth())
        assert r.status_code == status and r.json()["error"]["param"] == param, (body, r.text)
        assert "short" not in r.json()["error"]["message"] and PASSWORD not in r.text
    r = await api.http.post(
        "/admin/users", json={"email": "y@example.com", "org": org, "password": PASSWORD}, headers=api.auth(owner_key)
    )
    assert r.status_code == 403  # a tenant's owner is not a platform admin
    r = await api.http.put("/admin/users/nobody@example.com/password", json={"password": PASSWORD}, headers=api.auth())
    assert r.status_code == 404
    async with browser(api) as b:
        r = await b.post(
            "/console/sign-in", content=b"x" * 20000, headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code == 400
        r = await b.post("/console/sign-in", data={})
        assert r.status_code == 401


async def test_passwords_and_tokens_are_never_stored_nor_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    org, _ = await api.new_org()
    secret_password = f"pw-{uuid.uuid4().hex}"
    email = await new_user(api, org, "owner", secret_password)
    async with browser(api) as b:
        await sign_in(b, email, secret_password + "-wrong")
        assert (await sign_in(b, email, secret_password)).status_code == 303
        token = b.cookies["yun_session"]
        csrf = await csrf_of(b)
        changed = f"pw2-{uuid.uuid4().hex}"
        body = {"current_password": secret_password, "new_password": changed}
        assert (await b.post("/console/api/password", json=body, headers={"X-CSRF-Token": csrf})).status_code == 200
    with api.services.db.engine.connect() as c:
        rows = [
            *c.execute(sa.text("SELECT * FROM users")).all(),
            *c.execute(sa.text("SELECT * FROM console_sessions")).all(),
        ]
        stored_hash = c.execute(sa.text("SELECT password_hash FROM users WHERE email = :e"), {"e": email}).scalar_one()
        token_hashes = c.execute(sa.text("SELECT token_hash FROM console_sessions")).scalars().all()
    dump = repr(rows)
    for clear in (secret_password, changed, token):
        assert clear not in dump
        assert clear not in caplog.text
    assert stored_hash.startswith("$argon2id$")
    assert hashlib.sha256(token.encode()).hexdigest() in token_hashes


async def test_a_person_in_two_orgs_names_one_and_a_removed_membership_ends_the_session(api: Api) -> None:
    org_a, _ = await api.new_org()
    org_b, _ = await api.new_org()
    email = await new_user(api, org_a, "owner")
    r = await api.http.post(
        f"/admin/orgs/{org_b}/members", json={"email": email, "role": "billing-viewer"}, headers=api.auth()
    )
    assert r.status_code == 201, r.text
    member_b = r.json()["id"]
    org_b_name = (await api.get(f"/admin/orgs/{org_b}")).json()["name"]
    async with browser(api) as b:
        r = await b.post("/console/sign-in", data={"email": email, "password": PASSWORD, "org": org_b_name})
        assert r.status_code == 303
        me = (await b.get("/console/api/me")).json()
        assert (me["org_id"], me["role"]) == (org_b, "billing-viewer")
        assert (await b.get("/v1/organization/usage")).json()["org_id"] == org_b
        assert (await b.get("/v1/organization/keys")).status_code == 403  # a billing viewer manages no keys
        # The membership is read on every request: removing it ends the session at once.
        r = await api.http.delete(f"/admin/orgs/{org_b}/members/{member_b}", headers=api.auth())
        assert r.status_code == 200
        assert (await b.get("/console/api/me")).status_code == 401
        assert (await b.get("/v1/organization/usage")).status_code == 401
    async with browser(api) as b:
        r = await b.post("/console/sign-in", data={"email": email, "password": PASSWORD, "org": org_b})
        assert r.status_code == 401 and "yun_session" not in b.cookies
        r = await b.post("/console/sign-in", data={"email": email, "password": PASSWORD, "org": org_a})
        assert r.status_code == 303
        assert (await b.get("/console/api/me")).json()["org_id"] == org_a
