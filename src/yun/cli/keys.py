"""`yun keys`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from yun.cli._common import Database, DataDir, err, fail, out, services_for, settings_for
from yun.errors import YunError

keys_app = typer.Typer(help="API keys.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A label for people.")],
    org: Annotated[str | None, typer.Option(help="Organization id (default: the default org).")] = None,
    role: Annotated[str, typer.Option(help="owner, admin, member or billing-viewer.")] = "member",
    admin: Annotated[bool, typer.Option(help="Platform admin key.")] = False,
    models: Annotated[str | None, typer.Option(help="Comma-separated models this key may use.")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute for this key.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute for this key.")] = None,
    expires_days: Annotated[int | None, typer.Option(help="Expire after this many days.")] = None,
    data_dir: DataDir = None,
    database: Database = None,
) -> None:
    """Mint a key; the secret is printed once and never stored."""
    from datetime import UTC, datetime, timedelta

    from yun.tenancy import DEFAULT_ORG
    from yun.tenancy.orgs import check_role

    services = services_for(settings_for(data_dir, database))
    try:
        if org is None:
            services.orgs.get_or_create(DEFAULT_ORG, "default")
        else:
            services.org_service.get(org)
        issued = services.keys.issue(
            org or DEFAULT_ORG,
            name,
            platform_admin=admin,
            role=check_role(role),
            allowed_models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
            rpm_limit=rpm,
            tpm_limit=tpm,
            expires_at=datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None,
        )
    except YunError as exc:
        raise fail(exc) from exc
    out().print(issued.secret)
    err().print(f"key id {issued.record.id}; the secret above is not stored and cannot be shown again")


@keys_app.command("list")
def keys_list(
    org: Annotated[str | None, typer.Option(help="Only this organization.")] = None,
    data_dir: DataDir = None,
    database: Database = None,
) -> None:
    services = services_for(settings_for(data_dir, database))
    table = Table("id", "org", "name", "prefix", "role", "models", "rpm", "tpm", "last used", "revoked")
    for k in services.keys.repo.list(org):
        table.add_row(
            k.id,
            k.org_id,
            k.name,
            k.prefix + "…",
            "platform admin" if k.is_platform_admin else k.role,
            ",".join(k.allowed_models) if k.allowed_models else "all",
            str(k.rpm_limit or ""),
            str(k.tpm_limit or ""),
            k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "",
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )
    out().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None, database: Database = None) -> None:
    try:
        services_for(settings_for(data_dir, database)).keys.revoke(key_id)
    except YunError as exc:
        raise fail(exc) from exc
    out().print(f"revoked {key_id}")
