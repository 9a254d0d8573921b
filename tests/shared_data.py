"""Where the tests find the real weights and photos they run on (one place for every test).

``IDENTITY_TEST_DATA`` names the folder; unset, it is ``../shared`` beside the repository. It
holds ``models/`` (PROVENANCE.md, SHA256SUMS) and ``data/`` (README.md): real, licensed
material that is not part of the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("IDENTITY_TEST_DATA") or REPO.parent / "shared").expanduser()
DATA = SHARED_DIR / "data"
MODELS = SHARED_DIR / "models"


def missing_test_data() -> str | None:
    """One line saying what is missing and where to put it, or None when the data is there."""
    absent = [p.name for p in (DATA, MODELS) if not p.is_dir()]
    if not absent:
        return None
    return (
        f"test data not found: {SHARED_DIR} lacks {' and '.join(absent)}/ - put the shared folder "
        "(models/ and data/) beside the repository as ../shared, or set IDENTITY_TEST_DATA to it"
    )
