"""The control plane with real processes (issue 11): one controller and a standby, two gateways, one
PostgreSQL database and Redis, the official `openai` client.

- Both gateways serve the replica the controller placed; neither starts an engine.
- The active controller is killed with SIGKILL (its replica dies with it: a local replica is its child):
  the standby takes over, places the model again, and the gateways route to the new replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from cryptography.fernet import Fernet

from tests.reliability.conftest import MODEL, role_server
from tests.reliability.test_second_serve import _children
from tests.support.server import KEY_RE, Health, YunServer, answers
from tests.support.tiny_model import tiny_model_path

pytestmark = pytest.mark.reliability

WAIT_S = 120.0  # bound on every wait below; never a measured time


def _serving_model(health: Health) -> bool:
    return bool(health.get("models", {}).get(MODEL, {}).get("healthy_replicas") == 1)


def _deployed(health: Health) -> bool:
    d = health.get("deployments", {}).get(MODEL, {})
    return bool(d.get("ready") == d.get("desired") == 1)


def _engines(server: YunServer) -> list[int]:
    assert server.proc is not None
    return [p for p in _children(server.proc.pid) if b"xllamacpp_worker" in Path(f"/proc/{p}/cmdline").read_bytes()]


def test_gateways_serve_the_controllers_replicas_and_a_standby_takes_over(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    env = {
        "YUN_SECRETS__KEY": Fernet.generate_key().decode(),  # every process sharing the database has it
        "YUN_ENGINE__PARALLEL": "2",
        "YUN_ENGINE__CONTEXT_PER_SLOT": "512",
        "YUN_ENGINE__HEALTH_INTERVAL_S": "0.5",
    }

    def server(name: str, role: str, ready: Callable[[Health], bool], admin_key: str | None = None) -> YunServer:
        return role_server(tmp_path, name, role, pg_url, ["--redis", redis_url], env, ready, admin_key)

    active = server("controller-a", "controller", answers)
    servers = [active]
    try:
        active.start()
        admin = active.admin_key
        assert admin is not None
        active.yun("models", "add", MODEL, "--file", str(tiny_model_path()))
        active.wait_until(_deployed)
        standby = server("controller-b", "controller", answers, admin)
        gateways = [server(f"gateway-{i}", "gateway", _serving_model, admin) for i in (1, 2)]
        servers += [standby, *gateways]
        for s in (standby, *gateways):
            s.start()
        key = KEY_RE.findall(active.yun("keys", "create", "e2e"))[0]

        def chat(gateway: YunServer) -> openai.types.chat.ChatCompletion:
            client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
            return client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )

        for gateway in gateways:
            answer = chat(gateway)
            assert answer.usage is not None and answer.usage.completion_tokens == 2
            assert _engines(gateway) == []  # a gateway never starts an engine
        assert len(_engines(active)) == 1 and _engines(standby) == []

        active.kill9()  # the controller and, by PDEATHSIG, its replica
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                answer = chat(gateways[0])
                break
            except (openai.APIStatusError, openai.APIConnectionError):
                assert time.monotonic() < deadline, "the standby never took over"
                time.sleep(0.5)
        assert answer.usage is not None and answer.usage.completion_tokens == 2
        assert len(_engines(standby)) == 1  # it placed the model again: one replica, no duplicate
        assert chat(gateways[1]).choices
    finally:
        for s in servers:
            s.kill9()
