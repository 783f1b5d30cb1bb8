"""Scale to zero and cold start across processes (issue 11): a controller and a gateway on one PostgreSQL
database, the gateway's load published through Redis or, without Redis, through the database.

- A deployment with min 0 and an idle timeout scales to zero; a request through the gateway waits, its
  queued count (published by the gateway, read by the controller in another process) wakes the
  deployment, and the replica that cold starts answers it.
- A cold start that cannot finish within `YUN_ENGINE__COLD_START_TIMEOUT_S` (an engine that never
  listens) ends in a 503 `engine_unavailable` that says the model is starting; meanwhile the controller's
  /health and /metrics show the request queued.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from cryptography.fernet import Fernet

from tests.reliability.conftest import MODEL, role_server
from tests.reliability.test_control_plane import _deployed, _serving_model
from tests.support.server import Health, YunServer, answers, at_zero
from tests.support.tiny_model import tiny_model_path

pytestmark = pytest.mark.reliability

WAIT_S = 120.0  # bound on every wait below; never a measured time
COLD_START_TIMEOUT_S = 8
NEVER_LISTENS = [sys.executable, "-c", "import time; time.sleep(3600)"]
"""An engine command that starts and never answers: a cold start that cannot finish in time."""


@pytest.fixture(params=["redis", "database"])
def load_args(request: pytest.FixtureRequest) -> list[str]:
    """Where the gateway publishes its load: Redis (`--redis`), or the database."""
    if request.param == "database":
        return []
    return ["--redis", request.getfixturevalue("redis_url")]


def _deployment(server: YunServer, name: str) -> dict[str, Any]:
    with httpx.Client(trust_env=False, timeout=10) as client:
        found: dict[str, Any] = client.get(server.url + "/health").json()["deployments"][name]
    return found


def _wait(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.2)


def _dedicated(server: YunServer, org: str, body: dict[str, Any]) -> str:
    """An organization of its own with a key, and a deployment of the tiny model dedicated to it (so that
    its requests go there, not to the shared one): the key's secret."""
    with server.admin() as c:
        org_id = c.post("/admin/orgs", json={"name": org}).json()["id"]
        key: str = c.post(f"/admin/orgs/{org_id}/keys", json={"name": "k", "role": "member"}).json()["secret"]
        r = c.post("/admin/deployments", json={"model": MODEL, "owner": org_id, **body})
    assert r.status_code == 201, r.text
    return key


def _chat(gateway: YunServer, key: str) -> openai.types.chat.ChatCompletion:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=WAIT_S) as client:
        return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)


def test_scale_to_zero_and_cold_start_through_a_gateway(tmp_path: Path, pg_url: str, load_args: list[str]) -> None:
    env = {
        "YUN_SECRETS__KEY": Fernet.generate_key().decode(),
        "YUN_ENGINE__PARALLEL": "2",
        "YUN_ENGINE__CONTEXT_PER_SLOT": "512",
        "YUN_ENGINE__HEALTH_INTERVAL_S": "0.5",
        "YUN_ENGINE__DRAIN_S": "1",
        "YUN_ENGINE__COLD_START_TIMEOUT_S": str(COLD_START_TIMEOUT_S),
    }
    controller = role_server(tmp_path, "controller", "controller", pg_url, load_args, env, answers)
    servers = [controller]
    try:
        controller.start()
        controller.yun("models", "add", MODEL, "--file", str(tiny_model_path()))
        controller.wait_until(_deployed)
        gateway = role_server(
            tmp_path, "gateway", "gateway", pg_url, load_args, env, _serving_model, controller.admin_key
        )
        servers.append(gateway)
        gateway.start()

        # min 0 with an idle timeout: it goes to zero once nothing has been asked of it for that long.
        key = _dedicated(controller, "cold-org", {"id": "cold", "min": 0, "replicas": 1, "idle_timeout_s": 2})
        _wait(
            lambda: _deployment(controller, "cold") | {"message": ""} == at_zero(MODEL, dedicated=True),
            "scaled to zero",
        )
        # ... and the gateway has nothing left to route to (its replica drained away).
        _wait(lambda: _gateway_routes(gateway)["cold"]["replicas"] == [], "the gateway sees no replica")
        answer = _chat(gateway, key)  # waits for the cold start its queued count asked for
        assert answer.usage is not None and answer.usage.completion_tokens == 2
        assert _deployment(controller, "cold")["desired"] == 1

        # A cold start that cannot finish in time: the client is told the model is starting.
        key = _dedicated(
            controller,
            "slow-org",
            {"id": "slow", "min": 0, "replicas": 0, "idle_timeout_s": 600, "command": NEVER_LISTENS},
        )
        _wait(lambda: "slow" in _gateway_routes(gateway), "the gateway routes to the new deployment")
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(_chat, gateway, key)
            # While it waits, the controller (another process) sees it queued, from the published load.
            _wait(lambda: _queued_seen(controller, "slow") or waiting.done(), "the queued request is published")
            assert not waiting.done(), "the request ended before it was seen queued"
            with pytest.raises(openai.APIStatusError) as refused:
                waiting.result(WAIT_S)
        assert refused.value.status_code == 503 and refused.value.code == "engine_unavailable"
        assert "is starting" in refused.value.message and "retry" in refused.value.message
        assert refused.value.response.headers.get("retry-after") == "1"
        assert _deployment(controller, "slow")["desired"] == 1  # its queued count woke it
    finally:
        for s in servers:
            s.kill9()


def _gateway_routes(gateway: YunServer) -> Health:
    """The deployments the gateway has a pool for (its /health `models`)."""
    with httpx.Client(trust_env=False, timeout=10) as client:
        models: Health = client.get(gateway.url + "/health").json()["models"]
    return models


def _queued_seen(controller: YunServer, name: str) -> bool:
    """The controller's /health and /metrics both show one request queued for `name`."""
    with httpx.Client(trust_env=False, timeout=10) as client:
        health = client.get(controller.url + "/health").json()["deployments"][name]
        metrics = client.get(controller.url + "/metrics").text
    return health["queued"] == 1 and f'yun_deployment_queued{{deployment="{name}",model="{MODEL}"}} 1.0' in metrics
