"""Everything the HTTP layer needs, built once per app (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from yun.billing import BillingService
from yun.billing.compute import ComputeBilling
from yun.billing.statements import Statement, monthly_statement
from yun.billing.training import TrainingBilling
from yun.catalog import Catalog
from yun.cluster import Router
from yun.cluster.base import Cluster
from yun.cluster.controller import Controller
from yun.cluster.load import DatabaseLoadBoard, LoadBoard, RedisLoadBoard
from yun.gateway import Gateway, Metrics
from yun.gateway.ratelimit import MemoryRateLimitStore, RateLimitStore, RedisRateLimitStore
from yun.jobs.files import FileStore, file_store
from yun.jobs.fine_tuning.runner import FineTuningRunner
from yun.jobs.fine_tuning.service import FineTuningService
from yun.metering.usage import UsageQueries
from yun.settings import Settings
from yun.store import (
    Database,
    InstanceRepository,
    KeyRepository,
    MemberRepository,
    ModelRepository,
    OrganizationRepository,
    new_instance_id,
    setup_lock,
    upgrade,
)
from yun.store.deployments import DeploymentRepository
from yun.store.files import FileRepository
from yun.store.fine_tuning import FineTuningRepository
from yun.store.invitations import InvitationRepository
from yun.store.loads import LoadRepository
from yun.store.people import AccountRepository
from yun.store.replicas import ReplicaRepository
from yun.store.responses import ResponseRepository
from yun.store.secrets import load_key
from yun.tenancy import DEFAULT_ORG, KeyService
from yun.tenancy.accounts import AccountService
from yun.tenancy.invitations import InvitationService
from yun.tenancy.orgs import OrgService
from yun.tenancy.throttle import SignInThrottle

__all__ = ["Services", "bootstrap", "build_services"]


@dataclass
class Services:
    settings: Settings
    db: Database
    orgs: OrganizationRepository
    org_service: OrgService
    keys: KeyService
    accounts: AccountService
    """People's passwords and console sessions."""
    invitations: InvitationService
    catalog: Catalog
    router: Router
    """This gateway's routes to the replicas in the registry (and to external upstreams)."""
    deployments: DeploymentRepository
    registry: ReplicaRepository
    loads: LoadBoard
    """Where gateways publish their queued and in-flight requests, and the autoscaler reads their sums."""
    metrics: Metrics
    billing: BillingService
    usage: UsageQueries
    gateway: Gateway
    instances: InstanceRepository
    instance_id: str
    """This process's gateway instance: the owner of every hold it takes (registered by the lifespan)."""
    responses: ResponseRepository
    """Stored responses of the Responses API (`store: true`), per organization."""
    files: FileStore
    """Where uploaded files' bytes live (`files.backend`: the data dir, or an S3-compatible bucket)."""
    file_records: FileRepository
    """Uploaded files' metadata, per organization."""
    compute: ComputeBilling
    """Meters every replica's seconds and bills dedicated deployments for theirs; run by the active
    controller's process (see the lifespan)."""
    fine_tuning: FineTuningService
    """Fine-tuning jobs: created (checked, held) by any gateway, trained by the active controller's runner."""
    job_runner: FineTuningRunner | None = None
    """Set by the lifespan while this process is the active controller: it trains the queued jobs."""
    backend: Cluster | None = None
    """Where the controller places replicas, when it was connected before the app started (`yun serve`)."""
    controller: Controller | None = None
    """Set by the lifespan when this process places replicas (roles `all` and `controller`)."""
    exclusive: bool = False
    """True once `yun serve` holds the data-dir lock over an embedded (SQLite) database: no other gateway
    can be alive on it, so every hold not this process's own was left by a dead one."""

    def poke_jobs(self) -> None:
        """Wake this process's job runner (if it runs one) to act on a job just created or cancelled."""
        if self.job_runner is not None:
            self.job_runner.poke()

    def statements(self, org_id: str, year: int, month: int) -> Statement:
        return monthly_statement(self.billing.money, org_id, year, month)


def _private_data_dir(data_dir: Path) -> None:
    """The data dir holds the database, the secrets key and replica logs: this user's alone. It is created
    0700; one that already holds Yun's files (made by an older Yun, 0755) is tightened too, but a
    directory that is not Yun's own is left as it is."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any((data_dir / name).exists() for name in ("yun.db", "secrets.key")):
        data_dir.chmod(0o700)


def build_services(settings: Settings) -> Services:
    """Open the database (migrating it) and wire the services together."""
    _private_data_dir(settings.data_dir)
    url = settings.resolved_database_url
    upgrade(url)
    db = Database(url)
    key = settings.secrets.key
    try:
        box = load_key(key.get_secret_value() if key else None, settings.secrets_key_file)
        models = ModelRepository(db, box)
        models.seal_plaintext()  # secrets written before encryption; fails here, clearly, on a wrong key
    except BaseException:
        db.dispose()
        raise
    e = settings.engine
    router = Router(
        request_timeout_s=e.request_timeout_s,
        queue_timeout_s=e.queue_timeout_s,
        cold_start_timeout_s=e.cold_start_timeout_s,
    )
    metrics = Metrics()
    instance_id = new_instance_id()
    # The operator's own organization (it owns the bootstrap key) is metered, never refused for quota.
    billing = BillingService(db, instance_id, internal_orgs=frozenset({DEFAULT_ORG}))
    deployments = DeploymentRepository(db)
    limiter: RateLimitStore = RedisRateLimitStore(settings.redis_url) if settings.redis_url else MemoryRateLimitStore()
    loads: LoadBoard = (
        RedisLoadBoard(settings.redis_url) if settings.redis_url else DatabaseLoadBoard(LoadRepository(db))
    )
    catalog = Catalog(models, settings.model_cache_dir)
    keys = KeyService(KeyRepository(db))
    console = settings.console
    files, file_records = file_store(settings), FileRepository(db)
    accounts = AccountService(
        AccountRepository(db),
        keys,
        session_ttl_s=console.session_ttl_s,
        max_failed_logins=console.max_failed_logins,
        lockout_s=console.lockout_s,
        throttle=SignInThrottle(console.max_failed_logins_per_ip, console.ip_window_s),
    )
    return Services(
        settings=settings,
        db=db,
        orgs=OrganizationRepository(db),
        org_service=OrgService(OrganizationRepository(db), MemberRepository(db)),
        keys=keys,
        accounts=accounts,
        invitations=InvitationService(InvitationRepository(db), accounts, ttl_s=console.invitation_ttl_s),
        catalog=catalog,
        router=router,
        deployments=deployments,
        registry=ReplicaRepository(db, box),
        loads=loads,
        metrics=metrics,
        billing=billing,
        usage=UsageQueries(billing.money),
        gateway=Gateway(
            router,
            metrics,
            billing,
            limiter,
            log_prompts=settings.server.log_prompts,
            progress_interval_s=settings.billing.progress_interval_s,
        ),
        instances=InstanceRepository(db),
        instance_id=instance_id,
        responses=ResponseRepository(db),
        files=files,
        file_records=file_records,
        compute=ComputeBilling(db, billing, deployments, interval_s=settings.billing.compute_interval_s),
        fine_tuning=FineTuningService(
            FineTuningRepository(db),
            catalog,
            files,
            file_records,
            TrainingBilling(billing),
            e.context_per_slot,
            deployments,
        ),
    )


def bootstrap(services: Services) -> str | None:
    """Create the default organization and, on a database with no API key at all, the first platform-admin
    key, whose secret is returned (to be shown once; only its hash is kept). Under the setup lock, so
    that of several gateways started together on a blank database exactly one mints it."""
    with setup_lock(services.db.url):
        services.orgs.get_or_create(DEFAULT_ORG, "default")
        if services.keys.repo.count() > 0:
            return None
        return services.keys.issue(DEFAULT_ORG, "bootstrap admin", platform_admin=True).secret
