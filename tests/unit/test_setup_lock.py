"""Several gateways started together on a blank database: migrations and the bootstrap admin key run
under the setup lock (PostgreSQL advisory lock, SQLite file lock), so every one comes up and exactly one
platform-admin key is minted. Real processes, each running the code `yun serve` runs at start."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from sqlalchemy import create_engine, text

STARTS = 3

_START = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from yun.api import bootstrap, build_services
    from yun.settings import Settings

    go = Path(sys.argv[3])
    while not go.exists():  # every process is imported and waiting: they start at once
        time.sleep(0.005)
    services = build_services(Settings(data_dir=Path(sys.argv[2]), database_url=sys.argv[1]))
    print(bootstrap(services) or "no key")
    services.db.dispose()
    """
)


def _start_together(database_url: str, tmp_path: Path) -> list[str]:
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _START, database_url, str(tmp_path / f"data-{i}"), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(STARTS)
    ]
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(out.strip())
    return outputs


def test_gateways_starting_together_on_a_blank_database_all_start_and_mint_one_admin_key(
    database_url: str, tmp_path: Path
) -> None:
    outputs = _start_together(database_url, tmp_path)
    minted = [o for o in outputs if o != "no key"]
    assert len(minted) == 1 and minted[0].startswith("yun-"), outputs
    engine = create_engine(database_url)
    try:
        with engine.connect() as c:
            admins = c.execute(text("SELECT count(*) FROM api_keys WHERE is_platform_admin")).scalar()
            orgs = c.execute(text("SELECT count(*) FROM organizations")).scalar()
            version = c.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    finally:
        engine.dispose()
    assert (admins, orgs) == (1, 1)
    assert len(version) == 1
