"""The service's data keys (``data_keys``): one per collection, wrapped by the KEK.

``DataKeys`` seals and opens the biometric bytes the service stores (``identity.sealing`` does
the cryptography):

- ``seal(collection_id, plaintext, purpose)`` -> ``(key_id, blob)``: under the collection's data
  key, made (and wrapped by the current KEK) on first use.
- ``open(blob, purpose)``, ``embedding(blob, key_id, dim)``: the plaintext; a row whose
  ``key_id`` is NULL is plaintext from before migration 0320 and is returned as is until
  ``seal_legacy_rows`` (run at start) has sealed it.
- ``rotate_kek(new_kek)``: re-wrap every data key under a new KEK (the data is not touched).

Unwrapped data keys are cached in process memory for the life of the process, so a request never
unwraps a key twice; the FAISS indexes hold plaintext vectors in memory too (built once from
Postgres). Nothing else keeps plaintext: rows, thumbnail files and index snapshots are sealed.

Rotation beside a running service: data-key creation takes a shared advisory lock and reads the
KEK file afresh; ``rotate_kek`` holds the lock exclusively while it re-wraps, so no key is wrapped
by the old KEK after the rotation. A process meeting a data key wrapped by a KEK it does not know
reloads its keyring once (the rotation's ``<kek file>.next``, or the installed new file).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import Engine, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from identity.sealing import (
    Keyring,
    SealingError,
    load_keyring,
    new_key,
    open_sealed,
    seal,
    sealed_key_id,
    write_private,
)
from identity.settings import Settings
from services.tables import DataKey

log = logging.getLogger(__name__)

EMBEDDING = b"embedding"
THUMBNAIL = b"thumbnail"
CROP = b"source crop"
SNAPSHOT = b"index snapshot"
# Advisory lock between data-key creation (shared) and KEK rotation (exclusive).
_ROTATION_LOCK = 727002


class DataKeys:
    """Per-collection data keys, unwrapped once per process and cached (thread-safe)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._keyring = load_keyring(settings)  # creates the embedded default KEK file
        self._keys: dict[int, bytes] = {}  # key id -> data key
        self._collection_key: dict[int, int] = {}  # collection id -> key id
        self._lock = threading.Lock()

    # keys -----------------------------------------------------------------------------------
    def _unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
        if kek_id not in self._keyring.ids:
            self._keyring = load_keyring(self.settings)  # a rotation may have run meanwhile
        return self._keyring.unwrap(kek_id, wrapped)

    def key(self, key_id: int) -> bytes:
        """The data key ``key_id`` (SealingError if its row is gone: the collection was deleted)."""
        with self._lock:
            dk = self._keys.get(key_id)
            if dk is not None:
                return dk
            with self.engine.connect() as conn:
                row = conn.execute(
                    text("SELECT kek_id, wrapped FROM data_keys WHERE id = :k"), {"k": key_id}
                ).first()
            if row is None:
                raise SealingError(f"data key {key_id} does not exist", key_id=key_id)
            dk = self._keys[key_id] = self._unwrap(row[0], bytes(row[1]))
            return dk

    def collection_key(self, collection_id: int) -> int:
        """The id of the collection's data key, made on first use."""
        with self._lock:
            kid = self._collection_key.get(collection_id)
        if kid is not None:
            return kid
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": _ROTATION_LOCK})
            found = conn.execute(
                text("SELECT id FROM data_keys WHERE collection_id = :c"), {"c": collection_id}
            ).scalar()
            if found is None:
                keyring = load_keyring(self.settings)  # afresh: the current KEK may be new
                kek_id, wrapped = keyring.wrap(new_key())
                conn.execute(
                    pg_insert(DataKey)
                    .values(collection_id=collection_id, kek_id=kek_id, wrapped=wrapped)
                    .on_conflict_do_nothing(index_elements=["collection_id"])
                )
                found = conn.execute(
                    text("SELECT id FROM data_keys WHERE collection_id = :c"), {"c": collection_id}
                ).scalar_one()
        with self._lock:
            self._collection_key[collection_id] = int(found)
        return int(found)

    # data -----------------------------------------------------------------------------------
    def seal(self, collection_id: int, plaintext: bytes, purpose: bytes) -> tuple[int, bytes]:
        kid = self.collection_key(collection_id)
        return kid, seal(self.key(kid), kid, plaintext, purpose)

    def open(self, blob: bytes, purpose: bytes) -> bytes:
        return open_sealed(self.key(sealed_key_id(blob)), bytes(blob), purpose)

    def open_row(self, blob: bytes, key_id: int | None, purpose: bytes) -> bytes:
        """A row's column: sealed when ``key_id`` is set, plaintext from before 0320 otherwise."""
        return bytes(blob) if key_id is None else self.open(blob, purpose)

    def embedding(self, blob: bytes, key_id: int | None, dim: int) -> np.ndarray:
        """A row's embedding as float32 (dim,), from its sealed (or legacy plaintext) bytes."""
        return np.frombuffer(self.open_row(blob, key_id, EMBEDDING), dtype="<f4", count=dim)

    def sealer(self, collection_id: int, purpose: bytes) -> Callable[[bytes], bytes]:
        """``seal`` for one collection and purpose, as a plain function (index snapshots)."""
        return lambda data: self.seal(collection_id, data, purpose)[1]

    def opener(self, purpose: bytes) -> Callable[[bytes], bytes]:
        return lambda blob: self.open(blob, purpose)

    # rotation -------------------------------------------------------------------------------
    def rotate_kek(
        self, new_kek: bytes, install: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Re-wrap every data key under ``new_kek``; returns counts and the old/new KEK ids.

        Unwraps with every KEK the settings accept (current, previous, a pending ``.next``).
        ``install`` (making ``new_kek`` the configured one, e.g. renaming the ``.next`` file) runs
        after the commit and before the lock is released, so no data key can be wrapped by the
        old KEK afterwards.
        """
        old = load_keyring(self.settings, create=False)
        new = Keyring(new_kek)
        with self.engine.connect() as lock_conn:
            lock_conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _ROTATION_LOCK})
            try:
                with self.engine.begin() as conn:
                    rows = conn.execute(
                        text("SELECT id, kek_id, wrapped FROM data_keys ORDER BY id FOR UPDATE")
                    ).all()
                    for key_id, kek_id, wrapped in rows:
                        if kek_id == new.current_id:
                            continue
                        new_id, new_wrapped = new.wrap(old.unwrap(kek_id, bytes(wrapped)))
                        conn.execute(
                            text(
                                "UPDATE data_keys SET kek_id = :n, wrapped = :w, rewrapped_at = now() "
                                "WHERE id = :k"
                            ),
                            {"n": new_id, "w": new_wrapped, "k": key_id},
                        )
                if install is not None:
                    install()
            finally:
                lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ROTATION_LOCK})
        self._keyring = Keyring(new_kek, [])
        return {
            "old_kek_id": old.current_id,
            "new_kek_id": new.current_id,
            "data_keys": len(rows),
        }


# --- rows from before migration 0320 -----------------------------------------------------------
_LEGACY_BATCH = 500


def seal_legacy_rows(keys: DataKeys, settings: Settings) -> dict[str, int]:
    """Seal every plaintext biometric row (``key_id`` NULL) and thumbnail file; returns counts.

    Runs at service start and in ``identity db upgrade``: a migration cannot know the KEK. Each
    batch is one transaction; a plaintext thumbnail file is replaced by its sealed twin and
    deleted after the commit. Plain SQL (not the ORM models) so this module needs no gallery or
    body import. The caller VACUUMs when anything was sealed: the plaintext row versions stay in
    dead tuples until then.
    """
    counts: dict[str, int] = {}
    with keys.engine.connect() as conn:
        present = set(
            conn.execute(
                text(
                    "SELECT table_name FROM information_schema.columns WHERE column_name = 'key_id'"
                )
            ).scalars()
        )
    for table, blobs in (
        ("face_templates", ("embedding",)),
        ("gallery_faces", ("embedding", "thumbnail_jpeg")),
        ("body_templates", ("embedding",)),
    ):
        if table not in present:
            continue
        counts[table] = _seal_table(keys, settings, table, blobs)
    return {t: n for t, n in counts.items() if n}


def _seal_table(keys: DataKeys, settings: Settings, table: str, blobs: tuple[str, ...]) -> int:
    thumbs = table == "face_templates"
    cols = ", ".join(("id", "collection_id", *blobs, *(["thumbnail"] if thumbs else [])))
    done = 0
    while True:
        dropped: list[Any] = []
        with keys.engine.begin() as conn:
            rows = conn.execute(
                text(
                    f"SELECT {cols} FROM {table} WHERE key_id IS NULL ORDER BY id "
                    f"LIMIT {_LEGACY_BATCH} FOR UPDATE"
                )
            ).all()
            if not rows:
                return done
            for row in rows:
                rid, cid = row[0], row[1]
                values: dict[str, Any] = {"id": rid}
                for name, blob in zip(blobs, row[2 : 2 + len(blobs)], strict=True):
                    purpose = EMBEDDING if name == "embedding" else THUMBNAIL
                    values[name] = None if blob is None else keys.seal(cid, bytes(blob), purpose)[1]
                values["key_id"] = keys.collection_key(cid)
                sets = ", ".join(f"{n} = :{n}" for n in (*blobs, "key_id"))
                if thumbs and row[-1] and not str(row[-1]).endswith(".sealed"):
                    old = settings.thumbnails_dir / str(cid) / str(row[-1])
                    if old.is_file():
                        new = old.with_suffix(".sealed")
                        write_private(new, keys.seal(cid, old.read_bytes(), THUMBNAIL)[1])
                        dropped.append(old)
                        values["thumbnail"] = new.name
                    else:
                        values["thumbnail"] = None
                    sets += ", thumbnail = :thumbnail"
                conn.execute(text(f"UPDATE {table} SET {sets} WHERE id = :id"), values)
            done += len(rows)
        for path in dropped:
            path.unlink(missing_ok=True)


def tighten_data_dirs(settings: Settings) -> None:
    """Folders holding biometric files 0700 and their files 0600 (deployments made before
    sealing wrote them 0755/0644)."""
    from identity.sealing import private_dir

    for folder in (settings.keys_dir, settings.thumbnails_dir, settings.index_dir):
        if not folder.exists():
            continue
        private_dir(folder)
        for path in folder.rglob("*"):
            if path.is_dir():
                private_dir(path)
            elif path.is_file() and path.stat().st_mode & 0o077:
                path.chmod(0o600)
