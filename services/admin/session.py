"""The dashboard's sign-in session: a signed, http-only cookie, and CSRF tokens for its forms.

The cookie holds the API key's row id and a random CSRF token, signed with itsdangerous (HMAC),
never the API key itself: a leaked cookie expires, and revoking the key ends the session on the
next request because every request re-reads the key row. The secret comes from
``settings.session_secret`` or is generated once into ``data_dir/session_secret`` (mode 0600) so
sessions survive restarts without anyone having to configure anything.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from identity.settings import Settings

COOKIE_NAME = "identity_admin"
# A working day: an operator signs in in the morning; a cookie copied off a machine dies tonight.
SESSION_MAX_AGE_S = 8 * 3600
_SALT = "identity-admin-session"


@dataclass(frozen=True)
class AdminSession:
    key_id: int
    key_prefix: str
    csrf: str


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

    def new(self, key_id: int, key_prefix: str) -> tuple[AdminSession, str]:
        session = AdminSession(key_id=key_id, key_prefix=key_prefix, csrf=secrets.token_urlsafe(24))
        token = self._serializer.dumps({"k": key_id, "p": key_prefix, "c": session.csrf})
        return session, token

    def read(self, token: str | None) -> AdminSession | None:
        if not token:
            return None
        try:
            data = self._serializer.loads(token, max_age=self.max_age_s)
        except (BadSignature, SignatureExpired):
            return None
        try:
            return AdminSession(key_id=int(data["k"]), key_prefix=str(data["p"]), csrf=str(data["c"]))
        except (KeyError, TypeError, ValueError):
            return None


def csrf_ok(session: AdminSession, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(session.csrf, str(submitted))
