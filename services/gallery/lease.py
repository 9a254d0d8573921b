"""``JobLease``: a live process owns a gallery job through a Postgres advisory lock."""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, Engine, text

# Session-level advisory locks on keys (_JOB_LOCK_SPACE, 31 bits of the job id) mark live jobs.
_JOB_LOCK_SPACE = 0x6A6F62  # "job"


def job_lock_key(job_id: uuid.UUID | str) -> dict[str, int]:
    return {"space": _JOB_LOCK_SPACE, "key": uuid.UUID(str(job_id)).int & 0x7FFFFFFF}


class JobLease:
    """Proof that a live process owns a job, from its creation until it ends.

    A Postgres session-level advisory lock held on a connection of its own: Postgres drops it
    when that connection closes, which it does when the owning process dies (SIGKILL, a crash,
    a lost host), so another process can tell a dead owner's job (lock free) from one still
    running in a second service worker or an ``identity ingest`` run (lock held).
    """

    def __init__(self, engine: Engine, job_id: uuid.UUID | None = None) -> None:
        self.job_id = job_id or uuid.uuid4()
        self._conn: Connection | None = engine.connect()
        self._conn.execute(text("SELECT pg_advisory_lock(:space, :key)"), job_lock_key(self.job_id))
        self._conn.commit()  # the lock outlives the transaction; don't sit idle inside one

    def release(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:space, :key)"), job_lock_key(self.job_id))
            conn.commit()
        finally:
            conn.close()
