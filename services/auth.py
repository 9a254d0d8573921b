"""API keys: created once and shown once, stored as SHA-256, checked in constant time.

A key looks like ``idk_<43 url-safe chars>`` (256 random bits), so a plain SHA-256 is enough: a
slow hash only matters for low-entropy secrets such as passwords. The first 12 characters are
stored in clear as ``prefix`` to find the row without scanning; the hash is compared with
``hmac.compare_digest``.

Scopes: ``admin`` may do everything; ``enroll`` may create identities, add faces and read
identities; ``verify`` may only verify and identify. A key bound to a collection is refused
(403) anywhere else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, update

from identity.errors import InvalidInput
from services.db import make_sessionmaker
from services.errors import Forbidden, NotFound, Unauthorized
from services.schema import SCOPES, ApiKey, Collection

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
    def __init__(self, engine: Engine) -> None:
        self.sessions = make_sessionmaker(engine)
        self._last_used: dict[int, float] = {}
        self._lock = threading.Lock()

    def create(self, scope: str, collection: str | None = None, name: str = "") -> tuple[str, dict[str, Any]]:
        """A new key; returns ``(key, row)``. The key is not stored and cannot be shown again."""
        if scope not in SCOPES:
            raise InvalidInput(f"scope must be one of {list(SCOPES)}", scope=scope)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.sessions.begin() as s:
            cid = None
            if collection is not None:
                c = s.execute(select(Collection).where(Collection.name == collection)).scalar_one_or_none()
                if c is None:
                    raise NotFound(f"collection '{collection}' not found", collection=collection)
                cid = c.id
            row = ApiKey(
                prefix=key[:PREFIX_LEN], key_sha256=_sha256(key), scope=scope, collection_id=cid, name=name
            )
            s.add(row)
            s.flush()
            s.refresh(row)
            out = self._row(row, collection)
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

    def revoke(self, key_id_or_prefix: str) -> dict[str, Any]:
        with self.sessions.begin() as s:
            q = select(ApiKey)
            q = q.where(ApiKey.id == int(key_id_or_prefix)) if key_id_or_prefix.isdigit() else q.where(
                ApiKey.prefix == key_id_or_prefix[:PREFIX_LEN]
            )
            row = s.execute(q).scalar_one_or_none()
            if row is None:
                raise NotFound(f"no API key '{key_id_or_prefix}'")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
            s.flush()
            return self._row(row, row.collection.name if row.collection else None)

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise Unauthorized("missing X-API-Key header")
        if not key.startswith(KEY_PREFIX) or len(key) < PREFIX_LEN + 8:
            raise Unauthorized("invalid API key")
        with self.sessions() as s:
            row = s.execute(
                select(ApiKey).where(ApiKey.prefix == key[:PREFIX_LEN])
            ).scalar_one_or_none()
            # Compare even when no row matched, so timing does not tell whether a prefix exists.
            expected = row.key_sha256 if row is not None else "0" * 64
            ok = hmac.compare_digest(expected, _sha256(key))
            if row is None or not ok or row.revoked_at is not None:
                raise Unauthorized("invalid or revoked API key")
            principal = Principal(row.id, row.scope, row.collection.name if row.collection else None)
        self._touch(principal.key_id)
        return principal

    def _touch(self, key_id: int) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_used.get(key_id, -1e9) < _LAST_USED_EVERY_S:
                return
            self._last_used[key_id] = now
        with self.sessions.begin() as s:
            s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=datetime.now(UTC)))
