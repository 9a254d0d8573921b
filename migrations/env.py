"""Alembic environment: the database URL comes from our ``Settings`` (or the caller).

``services.db.upgrade`` passes the URL in ``config.attributes["url"]`` (it may have just started
the embedded Postgres); the plain ``alembic`` command falls back to ``Settings().database_url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from identity.settings import Settings
from services.tables import Base  # every table is defined there, on this one metadata

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or Settings().database_url
    if not url:
        raise SystemExit(
            "no database URL: set DATABASE_URL, or run `identity db upgrade` (embedded Postgres)"
        )
    return str(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
