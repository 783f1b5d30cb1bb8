"""Yun's domain errors. No HTTP here: `api/errors.py` maps each class to an OpenAI error body and status."""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "ClientDisconnected",
    "ComputeBusy",
    "ContextLengthExceeded",
    "DatabaseUnavailable",
    "EngineFailure",
    "EngineUnavailable",
    "InvalidRequest",
    "ModelIntegrityError",
    "ModelNotFound",
    "ModelSourceMissing",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PaymentRequired",
    "QuotaExceeded",
    "RateLimited",
    "SecretKeyError",
    "StorageUnavailable",
    "UnsupportedParameter",
    "YunError",
]


class YunError(Exception):
    """Root of every error Yun raises on purpose."""

    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(YunError):
    """The client sent something we will not run."""


class UnsupportedParameter(InvalidRequest):
    """A valid OpenAI parameter this model or engine cannot honour; refused rather than ignored."""

    code = "unsupported_parameter"


class ContextLengthExceeded(InvalidRequest):
    """Prompt plus requested output does not fit the model's context window."""

    code = "context_length_exceeded"


class PayloadTooLarge(InvalidRequest):
    """The request body is over the configured limit."""

    code = "payload_too_large"


class AuthenticationFailed(YunError):
    """Missing, malformed, unknown, revoked or expired API key."""

    code = "invalid_api_key"


class PermissionDenied(YunError):
    """The key is valid but may not do this."""

    code = "permission_denied"


class NotFound(YunError):
    """The thing asked for does not exist (or belongs to someone else)."""

    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class QuotaExceeded(YunError):
    """The organization's credits do not cover the request's maximum cost."""

    code = "insufficient_quota"


class PaymentRequired(QuotaExceeded):
    """The organization's credits do not cover what must be paid ahead before anything runs (a dedicated
    deployment's first billing interval): nothing was started."""


class RateLimited(YunError):
    """Too many requests or tokens per minute for a key or an organization."""

    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.headers = headers or {}


class EngineUnavailable(YunError):
    """No healthy replica can take the request right now."""

    code = "engine_unavailable"


class ComputeBusy(EngineUnavailable):
    """No node has the resources a batch task asks for free now: the task waits and is tried again."""

    code = "compute_busy"


class ClientDisconnected(YunError):
    """The client closed its connection before the request could run (it waited for a busy model)."""

    code = "client_closed_request"


class EngineFailure(YunError):
    """The engine accepted the request and then failed."""

    code = "engine_error"


class ModelSourceMissing(YunError):
    """A model's source (registry package, local file, hub id) cannot be found."""

    code = "model_source_missing"


class ModelIntegrityError(YunError):
    """A model file does not match the hash it must have; it is never loaded."""

    code = "model_integrity_error"


class DatabaseUnavailable(YunError):
    """The database cannot be reached or opened (wrong URL, server down, no permission)."""

    code = "database_unavailable"


class SecretKeyError(YunError):
    """The key that encrypts secrets at rest is missing, malformed, unreadable or not the one they were
    encrypted with."""

    code = "secret_key_error"


class StorageUnavailable(YunError):
    """The file store (a directory, an S3-compatible bucket) cannot be read or written right now."""

    code = "storage_unavailable"
