"""API keys: created once and shown once, stored as SHA-256, checked in constant time.

A key looks like ``idk_<43 url-safe chars>`` (256 random bits), so a plain SHA-256 is enough: a
slow hash only matters for low-entropy secrets such as passwords. The first 12 characters are
stored in clear as ``prefix`` to find the row without scanning; the hash is compared with
``hmac.compare_digest``.

Scopes: ``admin`` may do everything; ``enroll`` may create identities, add faces and read
identities; ``verify`` may only verify and identify. A key bound to a collection is refused
(403) anywhere else.

Every check reads the key row, so a revoked key stops working at once in every process. Failed
checks are audited (the client address and, when the prefix names a real key, that key's id;
never the key) and throttled per client address and key prefix (``services/throttle.py``).
Creating and revoking a key are audited; revoking also ends the key's dashboard sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, update

from identity.errors import InvalidInput
from services.audit import record
from services.db import make_sessionmaker
from services.errors import Forbidden, NotFound, TooManyAttempts, Unauthorized
from services.tables import SCOPES, ApiKey, Collection, DashboardSession
from services.throttle import FailureThrottle

KEY_PREFIX = "idk_"
PREFIX_LEN = 12
# Which scopes may perform which kind of action.
ALLOWED: dict[str, frozenset[str]] = {
    "admin": frozenset({"admin"}),
    "enroll": frozenset({"admin", "enroll"}),
    "read": frozenset({"admin", "enroll"}),
    "verify": frozenset({"admin", "verify"}),
    "any": frozenset(SCOPES),
}
_LAST_USED_EVERY_S = 60.0  # write last_used_at at most this often per key


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    key_id: int
    scope: str
    collection: str | None  # None = all collections

    def require(self, action: str, collection: str | None = None) -> None:
        """Raise Forbidden unless this key may do ``action`` (a key of ALLOWED) in ``collection``."""
        if self.scope not in ALLOWED[action]:
            raise Forbidden(
                f"a '{self.scope}' key may not do this (needs {sorted(ALLOWED[action])})",
                scope=self.scope,
            )
        if self.collection is not None and collection is not None and collection != self.collection:
            raise Forbidden(
                f"this key is limited to collection '{self.collection}'", collection=collection
            )
        if self.collection is not None and collection is None and action == "admin":
            raise Forbidden("a collection-bound key may not manage collections")


class KeyStore:
    def __init__(self, engine: Engine, throttle: FailureThrottle | None = None) -> None:
        self.sessions = make_sessionmaker(engine)
        self.throttle = throttle or FailureThrottle(0, 0)  # none: the CLI checks no keys
        self._last_used: dict[int, float] = {}
        self._lock = threading.Lock()

    def create(
        self, scope: str, collection: str | None = None, name: str = "", actor: int | None = None
    ) -> tuple[str, dict[str, Any]]:
        """A new key; returns ``(key, row)``. The key is not stored and cannot be shown again."""
        if scope not in SCOPES:
            raise InvalidInput(f"scope must be one of {list(SCOPES)}", scope=scope)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.sessions.begin() as s:
            cid = None
            if collection is not None:
                c = s.execute(
                    select(Collection).where(Collection.name == collection)
                ).scalar_one_or_none()
                if c is None:
                    raise NotFound(f"collection '{collection}' not found", collection=collection)
                cid = c.id
            row = ApiKey(
                prefix=key[:PREFIX_LEN],
                key_sha256=_sha256(key),
                scope=scope,
                collection_id=cid,
                name=name,
            )
            s.add(row)
            s.flush()
            s.refresh(row)
            out = self._row(row, collection)
            record(
                s,
                actor,
                "key.create",
                "ok",
                collection=collection,
                key_id=row.id,
                prefix=row.prefix,
                scope=scope,
                name=name,
            )
        return key, out

    @staticmethod
    def _row(row: ApiKey, collection: str | None) -> dict[str, Any]:
        return {
            "id": row.id,
            "prefix": row.prefix,
            "scope": row.scope,
            "collection": collection,
            "name": row.name,
            "created_at": row.created_at.isoformat(),
            "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        }

    def list(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            rows = s.execute(select(ApiKey).order_by(ApiKey.id)).scalars().all()
            return [self._row(r, r.collection.name if r.collection else None) for r in rows]

    def revoke(self, key_id_or_prefix: str, actor: int | None = None) -> dict[str, Any]:
        with self.sessions.begin() as s:
            q = select(ApiKey)
            q = (
                q.where(ApiKey.id == int(key_id_or_prefix))
                if key_id_or_prefix.isdigit()
                else q.where(ApiKey.prefix == key_id_or_prefix[:PREFIX_LEN])
            )
            row = s.execute(q).scalar_one_or_none()
            if row is None:
                raise NotFound(f"no API key '{key_id_or_prefix}'")
            collection = row.collection.name if row.collection else None
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
                # The dashboard checks revoked_at too; ending the sessions keeps the table true.
                s.execute(
                    update(DashboardSession)
                    .where(DashboardSession.key_id == row.id, DashboardSession.ended_at.is_(None))
                    .values(ended_at=row.revoked_at)
                )
                record(
                    s,
                    actor,
                    "key.revoke",
                    "ok",
                    collection=collection,
                    key_id=row.id,
                    prefix=row.prefix,
                    scope=row.scope,
                )
            s.flush()
            return self._row(row, collection)

    def authenticate(
        self, key: str | None, client: str | None = None, action: str = "auth.refused"
    ) -> Principal:
        """The key's principal, or Unauthorized (audited as ``action``) / TooManyAttempts.

        ``client`` is the caller's address for the throttle and the audit row.
        """
        if not key:
            raise Unauthorized("missing X-API-Key header")
        names = [f"client:{client}"] if client else []
        if key.startswith(KEY_PREFIX):
            names.append(f"prefix:{key[:PREFIX_LEN]}")
        wait = self.throttle.retry_after(names)
        if wait is not None:
            raise TooManyAttempts(
                f"too many failed sign-ins from this client or for this key; try again in {wait} s",
                retry_after_s=wait,
            )
        row = None
        if key.startswith(KEY_PREFIX) and len(key) >= PREFIX_LEN + 8:
            # One round trip on every API request: the key and its collection's name together.
            with self.sessions() as s:
                row = s.execute(
                    select(
                        ApiKey.id,
                        ApiKey.scope,
                        ApiKey.key_sha256,
                        ApiKey.revoked_at,
                        Collection.name,
                    )
                    .outerjoin(Collection, ApiKey.collection_id == Collection.id)
                    .where(ApiKey.prefix == key[:PREFIX_LEN])
                ).one_or_none()
        # Compare even when no row matched, so timing does not tell whether a prefix exists.
        expected = row.key_sha256 if row is not None else "0" * 64
        ok = hmac.compare_digest(expected, _sha256(key))
        if row is not None and ok and row.revoked_at is None:
            principal = Principal(row.id, row.scope, row.name)
        else:
            reason = "revoked" if row is not None and ok else "wrong_key"
            self._refused(action, reason, client, row.id if row is not None else None, names)
            raise Unauthorized("invalid or revoked API key")
        self._touch(principal.key_id)
        return principal

    def _refused(
        self, action: str, reason: str, client: str | None, key_id: int | None, names: Sequence[str]
    ) -> None:
        """Count a failed check and audit it (never the key; ``key_id`` when the prefix matched)."""
        throttled = self.throttle.failed(list(names))
        target: dict[str, Any] = {} if key_id is None else {"key_id": key_id}
        with self.sessions.begin() as s:
            record(s, None, action, "refused", reason=reason, client=client, **target)
            if throttled:
                record(s, None, action, "throttled", client=client, **target)

    def _touch(self, key_id: int) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_used.get(key_id, -1e9) < _LAST_USED_EVERY_S:
                return
            self._last_used[key_id] = now
        with self.sessions.begin() as s:
            s.execute(
                update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=datetime.now(UTC))
            )
