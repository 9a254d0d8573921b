"""Database plumbing: which URL, the engine and sessions, and migrations.

- ``open_database(settings)``: context manager yielding an ``Engine``; with no ``DATABASE_URL`` it
  starts (or joins) the embedded Postgres in ``settings.data_dir`` and leaves it on exit.
- ``make_engine(url)`` / ``make_sessionmaker(engine)``: SQLAlchemy 2 with psycopg 3.
- ``upgrade(engine)``: applies the Alembic migrations in ``migrations/`` up to head.
- ``vacuum(engine, tables, mode)``: VACUUM (FULL) tables outside a transaction, e.g. after an
  erase, so dead tuples stop holding the deleted rows' bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from identity.settings import Settings
from services.embedded_pg import EmbeddedPostgres

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` URLs and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, pool_size: int = 10) -> Engine:
    return create_engine(
        normalise_url(url), pool_size=pool_size, max_overflow=20, pool_pre_ping=True
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def open_database(settings: Settings) -> Iterator[Engine]:
    """An engine on ``DATABASE_URL``, or on the embedded Postgres started for the duration."""
    embedded: EmbeddedPostgres | None = None
    if settings.database_url:
        url = settings.database_url
    else:
        embedded = EmbeddedPostgres(settings.data_dir)
        url = embedded.start()
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        if embedded is not None:
            embedded.stop()


def alembic_config(url: str | None = None):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.attributes["url"] = url
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations; safe to run concurrently (a Postgres advisory lock serialises them)."""
    from alembic import command
    from sqlalchemy import text

    with engine.begin() as conn:
        # Two processes starting at once (serve + a CLI command) must not both create tables.
        conn.execute(text("SELECT pg_advisory_xact_lock(727001)"))
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


# Tables whose rows hold biometric data (embeddings, face crops); what an erase vacuums.
BIOMETRIC_TABLES = ("face_templates", "gallery_faces", "body_templates")


def vacuum(engine: Engine, tables: tuple[str, ...] = BIOMETRIC_TABLES, mode: str = "full") -> None:
    """VACUUM ``tables`` (their TOAST tables too) and CHECKPOINT so the files on disk change.

    A DELETE leaves the row's bytes in its heap page (a dead tuple) until VACUUM; a plain VACUUM
    frees the space but PostgreSQL does not zero it, so the bytes stay until a later row
    overwrites them. ``full`` rewrites each table into new files and unlinks the old ones (an
    ACCESS EXCLUSIVE lock per table while it copies). WAL segments still hold the rows (see
    docs/security.md). ``off`` does nothing; a missing table is skipped. Never raises: the
    erase it follows has committed; a failure is logged.
    """
    import logging

    from sqlalchemy import text

    if mode == "off":
        return
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            present = set(
                conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
                ).scalars()
            )
            names = [t for t in tables if t in present]
            if names:
                option = "(FULL) " if mode == "full" else ""
                conn.execute(text(f"VACUUM {option}{', '.join(names)}"))
            # CHECKPOINT needs a superuser (the embedded cluster's); elsewhere the next automatic
            # checkpoint writes the pages
            if conn.execute(
                text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            ).scalar():
                conn.execute(text("CHECKPOINT"))
    except Exception:
        logging.getLogger(__name__).exception("VACUUM %s after erase failed", tables)
