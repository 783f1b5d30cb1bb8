"""Gateways behind a load balancer (issue 11: "any number, stateless, behind any HTTP load balancer"): the
console's per-address sign-in limit counts the client that the balancer names in X-Forwarded-For when,
and only when, the balancer is listed in `server.trusted_proxies`; its X-Forwarded-Proto then decides the
session cookie's Secure flag. Real `python -m yun serve` processes on 127.0.0.1 (the "balancer" is this
test, connecting from 127.0.0.1), no model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import YunServer

LIMIT = 3
Serve = Callable[[list[str]], YunServer]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    servers: list[YunServer] = []

    def start(trusted: list[str]) -> YunServer:
        env = {"YUN_CONSOLE__MAX_FAILED_LOGINS_PER_IP": str(LIMIT)}
        if trusted:
            env["YUN_SERVER__TRUSTED_PROXIES"] = json.dumps(trusted)
        server = YunServer(tmp_path / f"s{len(servers)}", args=["--no-default-models"], env=env)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


def _bad_sign_in(url: str, client: str) -> int:
    r = httpx.post(f"{url}/console/sign-in/key", data={"api_key": "yun-not-a-key"}, headers={"X-Forwarded-For": client})
    return r.status_code


def test_behind_a_trusted_balancer_each_client_has_its_own_sign_in_limit(serve: Serve) -> None:
    server = serve(["127.0.0.1"])
    for _ in range(LIMIT):
        assert _bad_sign_in(server.url, "203.0.113.7") == 401
    assert _bad_sign_in(server.url, "203.0.113.7") == 429  # that client is refused ...
    assert _bad_sign_in(server.url, "203.0.113.8") == 401  # ... and the balancer's other clients are not
    # The admin signs in through the balancer from yet another address, over https at the balancer.
    r = httpx.post(
        f"{server.url}/console/sign-in/key",
        data={"api_key": server.admin_key},
        headers={"X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https"},
    )
    assert r.status_code == 303
    assert "secure" in r.headers["set-cookie"].lower()


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(serve: Serve) -> None:
    # Without trusted_proxies (the default), a client cannot escape its limit by writing X-Forwarded-For,
    # nor get a Secure cookie on plain http.
    server = serve([])
    for i in range(LIMIT):
        assert _bad_sign_in(server.url, f"203.0.113.{i}") == 401
    assert _bad_sign_in(server.url, "203.0.113.99") == 429
    # Only listed balancers count: this one is not 127.0.0.1.
    other = serve(["10.9.8.7"])
    for i in range(LIMIT):
        assert _bad_sign_in(other.url, f"203.0.113.{i}") == 401
    assert _bad_sign_in(other.url, "203.0.113.99") == 429
    r = httpx.post(
        f"{other.url}/console/sign-in/key",
        data={"api_key": other.admin_key},
        headers={"X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https"},
    )
    assert r.status_code == 429  # 127.0.0.1 (this test) is still limited: its forwarded address was not believed


def test_a_bad_trusted_proxy_is_a_clear_error_at_start(tmp_path: Path) -> None:
    env = {
        "YUN_SERVER__TRUSTED_PROXIES": '["10.0.0.0/8", "lb.example"]',
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "yun", "serve", "--data-dir", str(tmp_path / "data"), "--no-default-models"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in said, said
    assert "trusted_proxies" in said and "'lb.example' is not an IP address or network" in said, said
    assert not (tmp_path / "data").exists()  # refused before anything was created
