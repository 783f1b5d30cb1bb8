"""/admin/deployments on the live server of this package, whose controller acts on them: create, list, get
(with the replicas of the registry: real ones, placed by the controller), scale, update (a new generation
only when replicas must restart), delete (the controller stops the replicas, then removes the record);
OpenAI-shaped 400/404 for wrong input; platform-admin keys only; no engine secret in any answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.conftest import NO_ENGINE, SYNC_INTERVAL_S, Deployable, LiveServer, until
from tests.support.registry import engine_access


@pytest.fixture
def admin(live_server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {live_server.admin_key}"}
    with httpx.Client(base_url=live_server.url, headers=headers, trust_env=False, timeout=30) as c:
        yield c


def _gone(admin: httpx.Client, deployment_id: str) -> bool:
    return admin.get(f"/admin/deployments/{deployment_id}").status_code == 404


def _created(admin: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = admin.post("/admin/deployments", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _refused(r: httpx.Response, status: int, param: str | None) -> str:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error", error
    assert error["param"] == param, error
    return str(error["message"])


def test_create_get_list(admin: httpx.Client, deployable: Deployable) -> None:
    d = _created(admin, {"model": deployable.model, "min": 0, "replicas": 0, "max": 2})
    assert d["id"].startswith("dep-") and d["object"] == "deployment" and d["model"] == deployable.model
    assert (d["engine"], d["owner"], d["min"], d["desired"], d["max"], d["ready"]) == ("llamacpp", None, 0, 0, 2, 0)
    assert (d["cpus"], d["gpus"], d["memory_mb"], d["shape"], d["generation"], d["state"]) == (
        1.0,
        0.0,
        0,
        "cpu1",
        1,
        "active",
    )
    assert (d["threads"], d["parallel"], d["context"], d["command"], d["message"]) == (None, None, None, None, "")
    shown = admin.get(f"/admin/deployments/{d['id']}").json()
    assert shown == {**d, "replicas": []}
    assert d["id"] in [x["id"] for x in admin.get("/admin/deployments").json()["data"]]
    of_model = admin.get("/admin/deployments", params={"model": deployable.model}).json()["data"]
    assert d["id"] in [x["id"] for x in of_model] and {x["model"] for x in of_model} == {deployable.model}


def test_dedicated_deployments_by_owner_id_or_name(admin: httpx.Client, deployable: Deployable) -> None:
    org = admin.post("/admin/orgs", json={"name": "dep-owner"}).json()["id"]
    d = _created(
        admin,
        {
            "model": deployable.model,
            "id": "dep-owner-tiny",
            "owner": "dep-owner",
            "engine": "vllm",
            "min": 0,
            "replicas": 0,
            "cpus": 2.5,
            "gpus": 1,
            "memory_mb": 4096,
            "threads": 2,
            "parallel": 3,
            "context": 256,
            "command": ["fake-engine", "--port", "{port}"],
            "idle_timeout_s": 60,
        },
    )
    assert (d["id"], d["owner"], d["engine"], d["shape"]) == ("dep-owner-tiny", org, "vllm", "cpu2.5-gpu1-mem4096")
    assert (d["threads"], d["parallel"], d["context"], d["command"], d["idle_timeout_s"]) == (
        2,
        3,
        256,
        ["fake-engine", "--port", "{port}"],
        60.0,
    )
    for ref in (org, "dep-owner"):
        assert [x["id"] for x in admin.get("/admin/deployments", params={"owner": ref}).json()["data"]] == [d["id"]]
    _refused(admin.post("/admin/deployments", json={"model": deployable.model, "id": "dep-owner-tiny"}), 400, "id")


def test_scale_within_min_and_max(admin: httpx.Client, deployable: Deployable) -> None:
    d = _created(admin, {"model": deployable.model, "min": 0, "replicas": 0, "command": NO_ENGINE})
    scale = f"/admin/deployments/{d['id']}/scale"
    assert "between min (0) and max (1)" in _refused(admin.post(scale, json={"replicas": 3}), 400, "replicas")
    r = admin.post(scale, json={"replicas": 2, "max": 3})
    assert r.status_code == 200, r.text
    assert (r.json()["min"], r.json()["desired"], r.json()["max"], r.json()["generation"]) == (0, 2, 3, 1)
    clamped = admin.post(scale, json={"max": 1}).json()
    assert (clamped["desired"], clamped["max"]) == (1, 1)
    assert admin.post(scale, json={"replicas": 0}).json()["desired"] == 0
    _refused(admin.post(scale, json={}), 400, "replicas")
    _refused(admin.post(scale, json={"min": 2}), 400, "min")
    _refused(admin.post(scale, json={"replicas": -1}), 400, "replicas")
    _refused(admin.post(scale, json={"replicas": 10**6}), 400, "replicas")
    _refused(admin.post("/admin/deployments/dep-nope/scale", json={"replicas": 1}), 404, None)


def test_update_bumps_the_generation_only_when_replicas_must_restart(
    admin: httpx.Client, deployable: Deployable
) -> None:
    d = _created(admin, {"model": deployable.model, "min": 0, "replicas": 0, "cpus": 2})
    at = f"/admin/deployments/{d['id']}"
    assert admin.patch(at, json={"idle_timeout_s": 120}).json()["generation"] == 1
    scaled = admin.patch(at, json={"autoscale": {"target_in_flight": 2, "down_after_s": 30}}).json()
    assert (scaled["autoscale"], scaled["generation"]) == ({"target_in_flight": 2, "down_after_s": 30}, 1)
    assert admin.patch(at, json={"autoscale": None}).json()["autoscale"] == {}
    changed = admin.patch(at, json={"threads": 3, "context": 1024}).json()
    assert (changed["threads"], changed["context"], changed["generation"]) == (3, 1024, 2)
    assert admin.patch(at, json={"threads": 3}).json()["generation"] == 2, "the same value is no change"
    reset = admin.patch(at, json={"threads": None, "cpus": None}).json()
    assert (reset["threads"], reset["cpus"], reset["shape"], reset["generation"]) == (None, 1.0, "cpu1", 3)
    assert admin.get(at).json()["generation"] == 3
    assert "Extra inputs" in _refused(admin.patch(at, json={"replicas": 2}), 400, "replicas")
    _refused(admin.patch(at, json={"engine": "tgi"}), 400, "engine")
    _refused(admin.patch(at, json={"model": "other"}), 400, "model")
    _refused(admin.patch("/admin/deployments/dep-nope", json={"threads": 2}), 404, None)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "no-such-model"}, 404, "model"),
        ({"model": "{model}", "owner": "no-such-org"}, 404, "owner"),
        ({"model": "{model}", "engine": "tgi"}, 400, "engine"),
        ({"model": "{model}", "min": 3, "max": 2}, 400, "min"),
        ({"model": "{model}", "replicas": 3, "max": 2}, 400, "replicas"),
        ({"model": "{model}", "replicas": 1001}, 400, "replicas"),
        ({"model": "{model}", "cpus": 0}, 400, "cpus"),
        ({"model": "{model}", "cpus": 1e12}, 400, "cpus"),
        ({"model": "{model}", "gpus": -1}, 400, "gpus"),
        ({"model": "{model}", "memory_mb": 2**31}, 400, "memory_mb"),
        ({"model": "{model}", "threads": 0}, 400, "threads"),
        ({"model": "{model}", "parallel": 100_000}, 400, "parallel"),
        ({"model": "{model}", "context": 8}, 400, "context"),
        ({"model": "{model}", "idle_timeout_s": 0}, 400, "idle_timeout_s"),
        ({"model": "{model}", "autoscale": {"target_in_flight": 0}}, 400, "autoscale.target_in_flight"),
        ({"model": "{model}", "autoscale": {"up_after_s": -1}}, 400, "autoscale.up_after_s"),
        ({"model": "{model}", "autoscale": {"target_inflight": 2}}, 400, "autoscale.target_inflight"),
        ({"model": "{model}", "command": []}, 400, "command"),
        ({"model": "{model}", "command": ["a\x00b"]}, 400, "command.0"),
        ({"model": "{model}", "command": ["engine", "--api-key={secret}"]}, 400, "command"),
        ({"model": "{model}", "id": "bad id/x"}, 400, "id"),
        ({"model": "{model}", "gen": 3}, 400, "gen"),
        ({}, 400, "model"),
    ],
)
def test_wrong_input_is_an_openai_error_naming_the_field(
    admin: httpx.Client, deployable: Deployable, body: dict[str, Any], status: int, param: str
) -> None:
    before = [d["id"] for d in admin.get("/admin/deployments").json()["data"]]
    body = {k: deployable.model if v == "{model}" else v for k, v in body.items()}
    _refused(admin.post("/admin/deployments", json=body), status, param)
    assert [d["id"] for d in admin.get("/admin/deployments").json()["data"]] == before


def test_an_external_model_cannot_be_deployed(admin: httpx.Client) -> None:
    assert admin.post("/admin/models", json={"id": "dep-ext", "url": "http://127.0.0.1:9"}).status_code == 201
    try:
        message = _refused(admin.post("/admin/deployments", json={"model": "dep-ext"}), 400, "model")
        assert "external" in message
    finally:
        admin.delete("/admin/models/dep-ext")


@pytest.mark.parametrize(
    "path", ["/admin/deployments/dep-nope", "/admin/deployments?model=nope", "/admin/deployments?owner=nope"]
)
def test_unknown_names_are_404(admin: httpx.Client, path: str) -> None:
    r = admin.get(path)
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"], r.text
    assert admin.delete("/admin/deployments/dep-nope").status_code == 404


def test_show_has_the_replicas_of_the_registry_never_their_secret(
    admin: httpx.Client, deployable: Deployable, live_server: LiveServer
) -> None:
    """The shared deployment the controller made for the model: its one real replica, where it answers,
    and nowhere in any answer the secret its engine demands."""
    _, headers = engine_access(live_server.data_dir, deployable.default)
    secret = headers["Authorization"].removeprefix("Bearer ")
    at = f"/admin/deployments/{deployable.default}"
    answers = [admin.get(at), admin.get("/admin/deployments"), admin.post(f"{at}/scale", json={"replicas": 1})]
    answers += [admin.patch(at, json={}), admin.get("/openapi.json")]
    assert [r.status_code for r in answers] == [200] * len(answers)
    assert all(secret not in r.text for r in answers)
    shown = answers[0].json()
    assert (shown["model"], shown["owner"], shown["desired"], shown["ready"]) == (deployable.model, None, 1, 1)
    [replica] = shown["replicas"]
    assert set(replica) == {
        "id",
        "state",
        "generation",
        "node",
        "endpoint",
        "backend",
        "shape",
        "restarts",
        "error",
        "created_at",
        "ready_at",
    }
    assert (replica["state"], replica["generation"], replica["backend"], replica["shape"]) == (
        "ready",
        1,
        "local",
        "cpu1",
    )
    assert replica["endpoint"].startswith("http://127.0.0.1:") and replica["node"] and replica["ready_at"]
    # The engine answers that secret, and refuses a request without it.
    with httpx.Client(trust_env=False, timeout=30) as engine:
        assert engine.get(f"{replica['endpoint']}/v1/models").status_code == 401
        assert engine.get(f"{replica['endpoint']}/v1/models", headers=headers).status_code == 200


def test_a_replica_that_cannot_start_is_failed_with_its_error(admin: httpx.Client, deployable: Deployable) -> None:
    d = _created(admin, {"model": deployable.model, "command": NO_ENGINE})

    def failed() -> dict[str, Any] | None:
        shown = admin.get(f"/admin/deployments/{d['id']}").json()
        return shown if any(r["state"] == "failed" for r in shown["replicas"]) else None

    shown = until(failed, "a failed replica of a deployment whose engine exits at once")
    replica = next(r for r in shown["replicas"] if r["state"] == "failed")
    assert replica["error"] and replica["endpoint"] is None and shown["ready"] == 0
    assert "replica failed" in shown["message"], shown["message"]


def test_a_models_last_deployment_deleted_stays_deleted(admin: httpx.Client, tiny_model: Path) -> None:
    """The operator frees a model's compute by deleting its only deployment: the model stays in the
    catalog, undeployed, and the catalog sync does not deploy it again; a deployment created for it later
    serves it."""
    model = "dep-undeployed"
    r = admin.post("/admin/models", json={"id": model, "file": str(tiny_model)})
    assert r.status_code == 201, r.text
    try:
        [d] = until(lambda: admin.get("/admin/deployments", params={"model": model}).json()["data"] or None, model)
        assert admin.delete(f"/admin/deployments/{d['id']}").status_code == 202
        until(lambda: _gone(admin, d["id"]), f"{d['id']} removed by the controller")
        # The catalog sync runs every 2 health intervals (0.6 s here): give it several passes.
        time.sleep(SYNC_INTERVAL_S * 5)
        assert admin.get("/admin/deployments", params={"model": model}).json()["data"] == []
        shown = admin.get(f"/admin/models/{model}").json()
        assert shown["replicas"] == 0 and shown["status"] == "not deployed", shown
        again = _created(admin, {"model": model, "min": 0, "replicas": 0})
        time.sleep(SYNC_INTERVAL_S * 2)
        assert [x["id"] for x in admin.get("/admin/deployments", params={"model": model}).json()["data"]] == [
            again["id"]
        ]
    finally:
        admin.delete(f"/admin/models/{model}")


def test_delete_marks_deleting_and_the_controller_removes_it(admin: httpx.Client, deployable: Deployable) -> None:
    for body in ({"min": 0, "replicas": 0}, {"command": NO_ENGINE}):
        d = _created(admin, {"model": deployable.model, **body})
        r = admin.delete(f"/admin/deployments/{d['id']}")
        assert r.status_code == 202 and r.json()["state"] == "deleting", r.text
        assert r.json()["id"] == d["id"] and r.json()["desired"] == d["desired"]
        until(lambda d=d: _gone(admin, d["id"]), f"{d['id']} removed by the controller")
        assert d["id"] not in [x["id"] for x in admin.get("/admin/deployments").json()["data"]]
    _refused(admin.delete("/admin/deployments/dep-nope"), 404, None)


def test_only_platform_admins(live_server: LiveServer, admin: httpx.Client, deployable: Deployable) -> None:
    d = _created(admin, {"model": deployable.model, "min": 0, "replicas": 0})
    org = admin.post("/admin/orgs", json={"name": "dep-tenant"}).json()["id"]
    owner_key = admin.post(f"/admin/orgs/{org}/keys", json={"name": "o", "role": "owner"}).json()["secret"]
    operations = [
        ("GET", "/admin/deployments", None),
        ("POST", "/admin/deployments", {"model": deployable.model}),
        ("GET", f"/admin/deployments/{d['id']}", None),
        ("POST", f"/admin/deployments/{d['id']}/scale", {"replicas": 1}),
        ("PATCH", f"/admin/deployments/{d['id']}", {"threads": 1}),
        ("DELETE", f"/admin/deployments/{d['id']}", None),
    ]
    with httpx.Client(base_url=live_server.url, trust_env=False, timeout=30) as anyone:
        for method, path, body in operations:
            assert anyone.request(method, path, json=body).status_code == 401
            for key in (live_server.tenant_key, owner_key):
                r = anyone.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied", r.text
    assert admin.get(f"/admin/deployments/{d['id']}").json() == {**d, "replicas": []}, "nothing changed"


def test_documented_in_openapi(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, trust_env=False, timeout=30) as c:
        doc = c.get("/openapi.json").json()
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    assert set(paths["/admin/deployments"]) == {"get", "post"}
    assert set(paths["/admin/deployments/{deployment_id}"]) == {"get", "patch", "delete"}
    assert set(paths["/admin/deployments/{deployment_id}/scale"]) == {"post"}
    assert {"DeploymentIn", "DeploymentUpdate", "ScaleIn", "DeploymentOut", "DeploymentDetail", "ReplicaOut"} <= set(
        schemas
    )
    assert "secret" not in schemas["ReplicaOut"]["properties"]
    created = paths["/admin/deployments"]["post"]["responses"]
    assert created["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/DeploymentOut")
    assert "202" in paths["/admin/deployments/{deployment_id}"]["delete"]["responses"]
    assert {"400", "401", "403", "404"} <= set(created)
