"""The audit log: one writer, one row serialiser, and a hash chain that makes edits evident.

Every row carries ``row_hash = sha256(prev_hash + "\\n" + canonical(row))``, where ``prev_hash``
is the ``row_hash`` of the row before it (by id; ``GENESIS`` for the first) and ``canonical`` is
``event_dict`` as sorted, compact JSON. Editing, deleting or inserting a row breaks the chain at
that row; ``verify_chain`` walks it and names the first row that does not hold. What it cannot
see: the newest rows deleted from the end, or the whole chain recomputed by someone with write
access. Record the head (``identity audit verify`` prints it) somewhere else to catch those.

Writers call ``record(session, ...)``, which queues the row on the SQLAlchemy session; the rows are
written just before that session commits, under one transaction-scoped advisory lock. So, across
every worker and CLI process: chain order = id order = commit order; the lock is the last one any
transaction takes (it cannot deadlock with the per-collection locks) and is held only for the
commit; and an audit row commits or rolls back with the change it records.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, event, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.tables import AuditEvent

GENESIS = "0" * 64
# Advisory-lock key of the chain (migrations take 727001; collections 727 << 40 and up).
_CHAIN_LOCK = 727002
_PENDING = "identity_audit_pending"
_TABLE = cast(Table, AuditEvent.__table__)
_COLUMNS = [c.name for c in _TABLE.columns]


def _jsonb_float(literal: str) -> float | int:
    """A JSON float as Postgres jsonb gives it back: jsonb keeps numbers as exact decimals and
    prints them without an exponent, so 1e+16 comes back as the integer 10000000000000000 and
    -0.0 as 0.0. Normalising before the insert makes the hashed value the stored value."""
    x = float(literal)
    if x == 0.0:
        return 0.0
    return int(x) if x.is_integer() and abs(x) >= 1e16 else x


def normalise_details(details: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(details), parse_float=_jsonb_float)  # type: ignore[no-any-return]


def event_dict(e: Any) -> dict[str, Any]:
    """The one serialisation of an audit row (API, dashboard, CLI and the hash chain).

    ``e`` is an ``AuditEvent`` or a Core row with the same columns.
    """
    at: datetime = e.at
    return {
        "id": int(e.id),
        "at": at.astimezone(UTC).isoformat(),
        "actor_key_id": e.actor_key_id,
        "action": e.action,
        "collection": e.collection,
        "identity_id": None if e.identity_id is None else str(e.identity_id),
        "outcome": e.outcome,
        "details": e.details,
    }


def chain_hash(prev_hash: str, e: Any) -> str:
    canonical = json.dumps(event_dict(e), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


def record(
    s: Session,
    actor: int | None,
    action: str,
    outcome: str,
    collection: str | None = None,
    identity_id: uuid.UUID | None = None,
    **details: Any,
) -> None:
    """Queue an audit row on ``s``; it is written (chained) when ``s`` commits."""
    s.info.setdefault(_PENDING, []).append(
        AuditEvent(
            actor_key_id=actor,
            action=action,
            outcome=outcome,
            collection=collection,
            identity_id=identity_id,
            details=normalise_details(details),
        )
    )


@event.listens_for(Session, "before_commit")
def _write_pending(s: Session) -> None:
    pending: list[AuditEvent] | None = s.info.pop(_PENDING, None)
    if not pending:
        return
    # Everything else first: under the chain lock only audit rows are inserted, so a transaction
    # holding it never waits on a row lock that a transaction waiting for it holds.
    s.flush()
    # Under the lock, two round trips: the head and the new ids in one statement (its own
    # snapshot, taken after the lock, so it sees the last holder's commit), then one insert.
    s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHAIN_LOCK})
    head = s.execute(
        text(
            "SELECT (SELECT row_hash FROM audit_events ORDER BY id DESC LIMIT 1), "
            "nextval(pg_get_serial_sequence('audit_events', 'id')) FROM generate_series(1, :n)"
        ),
        {"n": len(pending)},
    ).all()
    prev = head[0][0] or GENESIS
    at = datetime.now(UTC)
    rows = []
    for e, new_id in zip(pending, sorted(int(r[1]) for r in head), strict=True):
        e.id, e.at, e.prev_hash = new_id, at, prev
        e.row_hash = prev = chain_hash(prev, e)
        rows.append({c: getattr(e, c) for c in _COLUMNS})
    s.execute(insert(_TABLE), rows)  # Core: no ORM unit of work on the hot path


@event.listens_for(Session, "after_rollback")
def _drop_pending(s: Session) -> None:
    s.info.pop(_PENDING, None)


@dataclass(frozen=True)
class ChainReport:
    rows: int
    head_id: int | None
    head_hash: str
    broken_id: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_id is None


def _rows(sessions: sessionmaker[Session], batch: int) -> Iterator[AuditEvent]:
    last = 0
    while True:
        with sessions() as s:
            rows = (
                s.execute(
                    select(AuditEvent)
                    .where(AuditEvent.id > last)
                    .order_by(AuditEvent.id)
                    .limit(batch)
                )
                .scalars()
                .all()
            )
        if not rows:
            return
        yield from rows
        last = rows[-1].id


def verify_chain(sessions: sessionmaker[Session], batch: int = 5000) -> ChainReport:
    """Walk the whole log in id order; the report names the first row that breaks the chain."""
    prev, prev_id, n = GENESIS, None, 0
    for e in _rows(sessions, batch):
        if e.prev_hash != prev:
            after = f"row {prev_id}" if prev_id is not None else "the start of the log"
            return ChainReport(
                n,
                prev_id,
                prev,
                e.id,
                f"audit row {e.id} does not follow {after}: a row between them was removed or "
                "inserted, or this row's link was edited",
            )
        if e.row_hash != chain_hash(prev, e):
            return ChainReport(
                n,
                prev_id,
                prev,
                e.id,
                f"audit row {e.id} ({e.action}) was changed after it was written",
            )
        prev, prev_id, n = e.row_hash, e.id, n + 1
    return ChainReport(n, prev_id, prev)
