"""/admin/deployments on the live server of this package: create, list, get (with the replicas of the
registry), scale, update (a new generation only when replicas must restart), delete; OpenAI-shaped 400/404
for wrong input; platform-admin keys only; no engine secret in any answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from tests.cli.conftest import Deployable, LiveServer
from tests.support.replicas import ENGINE_SECRET, add_replica
from yun.store.orm import ReplicaRow


def _no_secret(response: httpx.Response) -> None:
    response.read()
    assert ENGINE_SECRET not in response.text, f"{response.request.url} answered an engine secret"


@pytest.fixture
def admin(live_server: LiveServer) -> Iterator[httpx.Client]:
    """The admin key's client; every answer it gets is checked for engine secrets."""
    headers = {"Authorization": f"Bearer {live_server.admin_key}"}
    hooks = {"response": [_no_secret]}
    with httpx.Client(base_url=live_server.url, headers=headers, trust_env=False, timeout=30, event_hooks=hooks) as c:
        yield c


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
    d = _created(admin, {"model": deployable.model, "min": 0, "replicas": 0})
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
        ({"model": "{model}", "command": []}, 400, "command"),
        ({"model": "{model}", "command": ["a\x00b"]}, 400, "command.0"),
        ({"model": "{model}", "id": "bad id/x"}, 400, "id"),
        ({"model": "{model}", "gen": 3}, 400, "gen"),
        ({}, 400, "model"),
    ],
)
def test_wrong_input_is_an_openai_error_naming_the_field(
    admin: httpx.Client, deployable: Deployable, body: dict[str, Any], status: int, param: str
) -> None:
    before = admin.get("/admin/deployments").json()["data"]
    body = {k: deployable.model if v == "{model}" else v for k, v in body.items()}
    _refused(admin.post("/admin/deployments", json=body), status, param)
    assert admin.get("/admin/deployments").json()["data"] == before


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


def test_show_has_the_replicas_of_the_registry_never_their_secret(admin: httpx.Client, deployable: Deployable) -> None:
    d = _created(admin, {"model": deployable.model, "min": 0, "replicas": 2, "max": 2})
    add_replica(deployable.db, d["id"], f"{d['id']}-r1", "ready", node="node-a", endpoint="http://127.0.0.1:9001")
    add_replica(deployable.db, d["id"], f"{d['id']}-r2", "failed", error="engine exited: out of memory", restarts=5)
    add_replica(deployable.db, d["id"], f"{d['id']}-r0", "stopped")
    shown = admin.get(f"/admin/deployments/{d['id']}").json()
    assert (shown["desired"], shown["ready"]) == (2, 1)
    ready, failed = shown["replicas"]
    assert ready == {
        "id": f"{d['id']}-r1",
        "state": "ready",
        "generation": 1,
        "node": "node-a",
        "endpoint": "http://127.0.0.1:9001",
        "backend": "local",
        "shape": "cpu1",
        "restarts": 0,
        "error": None,
        "created_at": ready["created_at"],
        "ready_at": ready["ready_at"],
    }
    assert ready["ready_at"] is not None
    assert (failed["state"], failed["error"], failed["restarts"]) == ("failed", "engine exited: out of memory", 5)
    listed = {x["id"]: x for x in admin.get("/admin/deployments").json()["data"]}
    assert listed[d["id"]]["ready"] == 1 and "replicas" not in listed[d["id"]]
    scaled = admin.post(f"/admin/deployments/{d['id']}/scale", json={"replicas": 1}).json()
    assert scaled["ready"] == 1


def test_delete_marks_deleting_until_no_replica_holds_compute(admin: httpx.Client, deployable: Deployable) -> None:
    idle = _created(admin, {"model": deployable.model, "min": 0, "replicas": 0})
    assert admin.delete(f"/admin/deployments/{idle['id']}").json() == {
        "id": idle["id"],
        "object": "deployment",
        "deleted": True,
        "state": "deleted",
    }
    assert admin.get(f"/admin/deployments/{idle['id']}").status_code == 404

    busy = _created(admin, {"model": deployable.model})
    replica = f"{busy['id']}-r1"
    add_replica(deployable.db, busy["id"], replica, "ready")
    at = f"/admin/deployments/{busy['id']}"
    for _ in range(2):  # idempotent while the replica runs
        r = admin.delete(at)
        assert r.status_code == 200 and (r.json()["deleted"], r.json()["state"]) == (False, "deleting"), r.text
    assert admin.get(at).json()["state"] == "deleting"
    assert "being deleted" in _refused(admin.post(f"{at}/scale", json={"replicas": 1}), 400, None)
    _refused(admin.patch(at, json={"threads": 2}), 400, None)
    with deployable.db.engine.begin() as c:  # the controller stopped it
        c.execute(update(ReplicaRow).where(ReplicaRow.id == replica).values(state="stopped"))
    assert admin.delete(at).json()["deleted"] is True
    assert admin.get(at).status_code == 404


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
    assert {"400", "401", "403", "404"} <= set(created)
