"""`yun users create|passwd`: people who sign in to the console, set up from the CLI over the admin API."""

from __future__ import annotations

import httpx

from tests.cli.conftest import Cli, LiveServer


def _sign_in(server: LiveServer, email: str, password: str) -> int:
    r = httpx.post(f"{server.url}/console/sign-in", data={"email": email, "password": password})
    return r.status_code


def test_create_a_user_then_set_their_password(cli: Cli, live_server: LiveServer) -> None:
    cli.run("orgs", "create", "acme-console")
    out = cli.run(
        "users",
        "create",
        "Carol@Acme.example",
        "--org",
        "acme-console",
        "--role",
        "owner",
        "--password-stdin",
        input="first password\n",
    )
    assert "carol@acme.example" in out and "owner" in out and "first password" not in out
    assert _sign_in(live_server, "carol@acme.example", "first password") == 303
    assert "carol@acme.example" in cli.run("users", "list")

    out = cli.run("users", "passwd", "carol@acme.example", "--password-stdin", input="second password\n")
    assert "second password" not in out
    assert _sign_in(live_server, "carol@acme.example", "first password") == 401
    assert _sign_in(live_server, "carol@acme.example", "second password") == 303

    # Refused with one line each: a short password, no password, an unknown person, a second create.
    assert "password" in cli.fail("users", "create", "d@acme.example", "--org", "acme-console", input="short\n")
    assert "no password" in cli.fail("users", "create", "d@acme.example", "--org", "acme-console", input="\n")
    assert "nobody@acme.example" in cli.fail("users", "passwd", "nobody@acme.example", input="long enough pw\n")
    assert "already has a password" in cli.fail(
        "users", "create", "carol@acme.example", "--org", "acme-console", input="long enough pw\n"
    )


def test_invite_prints_a_link_that_works_once(cli: Cli, live_server: LiveServer) -> None:
    cli.run("orgs", "create", "acme-invites")
    out = cli.run("users", "invite", "Dana@Acme.example", "--org", "acme-invites", "--role", "admin")
    link = out.strip().splitlines()[-1]
    assert "dana@acme.example" in out and "admin" in out
    assert link.startswith(f"{live_server.url}/console/invite/"), out
    with httpx.Client() as browser:
        assert browser.get(link).status_code == 200
        r = browser.post(link, data={"password": "dana's password", "password_again": "dana's password"})
        assert r.status_code == 303 and "yun_session" in browser.cookies
    assert httpx.get(link).status_code == 410  # used
    assert _sign_in(live_server, "dana@acme.example", "dana's password") == 303
    assert "role" in cli.fail("users", "invite", "e@acme.example", "--org", "acme-invites", "--role", "root")
    assert "nope" in cli.fail("users", "invite", "e@acme.example", "--org", "nope")
