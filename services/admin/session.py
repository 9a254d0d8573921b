"""The dashboard's sign-in session: a signed, http-only cookie, a server-side session row, and
CSRF tokens for its forms.

The cookie holds a random session token and a random CSRF token, signed with itsdangerous
(HMAC), never the API key. Postgres keeps the session (``admin_sessions``: the token's sha256,
the key, expiry, end) and every dashboard request re-reads it with its key: sign-out ends the
session, revoking the key ends all its sessions, and a copied cookie is refused from then on by
every worker process. The signing secret comes from ``settings.session_secret`` or is generated
once into ``data_dir/session_secret`` (mode 0600) so sessions survive restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from identity.settings import Settings
from services.tables import ApiKey, DashboardSession

COOKIE_NAME = "identity_admin"
# A working day: an operator signs in in the morning; a cookie copied off a machine dies tonight.
SESSION_MAX_AGE_S = 8 * 3600
_SALT = "identity-admin-session"


@dataclass(frozen=True)
class AdminSession:
    token: str  # the server-side session's id; only its sha256 is stored
    csrf: str


@dataclass(frozen=True)
class KeyInfo:
    id: int
    prefix: str
    scope: str
    collection: str | None
    name: str


def load_or_create_secret(settings: Settings) -> str:
    if settings.session_secret:
        return settings.session_secret
    path = Path(settings.data_dir) / "session_secret"
    if path.is_file():
        secret = path.read_text().strip()
        if secret:
            return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # O_EXCL: two workers starting together must agree on one secret, so the loser re-reads.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    return secret


class SessionCodec:
    def __init__(self, secret: str, max_age_s: int = SESSION_MAX_AGE_S) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.max_age_s = max_age_s

    def new(self) -> tuple[AdminSession, str]:
        """A fresh session and its signed cookie value (``start_session`` stores it)."""
        session = AdminSession(token=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(24))
        return session, self._serializer.dumps({"s": session.token, "c": session.csrf})

    def read(self, cookie: str | None) -> AdminSession | None:
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age_s)
        except (BadSignature, SignatureExpired):
            return None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("s"), str)
            or not isinstance(data.get("c"), str)
        ):
            return None  # includes cookies of the older format, which named the key instead
        return AdminSession(token=data["s"], csrf=data["c"])


def _token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(
    sessions: sessionmaker[Session], session: AdminSession, key_id: int, max_age_s: int
) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as s:
        # Housekeeping on sign-in, the only time rows are added: drop sessions long over.
        s.execute(
            delete(DashboardSession).where(DashboardSession.expires_at < now - timedelta(days=1))
        )
        s.add(
            DashboardSession(
                token_sha256=_token_sha256(session.token),
                key_id=key_id,
                expires_at=now + timedelta(seconds=max_age_s),
            )
        )


def session_key(sessions: sessionmaker[Session], session: AdminSession) -> KeyInfo | None:
    """The key behind a live session; None once the session ended or expired, or the key was
    revoked or deleted."""
    with sessions() as s:
        row = s.execute(
            select(ApiKey)
            .join(DashboardSession, DashboardSession.key_id == ApiKey.id)
            .where(
                DashboardSession.token_sha256 == _token_sha256(session.token),
                DashboardSession.ended_at.is_(None),
                DashboardSession.expires_at > datetime.now(UTC),
                ApiKey.revoked_at.is_(None),
            )
        ).scalar_one_or_none()
        if row is None:
            return None
        return KeyInfo(
            id=row.id,
            prefix=row.prefix,
            scope=row.scope,
            collection=row.collection.name if row.collection is not None else None,
            name=row.name,
        )


def end_session(sessions: sessionmaker[Session], session: AdminSession) -> None:
    with sessions.begin() as s:
        s.execute(
            update(DashboardSession)
            .where(
                DashboardSession.token_sha256 == _token_sha256(session.token),
                DashboardSession.ended_at.is_(None),
            )
            .values(ended_at=datetime.now(UTC))
        )


def csrf_ok(session: AdminSession, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(session.csrf, str(submitted))
