"""The one configuration tree. Nothing else in Yun reads the environment.

Every field can be set as `YUN_<SECTION>__<FIELD>` (for example `YUN_SERVER__PORT=9000`) or by the CLI,
which passes overrides into `Settings(...)`.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_URL",
    "BillingSettings",
    "ConsoleSettings",
    "EngineSettings",
    "FilesSettings",
    "JobsSettings",
    "ModelDefaults",
    "SecretsSettings",
    "ServerSettings",
    "Settings",
]


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "yun"


def _default_config_dir() -> Path:
    # The XDG base directory spec, as gh and kubectl follow it: $XDG_CONFIG_HOME, else ~/.config.
    base = os.environ.get("XDG_CONFIG_HOME")
    return (Path(base) if base else Path.home() / ".config") / "yun"


DEFAULT_URL = "http://127.0.0.1:8000"
"""Where the CLI looks for a server when neither `yun login` nor YUN_URL named one."""

_DATABASE_SCHEMES = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    """Address the HTTP API binds. Loopback by default: exposing Yun is a decision, not an accident."""
    port: int = Field(default=8000, ge=0, le=65535)
    """TCP port of the HTTP API."""
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Requests with a larger body are refused with 413 before they are parsed."""
    log_prompts: bool = False
    """Log prompt and completion text. Off by default: prompts are the tenants' data."""
    gateway_id: str | None = None
    """Name of this gateway in its lease (default host:port), for operators. The holds a `yun serve`
    process takes belong to the process itself (a fresh instance id per start), not to this name."""
    cors_origins: list[str] = Field(default_factory=list)
    """Browser origins allowed to call the API (CORS), e.g. `["https://app.example.com"]` (env
    `YUN_SERVER__CORS_ORIGINS='["https://app.example.com"]'`); `["*"]` allows any. Empty by default: no
    browser page of another origin may call Yun (API keys do not belong in web pages)."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses or networks (`10.0.0.0/8`) of the load balancers in front of Yun. A request that comes
    from one of them is taken to come from the client its `X-Forwarded-For` names, over the scheme its
    `X-Forwarded-Proto` names: the console's per-address sign-in limit then counts each client, not the
    balancer (which every client would otherwise share: ten failed sign-ins by anyone would refuse
    everyone's), and a session cookie is Secure when the client came over https. Empty by default:
    those headers are ignored, since any client can write them. `["*"]` trusts every peer (only where
    nothing but the balancer can reach Yun)."""
    lease_s: float = Field(default=30.0, ge=1.0, le=3600.0)
    """A gateway renews its lease every third of this; one that has not renewed it for this long is
    taken for dead, and any gateway then settles its open holds (at their last progress) as interrupted.
    Longer tolerates longer stalls (a paused VM, a database failover) without billing a live stream as
    interrupted; shorter settles a crashed gateway's holds sooner."""

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry == "*":
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/8, or *)"
                ) from None
        return value


class EngineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threads: int = Field(default=2, ge=1)
    """CPU threads per xllamacpp replica."""
    parallel: int = Field(default=4, ge=1, le=64)
    """Concurrent sequences (slots) per chat replica; the context is shared among them."""
    context_per_slot: int = Field(default=4096, ge=256)
    """Context window each concurrent sequence gets, in tokens."""
    start_timeout_s: float = Field(default=120.0, gt=0)
    """How long a replica may take to load before it is declared failed."""
    health_interval_s: float = Field(default=2.0, gt=0)
    """How often the supervisor checks each replica."""
    request_timeout_s: float = Field(default=600.0, gt=0)
    """Upper bound on one engine request (a long generation on CPU is slow, not dead)."""
    queue_timeout_s: float = Field(default=300.0, gt=0)
    """How long a request may wait for a free slot of a busy model (tenants take turns) before a 503."""
    cold_start_timeout_s: float = Field(default=120.0, gt=0)
    """How long a request for a deployment with no replica running (scaled to zero, or all still starting)
    waits for one to start before a 503 that says the model is starting (retry)."""
    hung_after_s: float = Field(default=60.0, gt=0)
    """A replica whose engine process runs but has not answered its health check for this long is killed and
    restarted (counted against its restart budget)."""
    drain_s: float = Field(default=10.0, ge=0)
    """A replica being replaced (rolling update, scale-down) first leaves every gateway's rotation (within a
    second), then stops once its engine reports nothing running or queued (llama.cpp's and vLLM's
    /metrics); an engine that does not report its work gets this long to finish it."""
    drain_max_s: float = Field(default=600.0, ge=0)
    """How long a draining replica whose engine still reports work may keep it (a long generation) before
    it is stopped anyway."""


class ClusterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["all", "gateway", "controller"] = "all"
    """`all`: gateway and controller in one process (the default). `gateway`: serves requests from the
    replica registry, never starts an engine. `controller`: places replicas, serves only /health and
    /metrics."""
    backend: str = "local"
    """Where replicas run: `local` (engine processes on this machine) or `ray://HOST:PORT` / `auto` (a Ray
    cluster)."""
    load_interval_s: float = Field(default=1.0, gt=0, le=60)
    """How often a gateway checks its load (per deployment: queued and in-flight requests) and publishes it
    for the autoscaler when it moved (in Redis if set, else the database). A published load counts for
    5x this (at least 3 s), so a dead gateway's load is gone within that."""

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, backend: str) -> str:
        if backend in ("local", "auto"):
            return backend
        host, _, port = backend.removeprefix("ray://").rpartition(":")
        if not backend.startswith("ray://") or not host or not port.isdigit():
            raise ValueError(
                f"--cluster must be local, auto or ray://HOST:PORT (the Ray head's address), not {backend!r}"
            )
        return backend


class BillingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    progress_interval_s: float = Field(default=1.0, gt=0)
    """While a stream is relayed, the tokens generated so far are written onto its reservation at most
    this often (never for a stream that ends within one interval). A crash bills the last such record,
    so at most this much generation per cut stream goes unbilled; shorter means more writes."""
    compute_interval_s: int = Field(default=60, ge=1, le=3600)
    """The billing interval of compute: the active controller meters every replica's seconds this often
    (a running replica's usage is written in intervals this long) and a dedicated deployment's hold covers
    this long ahead."""


class SecretsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: SecretStr | None = None
    """Key that encrypts secrets at rest (upstream API keys): a Fernet key, 32 bytes in URL-safe base64.
    Unset, Yun uses `secrets.key` in the data dir, created with mode 0600 at first use. Gateways that
    share a PostgreSQL database need the same key: set it here (`YUN_SECRETS__KEY`) on each."""


class ConsoleSettings(BaseModel):
    """The web console's sign-in: how long a session lasts and when repeated failures lock an account."""

    model_config = ConfigDict(extra="forbid")

    session_ttl_s: int = Field(default=12 * 3600, ge=60, le=30 * 24 * 3600)
    """A console session ends this long after sign-in (then the browser signs in again)."""
    max_failed_logins: int = Field(default=5, ge=1, le=100)
    """This many failed sign-ins in a row lock the account (whatever password is tried next)."""
    lockout_s: int = Field(default=15 * 60, ge=1, le=24 * 3600)
    """How long a locked account refuses every sign-in."""
    max_failed_logins_per_ip: int = Field(default=10, ge=1, le=10_000)
    """This many failed sign-ins from one client address within `ip_window_s` refuse that address's
    sign-ins (429) until the oldest leaves the window; an account's lockout counts one failure per address
    per window (tenancy/throttle.py)."""
    ip_window_s: int = Field(default=15 * 60, ge=1, le=24 * 3600)
    """The window of `max_failed_logins_per_ip`."""
    invitation_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, le=90 * 24 * 3600)
    """An invitation link expires this long after it was made (and works once)."""
    secure_cookie: bool | None = None
    """Mark the session cookie Secure (sent over https only). Unset: Secure when the request came over
    https, or always with `environment=production`. Behind a TLS-terminating proxy, list it in
    `server.trusted_proxies` (Yun then sees the client's scheme) or set this to true."""


_MIB = 1024 * 1024


class JobsSettings(BaseModel):
    """Fine-tuning jobs: how many train at once on this controller's compute, and with how many threads."""

    model_config = ConfigDict(extra="forbid")

    max_running: int = Field(default=1, ge=1, le=64)
    """Jobs training at once; the others wait in the queue (each takes `threads` CPUs while it runs)."""
    threads: int = Field(default=2, ge=1, le=256)
    """CPU threads of one trainer (torch's intra-op threads)."""
    trainer_options: dict[str, Any] = Field(default_factory=dict)
    """Recipe settings every job's trainer gets on top of the job's own (yun/jobs/training/spec.py), e.g.
    `{"lora_r": 16, "target_modules": ["q_proj", "v_proj"], "max_seq_length": 2048}`."""
    trainer_command: list[str] | None = None
    """Replaces the trainer's command (tests, custom trainers): `{spec}` (its spec file) and `{events}`
    (the event log it appends to) are substituted. Default: `python -m yun.jobs.training`."""


class FilesSettings(BaseModel):
    """Uploaded files (`/v1/files`): where their bytes live and how much a tenant may keep."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "s3"] = "local"
    """`local`: a directory `files/` in the data dir (one machine). `s3`: an S3-compatible bucket, which
    every gateway and training node of a cluster reads alike."""
    s3_endpoint_url: str | None = None
    """The S3-compatible endpoint (e.g. `http://minio:9000`); unset means AWS S3 itself."""
    s3_bucket: str | None = None
    """The bucket that holds the files (it must exist); needed with `backend = "s3"`."""
    s3_region: str | None = None
    """The bucket's region; unset leaves it to boto3's own configuration."""
    s3_access_key_id: str | None = None
    """Access key id; unset leaves credentials to boto3's own chain (instance role, ~/.aws)."""
    s3_secret_access_key: SecretStr | None = None
    """Secret access key, with `s3_access_key_id`."""
    max_file_bytes: int = Field(default=512 * _MIB, ge=1)
    """The largest file one upload may store; a larger one is refused (413) as its bytes pass the limit."""
    max_org_bytes: int = Field(default=10 * 1024 * _MIB, ge=1)
    """The most file storage one organization may hold in all; an upload past it is refused (413)."""

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> FilesSettings:
        if self.backend == "s3" and not self.s3_bucket:
            raise ValueError("files.backend s3 needs files.s3_bucket (YUN_FILES__S3_BUCKET)")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("files.s3_access_key_id and files.s3_secret_access_key are set together")
        return self


class ModelDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chat: bool = True
    """Serve the bundled Qwen2.5-Coder-0.5B-Instruct at start."""
    embedding: bool = True
    """Serve the bundled all-MiniLM-L6-v2 at start."""


class Settings(BaseSettings):
    """Root of Yun's configuration."""

    model_config = SettingsConfigDict(env_prefix="YUN_", env_nested_delimiter="__", extra="forbid")

    environment: Literal["development", "production"] = "development"
    """`production` refuses insecure choices (binding every interface with no TLS proxy in front is yours to own)."""
    data_dir: Path = Field(default_factory=_default_data_dir)
    """Where the SQLite database and the model cache live."""
    database_url: str | None = None
    """SQLAlchemy URL: `sqlite:///PATH` or `postgresql://user@host/db` (psycopg 3); default is a SQLite
    file in `data_dir`."""
    redis_url: str | None = None
    """Redis for rate limits shared by several gateways; default keeps them in this process."""
    server: ServerSettings = Field(default_factory=ServerSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    billing: BillingSettings = Field(default_factory=BillingSettings)
    defaults: ModelDefaults = Field(default_factory=ModelDefaults)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    url: str | None = None
    """The Yun server the `yun` CLI talks to (YUN_URL). Unset: the one `yun login` stored, else
    http://127.0.0.1:8000."""
    api_key: SecretStr | None = None
    """The platform-admin key the `yun` CLI sends (YUN_API_KEY). Unset: the one `yun login` stored."""
    config_dir: Path = Field(default_factory=_default_config_dir)
    """Where `yun login` keeps the server URL and key (default $XDG_CONFIG_HOME/yun or ~/.config/yun)."""

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme, sep, rest = url.partition("://")
        driver = _DATABASE_SCHEMES.get(scheme.lower()) if sep else None
        if driver is None:
            raise ValueError("must be sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE")
        if driver.startswith("postgresql") and importlib.util.find_spec("psycopg") is None:
            raise ValueError("PostgreSQL needs psycopg 3, which installs with Yun: reinstall it (scripts/install.sh)")
        return f"{driver}://{rest}"

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1].strip("/")) == 0:
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:8000")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _refuse_insecure(self) -> Settings:
        if self.environment == "production" and self.server.log_prompts:
            raise ValueError("server.log_prompts must be off in production")
        if self.environment == "production" and self.database_url is None:
            raise ValueError("production needs an explicit database_url")
        if self.cluster.role != "all" and not self.resolved_database_url.startswith("postgresql"):
            raise ValueError(
                f"--role {self.cluster.role} shares its replica registry with other processes through the "
                "database: give it the same PostgreSQL (--database postgresql://...) as the others; on SQLite "
                "run one `yun serve` (role all), which is gateway and controller in one"
            )
        return self

    @property
    def gateway_id(self) -> str:
        return self.server.gateway_id or f"{socket.gethostname()}:{self.server.port}"

    @property
    def secrets_key_file(self) -> Path:
        return self.data_dir / "secrets.key"

    @property
    def files_dir(self) -> Path:
        """Where the `local` file store keeps uploaded files."""
        return self.data_dir / "files"

    @property
    def model_cache_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def jobs_dir(self) -> Path:
        """Each fine-tuning job's working directory (inputs, checkpoints, the trainer's log)."""
        return self.data_dir / "jobs"

    @property
    def adapters_dir(self) -> Path:
        """Fine-tuned models' LoRA adapters, served on their base model's replicas."""
        return self.data_dir / "adapters"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'yun.db'}"
