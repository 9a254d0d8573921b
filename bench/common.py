"""Shared pieces of the benchmarks: where the real data is, its labels, and table printing."""

from __future__ import annotations

import csv
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
MODELS = SHARED / "models"
DEEPFACE = DATA / "deepface"
FACE_RECOGNITION = DATA / "face_recognition"


@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    same: bool


def deepface_pairs() -> list[Pair]:
    """deepface's 520 labelled pairs (140 genuine) over its 61 photos of 13 people."""
    with (DEEPFACE / "PAIRS.csv").open(newline="") as fh:
        return [
            Pair(DEEPFACE / r["path_a"], DEEPFACE / r["path_b"], r["same"] == "1")
            for r in csv.DictReader(fh)
        ]


def deepface_labels() -> dict[Path, str]:
    with (DEEPFACE / "LABELS.csv").open(newline="") as fh:
        return {DEEPFACE / r["path"]: r["identity"] for r in csv.DictReader(fh)}


def face_recognition_people() -> dict[Path, str]:
    """Single-face photos of face_recognition's five people (its README states who is where)."""
    people: dict[Path, str] = {}
    train = FACE_RECOGNITION / "knn_examples" / "train"
    for person in sorted(train.iterdir()):
        for img in sorted(person.iterdir()):
            people[img] = person.name
    test = FACE_RECOGNITION / "knn_examples" / "test"
    people[test / "alex_lacamoire1.jpg"] = "alex_lacamoire"
    people[test / "johnsnow_test1.jpg"] = "kit_harington"
    people[test / "obama1.jpg"] = "obama"
    for name in (
        "obama-240p.jpg",
        "obama-480p.jpg",
        "obama-720p.jpg",
        "obama-1080p.jpg",
        "obama_small.jpg",
    ):
        people[FACE_RECOGNITION / name] = "obama"
    tests = FACE_RECOGNITION / "tests" / "test_images"
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg"):
        people[tests / name] = "obama"
    people[tests / "biden.jpg"] = "biden"
    return people


def all_pairs(labels: dict[Path, str]) -> list[Pair]:
    paths = sorted(labels)
    return [Pair(a, b, labels[a] == labels[b]) for i, a in enumerate(paths) for b in paths[i + 1 :]]


def print_table(headers: list[str], rows: list[list[object]], title: str = "") -> None:
    """A GitHub-markdown table, so it pastes into the README as is."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    if title:
        print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + " |")


def command_line() -> str:
    """How this run was started, printed under each table."""
    return "python " + shlex.join(sys.argv)
