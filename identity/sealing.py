"""Biometric data sealed at rest: envelope encryption with AES-256-GCM.

Two layers (the usual envelope):

- a **key-encryption key** (KEK, 32 bytes) lives outside the database: ``IDENTITY_KEK`` (base64)
  or a file (``IDENTITY_KEK_FILE``; unset = ``data_dir/keys/kek``, created 0600 in a 0700 folder
  on first start). It only ever wraps data keys. Its id (``kek_id``) is a digest of the key, so a
  wrapped data key names the KEK that opens it without revealing it.
- **data keys** (32 random bytes each) seal the data: embeddings, face crops and index snapshots.
  The service keeps them wrapped by the KEK in its database (one per collection); this module
  only wraps, unwraps, seals and opens.

A sealed blob is self-describing: ``MAGIC | key id (8 bytes, big-endian) | nonce (12) |
ciphertext+tag``. The magic, key id and a purpose label (``b"embedding"``, ``b"thumbnail"``...) are
authenticated data, so a blob cannot be passed off under another key id or as another kind of
data. Nonces are random: at 2^32 blobs per key the collision chance stays below 2^-32.

Rotating the KEK re-wraps data keys only (a few rows), never the data, so it runs beside a live
service: during a rotation both KEKs are readable (``Keyring`` holds the current one and any
``previous`` ones; a pending ``<kek file>.next`` counts as readable too).

Files: ``write_private`` writes 0600 files atomically in 0700 folders.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import struct
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from identity.errors import SealingError
from identity.settings import Settings

MAGIC = b"IDS\x01"
KEY_BYTES = 32
_NONCE = 12
_HEADER = len(MAGIC) + 8 + _NONCE
_WRAP_AAD = b"identity data key"


def kek_id(kek: bytes) -> str:
    """A public name for a KEK: 16 hex chars of a domain-separated SHA-256 (not the key)."""
    return hashlib.sha256(b"identity kek id\x00" + kek).hexdigest()[:16]


def decode_key(text: str, where: str) -> bytes:
    """A base64 (or 64-hex-char) 32-byte key; SealingError naming ``where`` otherwise."""
    text = text.strip()
    try:
        raw = (
            bytes.fromhex(text)
            if len(text) == 2 * KEY_BYTES
            else base64.b64decode(text, validate=True)
        )
    except (ValueError, binascii.Error):
        raise SealingError(f"{where}: not base64 or hex") from None
    if len(raw) != KEY_BYTES:
        raise SealingError(f"{where}: a KEK is {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode() + "\n"


# --- files ------------------------------------------------------------------------------------
def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents 0700; tighten ``path`` if it exists wider.

    Parents that already exist keep their modes (``data_dir`` holds the embedded Postgres,
    which its own system user must be able to reach)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir(mode=0o700, exist_ok=True)
        os.chmod(p, 0o700)  # mkdir's mode is masked by the umask
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename), 0600 in a 0700 folder."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- the KEK ----------------------------------------------------------------------------------
def kek_path(settings: Settings) -> Path:
    return settings.kek_file or settings.keys_dir / "kek"


def pending_kek_path(settings: Settings) -> Path:
    """Where ``identity keys rotate-kek`` puts the new KEK while it re-wraps the data keys."""
    path = kek_path(settings)
    return path.with_name(path.name + ".next")


class Keyring:
    """The current KEK (wraps new data keys) and other KEKs still accepted for unwrapping."""

    def __init__(self, current: bytes, others: Iterable[bytes] = ()) -> None:
        self.current_id = kek_id(current)
        self._keks = {kek_id(k): k for k in others}
        self._keks[self.current_id] = current

    @property
    def ids(self) -> set[str]:
        return set(self._keks)

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """(kek id, nonce | wrapped key) under the current KEK."""
        nonce = secrets.token_bytes(_NONCE)
        aad = _WRAP_AAD + self.current_id.encode()
        return self.current_id, nonce + AESGCM(self._keks[self.current_id]).encrypt(
            nonce, data_key, aad
        )

    def unwrap(self, kid: str, wrapped: bytes) -> bytes:
        kek = self._keks.get(kid)
        if kek is None:
            raise SealingError(
                f"data key wrapped by KEK {kid}, which is not configured "
                "(IDENTITY_KEK / IDENTITY_KEK_FILE / IDENTITY_KEK_PREVIOUS)",
                kek_id=kid,
            )
        try:
            return AESGCM(kek).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _WRAP_AAD + kid.encode())
        except InvalidTag:
            raise SealingError(
                f"data key failed authentication under KEK {kid}", kek_id=kid
            ) from None


def load_keyring(settings: Settings, create: bool = True) -> Keyring:
    """The keyring the settings name: ``kek`` (environment) wins over the KEK file.

    With neither ``kek`` nor an explicit ``kek_file``, the default file in ``data_dir/keys`` is
    created (0600) when missing and ``create`` is true: the embedded default works out of the box,
    with the KEK on the same disk as the data (docs/security.md says what that protects).
    """
    others = [
        decode_key(k.get_secret_value(), "IDENTITY_KEK_PREVIOUS") for k in settings.kek_previous
    ]
    pending = pending_kek_path(settings)
    if pending.is_file():
        others.append(decode_key(pending.read_text(), str(pending)))
    if settings.kek is not None:
        return Keyring(decode_key(settings.kek.get_secret_value(), "IDENTITY_KEK"), others)
    path = kek_path(settings)
    if not path.is_file():
        if settings.kek_file is not None or not create:
            raise SealingError(
                f"no KEK: {path} does not exist (set IDENTITY_KEK or IDENTITY_KEK_FILE)"
            )
        write_private(path, encode_key(new_key()).encode())
    return Keyring(decode_key(path.read_text(), str(path)), others)


# --- sealing data -----------------------------------------------------------------------------
@lru_cache(maxsize=1024)
def _aead(data_key: bytes) -> AESGCM:
    # Building the cipher costs more than sealing a 2 KB embedding; the keys are in memory anyway.
    return AESGCM(data_key)


def _aad(key_id: int, purpose: bytes) -> bytes:
    return MAGIC + struct.pack(">q", key_id) + purpose


def seal(data_key: bytes, key_id: int, plaintext: bytes, purpose: bytes) -> bytes:
    """``plaintext`` sealed under data key ``key_id`` for ``purpose`` (see the module docstring)."""
    nonce = secrets.token_bytes(_NONCE)
    ct = _aead(data_key).encrypt(nonce, plaintext, _aad(key_id, purpose))
    return MAGIC + struct.pack(">q", key_id) + nonce + ct


def is_sealed(blob: bytes) -> bool:
    return len(blob) > _HEADER and blob[: len(MAGIC)] == MAGIC


def sealed_key_id(blob: bytes) -> int:
    """The data key id a sealed blob names."""
    if not is_sealed(blob):
        raise SealingError("not a sealed blob")
    return int(struct.unpack_from(">q", blob, len(MAGIC))[0])


def open_sealed(data_key: bytes, blob: bytes, purpose: bytes) -> bytes:
    """The plaintext of a blob from ``seal``; SealingError if it was altered or is another kind."""
    key_id = sealed_key_id(blob)
    nonce = blob[len(MAGIC) + 8 : _HEADER]
    try:
        return _aead(data_key).decrypt(nonce, blob[_HEADER:], _aad(key_id, purpose))
    except InvalidTag:
        raise SealingError(
            f"sealed {purpose.decode()} failed authentication (wrong key or altered)", key_id=key_id
        ) from None
