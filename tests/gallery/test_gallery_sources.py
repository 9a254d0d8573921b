"""Gallery sources: folders, archives and CSVs; hostile archive members reported, never written."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from identity.errors import InvalidInput
from identity.gallery.archives import safe_member_name
from identity.gallery.files import read_labels_csv
from identity.gallery.sources import open_source

from shared_data import SHARED_DIR

DATA = SHARED_DIR / "data"
TRAIN = DATA / "face_recognition" / "knn_examples" / "train"


def _snapshot(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


def test_safe_member_name() -> None:
    assert safe_member_name("a/b.jpg") == "a/b.jpg"
    assert safe_member_name("./a//b.jpg") == "a/b.jpg"
    for bad in ("../x.jpg", "a/../../x.jpg", "/etc/x.jpg", "..\\x.jpg", "C:/x.jpg", ""):
        assert safe_member_name(bad) is None, bad


def test_folder_labels_from_parent_folder() -> None:
    source = open_source(TRAIN, labels="folders")
    items = list(source)
    assert source.kind == "folder"
    assert len(items) == source.expected_count() == 9
    for item in items:
        assert item.label == Path(item.rel_path).parent.name
        assert item.path is not None and item.read(10**8)[:2] == b"\xff\xd8"  # JPEG magic
    assert {i.label for i in items} == {p.name for p in TRAIN.iterdir() if p.is_dir()}


def test_csv_source_reads_paths_relative_to_the_csv() -> None:
    source = open_source(DATA / "deepface" / "LABELS.csv")
    items = list(source)
    assert source.kind == "csv" and source.label_mode == "csv"
    assert len(items) == 61 and not source.problems
    assert all(i.label and i.label.startswith("person_") for i in items)


def test_labels_csv_for_a_folder(tmp_path: Path) -> None:
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "a.jpg").write_bytes((TRAIN / "biden" / "biden.jpg").read_bytes())
    (tmp_path / "g" / "b.jpg").write_bytes((TRAIN / "obama" / "obama.jpg").read_bytes())
    labels = tmp_path / "labels.csv"
    labels.write_text("path,identity\na.jpg,joe\n")
    source = open_source(tmp_path / "g", labels="csv", labels_csv=labels)
    got = {i.rel_path: i.label for i in source}
    assert got == {"a.jpg": "joe", "b.jpg": None}


def test_labels_csv_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InvalidInput):
        read_labels_csv(empty)
    short = tmp_path / "short.csv"
    short.write_text("path,identity\nonly_a_path.jpg\n")
    with pytest.raises(InvalidInput):
        read_labels_csv(short)
    with pytest.raises(InvalidInput):
        open_source(tmp_path / "missing")
    not_gallery = tmp_path / "notes.txt"
    not_gallery.write_text("hello")
    with pytest.raises(InvalidInput):
        open_source(not_gallery)


def test_zip_with_traversal_and_absolute_entries(tmp_path: Path) -> None:
    jpg = (TRAIN / "biden" / "biden.jpg").read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "gallery.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("alice/ok.jpg", jpg)
        zf.writestr("../x.jpg", jpg)
        zf.writestr("../../etc/evil.jpg", jpg)
        zf.writestr("/abs/evil.jpg", jpg)
        zf.writestr("alice/notes.txt", b"not an image")
        link = zipfile.ZipInfo("alice/link.jpg")
        link.external_attr = 0o120777 << 16  # a symlink member
        zf.writestr(link, "/etc/passwd")
    before = _snapshot(tmp_path)
    cwd = os.getcwd()
    os.chdir(work)  # a naive extractall would write ../x.jpg right into tmp_path
    try:
        source = open_source(archive, labels="folders")
        items = list(source)
    finally:
        os.chdir(cwd)
    assert [(i.rel_path, i.label) for i in items] == [("alice/ok.jpg", "alice")]
    assert items[0].data == jpg and items[0].path is None
    codes = {(p.rel_path, p.code) for p in source.problems}
    assert codes == {
        ("../x.jpg", "path_traversal"),
        ("../../etc/evil.jpg", "path_traversal"),
        ("/abs/evil.jpg", "absolute_path"),
        ("alice/link.jpg", "link"),
    }
    assert source.skipped_non_images == 1
    assert _snapshot(tmp_path) == before  # nothing was written anywhere


def test_zip_bomb_by_declared_size_is_refused_before_inflating(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/bomb.jpg", b"\0" * (3 * 1024 * 1024))  # compresses to a few KB
    assert archive.stat().st_size < 50_000
    source = open_source(archive, max_bytes=1024 * 1024)
    assert list(source) == []
    assert [(p.rel_path, p.code) for p in source.problems] == [("a/bomb.jpg", "too_large")]


def test_tar_with_symlink_hardlink_and_traversal(tmp_path: Path) -> None:
    jpg = (TRAIN / "obama" / "obama.jpg").read_bytes()
    archive = tmp_path / "gallery.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("bob/ok.jpg")
        info.size = len(jpg)
        tf.addfile(info, io.BytesIO(jpg))
        sym = tarfile.TarInfo("bob/sym.jpg")
        sym.type, sym.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(sym)
        hard = tarfile.TarInfo("bob/hard.jpg")
        hard.type, hard.linkname = tarfile.LNKTYPE, "../../outside.jpg"
        tf.addfile(hard)
        evil = tarfile.TarInfo("../escape.jpg")
        evil.size = len(jpg)
        tf.addfile(evil, io.BytesIO(jpg))
        dev = tarfile.TarInfo("bob/dev.jpg")
        dev.type = tarfile.CHRTYPE
        tf.addfile(dev)
    before = _snapshot(tmp_path)
    source = open_source(archive, labels="folders")
    items = list(source)
    assert source.kind == "tar"
    assert [(i.rel_path, i.label, i.data == jpg) for i in items] == [("bob/ok.jpg", "bob", True)]
    assert {(p.rel_path, p.code) for p in source.problems} == {
        ("bob/sym.jpg", "link"),
        ("bob/hard.jpg", "link"),
        ("../escape.jpg", "path_traversal"),
        ("bob/dev.jpg", "special_file"),
    }
    assert _snapshot(tmp_path) == before


def test_folder_symlink_outside_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"\xff\xd8secret")
    root = tmp_path / "gallery"
    (root / "p").mkdir(parents=True)
    (root / "p" / "a.jpg").write_bytes((TRAIN / "biden" / "biden.jpg").read_bytes())
    (root / "p" / "inside.jpg").symlink_to(root / "p" / "a.jpg")
    (root / "p" / "leak.jpg").symlink_to(outside)
    source = open_source(root, labels="folders")
    names = sorted(i.rel_path for i in source)
    assert names == ["p/a.jpg", "p/inside.jpg"]
    assert [(p.rel_path, p.code) for p in source.problems] == [("p/leak.jpg", "link_outside_root")]


def test_folder_labels_are_the_top_level_folder(tmp_path: Path) -> None:
    jpeg = (TRAIN / "biden" / "biden.jpg").read_bytes()
    for rel in ("alice/2019/party/a.jpg", "alice/b.jpg", "bob/2020/c.jpg", "loose.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(jpeg)
    got = {i.rel_path: i.label for i in open_source(tmp_path, labels="folders")}
    assert got == {
        "alice/2019/party/a.jpg": "alice",
        "alice/b.jpg": "alice",
        "bob/2020/c.jpg": "bob",
        "loose.jpg": None,  # at the root: no person folder, reported as no_label by the job
    }
    archive = tmp_path / "g.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("carol/2018/x.jpg", jpeg)
    assert [i.label for i in open_source(archive, labels="folders")] == ["carol"]


def test_csv_rows_are_confined_to_the_allowed_roots(tmp_path: Path) -> None:
    """An API CSV may only name files inside the gallery roots: absolute paths, ``../`` and
    symlinks out of them are reported and never opened."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    jpeg = (TRAIN / "obama" / "obama.jpg").read_bytes()
    (root / "sub" / "in.jpg").write_bytes(jpeg)
    (outside / "secret.jpg").write_bytes(jpeg)
    os.symlink(outside / "secret.jpg", root / "sub" / "link.jpg")
    csv_path = root / "sub" / "labels.csv"
    csv_path.write_text(
        "path,identity\n"
        "in.jpg,alice\n"
        f"{outside / 'secret.jpg'},mallory\n"
        "../../outside/secret.jpg,mallory\n"
        "link.jpg,mallory\n"
        f"{TRAIN / 'biden' / 'biden.jpg'},joe\n"
        "../../nothing-here.jpg,nobody\n"
    )
    source = open_source(csv_path, allowed_roots=[root])
    items = list(source)
    assert [(i.rel_path, i.label) for i in items] == [("in.jpg", "alice")]
    assert items[0].path == (root / "sub" / "in.jpg").resolve()
    assert {p.rel_path: p.code for p in source.problems} == {
        str(outside / "secret.jpg"): "outside_roots",
        "../../outside/secret.jpg": "outside_roots",
        "link.jpg": "outside_roots",
        str(TRAIN / "biden" / "biden.jpg"): "outside_roots",
        "../../nothing-here.jpg": "outside_roots",  # outside even though missing: no probing
    }
    # without roots (the CLI) the same CSV reads every file it names
    unconfined = list(open_source(csv_path))
    assert {i.label for i in unconfined} == {"alice", "mallory", "joe"}
