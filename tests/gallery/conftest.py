"""Fixtures for the gallery tests: the session's real Postgres and models (tests/conftest.py),
galleries built from the shared photos, and a corpus of bad files generated here."""

from __future__ import annotations

import io
import shutil
import tarfile
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from gallery_helpers import OBAMA_480P, TRAIN, write_bad_files, write_blurred


@pytest.fixture(scope="session")
def gallery(store):  # type: ignore[no-untyped-def]
    from services.gallery import GalleryStore

    return GalleryStore(store, store.engine)


@pytest.fixture
def new_collection(store) -> Callable[[], str]:  # type: ignore[no-untyped-def]
    def make() -> str:
        name = "g-" + uuid.uuid4().hex[:10]
        store.create_collection(name)
        return name

    return make


@pytest.fixture(scope="session")
def labelled_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """face_recognition's train set (5 people, 9 photos) plus the bad-file corpus inside one
    person's folder, and photos nested below the person folders (labelled by the top-level
    folder): a clear one and two blurred ones the quality gate refuses with different numbers."""
    root = tmp_path_factory.mktemp("labelled") / "gallery"
    shutil.copytree(TRAIN, root)
    write_bad_files(root / "biden")
    (root / "obama" / "2019").mkdir()
    shutil.copy(OBAMA_480P, root / "obama" / "2019" / "obama-480p.jpg")
    write_blurred(TRAIN / "obama" / "obama.jpg", root / "obama" / "2019" / "blurred.jpg")
    write_blurred(
        TRAIN / "kit_harington" / "john2.jpeg",
        root / "kit_harington" / "old" / "deep" / "blurred.jpg",
    )
    (root / "README.txt").write_text("not an image, skipped without complaint")
    return root


@pytest.fixture(scope="session")
def hostile_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("hostile")
    archive = base / "inner" / "gallery.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for person in ("obama", "biden"):
            for p in sorted((TRAIN / person).iterdir()):
                zf.write(p, f"{person}/{p.name}")
        zf.writestr("../x.jpg", (TRAIN / "obama" / "obama.jpg").read_bytes())
        zf.writestr("/tmp/abs.jpg", (TRAIN / "obama" / "obama.jpg").read_bytes())
        zf.writestr("obama/text.jpg", b"plain text pretending to be a JPEG")
    return archive


@pytest.fixture(scope="session")
def symlink_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tar")
    archive = base / "gallery.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for p in sorted((TRAIN / "rose_leslie").iterdir()):
            tf.add(p, f"rose_leslie/{p.name}")
        sym = tarfile.TarInfo("rose_leslie/passwd.jpg")
        sym.type, sym.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(sym)
        evil = tarfile.TarInfo("../../escape.jpg")
        data = (TRAIN / "biden" / "biden.jpg").read_bytes()
        evil.size = len(data)
        tf.addfile(evil, io.BytesIO(data))
    return archive
