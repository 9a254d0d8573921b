"""A clone without the shared test data stops with one line saying what is missing and where to
put it, not a FileNotFoundError traceback per test module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_missing_test_data_is_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "IDENTITY_TEST_DATA": str(tmp_path / "nowhere")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/identity/test_align.py",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out
    assert "Traceback" not in out and "FileNotFoundError" not in out
    lines = [line for line in out.splitlines() if "test data not found" in line]
    assert (
        len(lines) == 1
        and "IDENTITY_TEST_DATA" in lines[0]
        and str(tmp_path / "nowhere") in lines[0]
    )
