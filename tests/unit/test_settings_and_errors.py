from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from yun.api.errors import error_response
from yun.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    EngineFailure,
    EngineUnavailable,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    PermissionDenied,
    StorageUnavailable,
)
from yun.settings import Settings


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("YUN_SERVER__PORT", "9123")
    monkeypatch.setenv("YUN_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.server.port == 9123 and s.server.host == "127.0.0.1"
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'yun.db'}"
    assert s.server.log_prompts is False
    monkeypatch.setenv("YUN_FILES__MAX_FILE_BYTES", "1000")
    monkeypatch.setenv("YUN_FILES__S3_SECRET_ACCESS_KEY", "s3cret")
    monkeypatch.setenv("YUN_FILES__S3_ACCESS_KEY_ID", "key")
    assert Settings().files.max_file_bytes == 1000
    assert "s3cret" not in repr(Settings().files)


def test_progress_interval_defaults_to_a_second_and_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().billing.progress_interval_s == 1.0
    monkeypatch.setenv("YUN_BILLING__PROGRESS_INTERVAL_S", "0.25")
    assert Settings().billing.progress_interval_s == 0.25
    with pytest.raises(ValidationError, match="progress_interval_s"):
        Settings(billing={"progress_interval_s": 0})


def test_production_refuses_insecure_choices() -> None:
    with pytest.raises(ValidationError, match="log_prompts"):
        Settings(environment="production", database_url="postgresql://x/y", server={"log_prompts": True})
    with pytest.raises(ValidationError, match="database_url"):
        Settings(environment="production")


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (InvalidRequest("bad", param="x"), 400, None),
        (ContextLengthExceeded("long"), 400, "context_length_exceeded"),
        (PayloadTooLarge("big"), 413, "payload_too_large"),
        (AuthenticationFailed("no"), 401, "invalid_api_key"),
        (PermissionDenied("no"), 403, "permission_denied"),
        (ModelNotFound("gone", param="model"), 404, "model_not_found"),
        (EngineUnavailable("down"), 503, "engine_unavailable"),
        (EngineFailure("broke"), 502, "engine_error"),
        (StorageUnavailable("disk full"), 503, "storage_unavailable"),
    ],
)
def test_every_domain_error_has_an_openai_shape(exc: Exception, status: int, code: str | None) -> None:
    response = error_response(exc)  # type: ignore[arg-type]
    body = json.loads(bytes(response.body))
    assert response.status_code == status
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
