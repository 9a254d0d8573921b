"""Labelled faces for calibration: read a folder or CSV of (image, identity), embed the largest
face of each, and score all pairs into a ``CalibrationReport``; plus the ROC plot."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from identity.calibration import DEFAULT_FARS, CalibrationReport, evaluate, pair_scores, roc_curve
from identity.errors import InvalidInput
from identity.settings import Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def read_labelled(path: Path, csv_file: Path | None = None) -> list[tuple[Path, str]]:
    """(image path, identity) from a folder per identity, or a CSV of path,identity."""
    if csv_file is not None:
        if not csv_file.is_file():
            raise InvalidInput(f"labels CSV not found: {csv_file}")
        rows: list[tuple[Path, str]] = []
        try:
            with csv_file.open(newline="", encoding="utf-8-sig") as fh:
                for row in csv.reader(fh):
                    if len(row) < 2 or row[0].strip().lower() == "path":
                        continue
                    p = Path(row[0].strip())
                    rows.append(((p if p.is_absolute() else path / p), row[1].strip()))
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"labels CSV {csv_file} is not UTF-8 text (byte {exc.start}): save it as UTF-8",
                path=str(csv_file),
            ) from exc
        except csv.Error as exc:
            raise InvalidInput(f"labels CSV {csv_file} is not valid CSV: {exc}") from exc
        return rows
    if not path.is_dir():
        raise InvalidInput(f"not a folder of identities: {path}")
    return [
        (img, person.name)
        for person in sorted(p for p in path.iterdir() if p.is_dir())
        for img in sorted(person.rglob("*"))
        if img.suffix.lower() in IMAGE_SUFFIXES
    ]


def embed_labelled(
    items: Sequence[tuple[Path, str]], analyzer: Any, settings: Settings
) -> tuple[np.ndarray, list[str], list[str]]:
    """Embeddings of the largest face of each image; returns (embeddings, labels, failures)."""
    from identity.errors import IdentityError
    from identity.image import load_image

    embs, labels, failed = [], [], []
    for path, label in items:
        try:
            image = load_image(path, settings)
        except (IdentityError, OSError) as exc:
            failed.append(f"{path}: {exc}")
            continue
        faces = analyzer.analyze([image])
        if not len(faces):
            failed.append(f"{path}: no face found")
            continue
        faces = faces.largest()
        embs.append(faces.embeddings[0])
        labels.append(label)
    dim = embs[0].shape[0] if embs else 0
    return np.asarray(embs, np.float32).reshape(-1, dim), labels, failed


def calibrate_from_labelled(
    items: Sequence[tuple[Path, str]],
    analyzer: Any,
    settings: Settings,
    fars: Sequence[float] = DEFAULT_FARS,
    set_name: str = "unnamed",
) -> tuple[CalibrationReport, np.ndarray, np.ndarray]:
    """Report plus the genuine and impostor scores it came from (for plots)."""
    embs, labels, failed = embed_labelled(items, analyzer, settings)
    genuine, impostor = pair_scores(embs, labels)
    report = evaluate(
        analyzer.embedder_name,
        genuine,
        impostor,
        fars,
        len(labels),
        len(set(labels)),
        detector=analyzer.detector_name,
        set_name=set_name,
    )
    report.failed_images = failed
    return report, genuine, impostor


def save_roc_plot(genuine: np.ndarray, impostor: np.ndarray, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    far, tar, _ = roc_curve(genuine, impostor)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    positive = far > 0
    ax.semilogx(far[positive], tar[positive], lw=2)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_ylim(0, 1.01)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
