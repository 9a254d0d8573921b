"""Exactly one installed distribution provides ``cv2``, and ``cv2`` is imported from its files.

Several OpenCV wheels (opencv-python, -headless, -contrib-python...) all write the same ``cv2/``
folder; with more than one installed, which build answers depends on install order, and removing
one deletes files the others still list. ``scripts/one-opencv.sh`` (run by every install path)
leaves only the pinned one; this test catches an environment where something pulled another back.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import cv2

PINNED = "opencv-contrib-python-headless"


def _cv2_providers() -> dict[str, md.Distribution]:
    found: dict[str, md.Distribution] = {}
    for dist in md.distributions():
        top = (dist.read_text("top_level.txt") or "").split()
        files = dist.files or []
        if "cv2" in top or any(f.parts[:1] == ("cv2",) for f in files):
            found[dist.metadata["Name"].lower()] = dist
    return found


def test_one_distribution_provides_cv2() -> None:
    providers = _cv2_providers()
    assert list(providers) == [PINNED], (
        f"cv2 provided by {sorted(providers)}; run scripts/one-opencv.sh on this environment"
    )


def test_cv2_is_imported_from_that_distribution() -> None:
    dist = _cv2_providers()[PINNED]
    module = Path(cv2.__file__).resolve()
    owned = {Path(str(dist.locate_file(f))).resolve() for f in dist.files or []}
    assert module in owned, f"{module} is not one of {PINNED}'s files"
    assert cv2.__version__ == dist.version.rsplit(".", 1)[0]


def test_the_build_is_headless_and_has_what_the_pipeline_calls() -> None:
    info = cv2.getBuildInformation()
    gui = info.split("GUI:", 1)[1].splitlines()[0].strip() if "GUI:" in info else "NONE"
    assert gui in ("NONE", ""), f"GUI backend {gui!r} in a server build"
    # the person detector (identity.body.detect) and the YuNet runner
    assert hasattr(cv2, "HOGDescriptor") and hasattr(cv2, "FaceDetectorYN")
