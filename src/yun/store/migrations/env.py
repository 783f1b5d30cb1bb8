from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from yun.store.orm import Base

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


# `store.migrate.upgrade` hands over the connection that holds the setup lock (PostgreSQL), so the
# migrations run inside the lock's scope.
given = config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url)
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()
