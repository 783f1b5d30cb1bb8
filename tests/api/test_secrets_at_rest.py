"""Item 5: upstream secrets are encrypted at rest; the data dir is 0700, the database and key file 0600;
plaintext rows written before are sealed at start; a wrong or malformed key is a clear error."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from tests.api.conftest import api_settings
from yun.api import build_services
from yun.errors import SecretKeyError
from yun.store.secrets import load_key

UPSTREAM_KEY = "sk-upstream-0123456789abcdef"
URL_PASSWORD = "url-password-42"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _raw_db_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.glob("yun.db*"))


def test_secrets_are_sealed_in_the_file_and_round_trip(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    services = build_services(api_settings(data_dir))
    services.catalog.add_external("ext", "http://127.0.0.1:9/v1", api_key=UPSTREAM_KEY)
    services.catalog.add_external("ext-url", f"http://user:{URL_PASSWORD}@127.0.0.1:9/v1")
    services.db.checkpoint()  # fold the WAL in too: the key must be in neither
    got, got_url = services.catalog.get("ext"), services.catalog.get("ext-url")
    assert got.upstream_key == UPSTREAM_KEY and got_url.url == f"http://user:{URL_PASSWORD}@127.0.0.1:9/v1"
    raw = _raw_db_bytes(data_dir)
    assert UPSTREAM_KEY.encode() not in raw and URL_PASSWORD.encode() not in raw and b"fernet:" in raw
    assert _mode(data_dir) == 0o700
    for name in ("yun.db", "yun.db-wal", "yun.db-shm", "secrets.key"):  # WAL and SHM exist while open
        assert _mode(data_dir / name) == 0o600, name
    services.db.dispose()

    # A restart reads them back with the key file it created the first time.
    again = build_services(api_settings(data_dir))
    assert again.catalog.get("ext").upstream_key == UPSTREAM_KEY
    again.db.dispose()


def test_an_existing_data_dir_and_database_file_are_made_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    build_services(api_settings(data_dir)).db.dispose()
    os.chmod(data_dir / "yun.db", 0o644)
    os.chmod(data_dir, 0o755)
    build_services(api_settings(data_dir)).db.dispose()
    assert _mode(data_dir / "yun.db") == 0o600 and _mode(data_dir) == 0o700
    # A directory that is not Yun's own (no database, no key yet) keeps its mode.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    build_services(api_settings(shared, "sqlite:///" + str(tmp_path / "elsewhere" / "y.db"))).db.dispose()
    assert _mode(shared) == 0o755 and _mode(tmp_path / "elsewhere") == 0o700


def test_plaintext_rows_are_sealed_at_start(database_url: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path / "d", database_url)
    services = build_services(settings)
    services.catalog.add_external("ext", "http://127.0.0.1:9/v1", api_key="placeholder")
    with services.db.engine.begin() as c:  # as an older Yun wrote it
        c.execute(sa.text("UPDATE models SET upstream_key = :k WHERE id = 'ext'"), {"k": UPSTREAM_KEY})
    services.db.dispose()

    services = build_services(settings)
    with services.db.engine.connect() as c:
        stored = c.execute(sa.text("SELECT upstream_key FROM models WHERE id = 'ext'")).scalar_one()
    assert stored.startswith("fernet:") and UPSTREAM_KEY not in stored
    assert services.catalog.get("ext").upstream_key == UPSTREAM_KEY
    services.db.dispose()


def test_the_key_can_come_from_the_environment(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("YUN_SECRETS__KEY", key)
    settings = api_settings(tmp_path / "d", database_url)
    assert settings.secrets.key is not None and key not in repr(settings)
    services = build_services(settings)
    services.catalog.add_external("ext", "http://127.0.0.1:9/v1", api_key=UPSTREAM_KEY)
    services.db.dispose()
    assert not settings.secrets_key_file.exists()
    with services.db.engine.connect() as c:
        stored = c.execute(sa.text("SELECT upstream_key FROM models WHERE id = 'ext'")).scalar_one()
    services.db.dispose()
    assert Fernet(key.encode()).decrypt(stored.removeprefix("fernet:").encode()).decode() == UPSTREAM_KEY

    # Another key cannot open them: a clear error at start, naming where the key came from.
    monkeypatch.setenv("YUN_SECRETS__KEY", Fernet.generate_key().decode())
    with pytest.raises(SecretKeyError, match="not the key they were encrypted with") as wrong:
        build_services(api_settings(tmp_path / "d", database_url))
    assert "YUN_SECRETS__KEY" in wrong.value.message and key not in wrong.value.message
    monkeypatch.setenv("YUN_SECRETS__KEY", "not-a-key")
    with pytest.raises(SecretKeyError, match="malformed"):
        build_services(api_settings(tmp_path / "d", database_url))


def test_a_lost_key_file_is_a_clear_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    services = build_services(api_settings(data_dir))
    services.catalog.add_external("ext", "http://127.0.0.1:9/v1", api_key=UPSTREAM_KEY)
    services.db.dispose()
    (data_dir / "secrets.key").unlink()  # a new key is made, which cannot open the old secrets
    with pytest.raises(SecretKeyError, match=r"secrets\.key"):
        build_services(api_settings(data_dir))


def test_two_processes_creating_the_key_file_agree(tmp_path: Path) -> None:
    path = tmp_path / "k" / "secrets.key"
    first = load_key(None, path)
    second = load_key(None, path)
    sealed = first.seal("x")
    assert sealed is not None and second.open(sealed) == "x"
    assert _mode(path) == 0o600 and not [p for p in path.parent.iterdir() if p.name != "secrets.key"]


def test_the_cli_says_what_is_wrong_with_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from yun.cli import app

    data_dir = tmp_path / "d"
    services = build_services(api_settings(data_dir))
    services.catalog.add_external("ext", "http://127.0.0.1:9/v1", api_key=UPSTREAM_KEY)
    services.db.dispose()
    monkeypatch.setenv("YUN_SECRETS__KEY", Fernet.generate_key().decode())
    # `yun serve` is the one command that opens the database (the others are HTTP clients).
    result = CliRunner().invoke(
        app, ["serve", "--data-dir", str(data_dir), "--port", "0", "--no-default-models"], catch_exceptions=False
    )
    assert result.exit_code == 1
    assert "not the key they were encrypted with" in result.output and "Traceback" not in result.output
