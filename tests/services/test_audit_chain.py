"""The audit log's hash chain on a real Postgres: the migration chains rows written before it, new
rows extend it from concurrent writers, and ``identity audit verify`` (a real CLI process) passes
until one row is changed or removed with raw SQL, then fails naming that row.

Runs in a database of its own in the session's cluster, so tampering cannot disturb other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, make_url, text

from services.audit import GENESIS, record, verify_chain
from services.db import make_engine, make_sessionmaker, upgrade

from svc_helpers import REPO

OLD_ROWS = [  # as the code before the chain wrote them, numbers jsonb re-prints included
    ("identify", "match", "staff", {"faces": 1, "best": [0.9312]}),
    ("collection.create", "ok", "staff", {}),
    ("verify", "no_match", None, {"similarity": 1e16, "threshold": 0.908, "note": "é"}),
]


@pytest.fixture(scope="module")
def audit_db(pg_url: str) -> Iterator[tuple[str, Engine]]:
    name = "audit_" + uuid.uuid4().hex[:10]
    server = make_engine(pg_url)
    with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine, "0320_sealing")  # the schema before the chain, with rows in it
    with engine.begin() as conn:
        for action, outcome, collection, details in OLD_ROWS:
            conn.execute(
                text(
                    "INSERT INTO audit_events (action, outcome, collection, details) "
                    "VALUES (:a, :o, :c, CAST(:d AS jsonb))"
                ),
                {"a": action, "o": outcome, "c": collection, "d": json.dumps(details)},
            )
    upgrade(engine)
    yield url, engine
    engine.dispose()
    with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    server.dispose()


def _cli(url: str, tmp_path, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "IDENTITY_DATA_DIR": str(tmp_path),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(  # the installed console script, as an operator runs it
        [str(Path(sys.executable).parent / "identity"), *args],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_migration_chains_old_rows_and_writers_extend_the_chain(audit_db) -> None:
    _, engine = audit_db
    sessions = make_sessionmaker(engine)
    report = verify_chain(sessions)
    assert report.ok and report.rows == len(OLD_ROWS), report
    with engine.connect() as conn:
        first = conn.execute(
            text("SELECT prev_hash FROM audit_events ORDER BY id LIMIT 1")
        ).scalar_one()
    assert first == GENESIS

    # Eight writers at once, with values jsonb stores differently from how Python writes them.
    awkward = {
        "big": 1e16,
        "neg_zero": -0.0,
        "tiny": 1e-7,
        "text": "naïve 名",
        "nested": [{"b": 1.5, "a": None}],
    }

    def write(n: int) -> None:
        for i in range(5):
            with sessions.begin() as s:
                record(
                    s,
                    n,
                    "test.write",
                    "ok",
                    collection="c",
                    identity_id=uuid.uuid4(),
                    i=i,
                    **awkward,
                )
                if i == 4:  # several rows in one transaction chain one after another
                    record(s, n, "test.write", "ok", part=2)
                    record(s, n, "test.write", "ok", part=3)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = verify_chain(sessions, batch=7)  # a batch size that splits the walk mid-chain
    assert report.ok, report.problem
    assert report.rows == len(OLD_ROWS) + 8 * 7
    # A rolled-back transaction leaves no audit row and no hole in the chain.
    with pytest.raises(RuntimeError), sessions.begin() as s:
        record(s, None, "test.rolled_back", "ok")
        raise RuntimeError("abort")
    assert verify_chain(sessions).rows == len(OLD_ROWS) + 8 * 7


def _cli_verify(url: str, tmp_path) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return _cli(url, tmp_path, "audit", "verify")


def test_cli_key_create_and_revoke_are_audited(audit_db, tmp_path) -> None:
    url, engine = audit_db
    created = _cli(url, tmp_path, "keys", "create", "--scope", "verify", "--name", "audited")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    revoked = _cli(url, tmp_path, "keys", "revoke", key[:12])
    assert revoked.returncode == 0, revoked.stderr
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT action, actor_key_id, details FROM audit_events WHERE action LIKE 'key.%' ORDER BY id"
            )
        ).all()
    assert [(a, actor) for a, actor, _ in rows] == [("key.create", None), ("key.revoke", None)]
    assert all(d["prefix"] == key[:12] and d["scope"] == "verify" for _, _, d in rows)
    assert key not in str(rows)
    assert _cli_verify(url, tmp_path).returncode == 0


def test_cli_verify_names_the_changed_row_then_the_removed_one(audit_db, tmp_path) -> None:
    url, engine = audit_db
    ok = _cli_verify(url, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("audit chain ok: ")
    with engine.begin() as conn:
        ids = conn.execute(text("SELECT id FROM audit_events ORDER BY id")).scalars().all()
        target, after = ids[len(ids) // 2], ids[len(ids) // 2 + 1]
        conn.execute(text("UPDATE audit_events SET outcome = 'match' WHERE id = :i"), {"i": target})
    bad = _cli_verify(url, tmp_path)
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), bad.stderr
    assert f"audit row {target} " in lines[0] and "changed" in lines[0]
    assert "Traceback" not in bad.stderr

    with engine.begin() as conn:  # deleting the row instead breaks the link of the next one
        conn.execute(text("DELETE FROM audit_events WHERE id = :i"), {"i": target})
    bad = _cli_verify(url, tmp_path)
    assert bad.returncode == 1
    assert f"audit row {after} does not follow" in bad.stderr, bad.stderr
