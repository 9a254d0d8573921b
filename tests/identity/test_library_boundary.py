"""The library stands alone: importing every ``identity`` module loads neither the service nor
the web and database stacks it is built on (so a notebook or batch job never pays for them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, pkgutil, sys
import identity
names = sorted(m.name for m in pkgutil.walk_packages(identity.__path__, "identity."))
for name in names:
    importlib.import_module(name)
print("walked", len(names))
print("loaded", *sorted(m for m in ("services", "fastapi", "sqlalchemy", "starlette") if m in sys.modules))
"""


def test_identity_imports_no_service_web_or_database_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(
        line.split(" ", 1) if " " in line else (line, "") for line in proc.stdout.splitlines()
    )
    assert int(lines["walked"]) > 30  # every module was walked, not an empty package
    assert lines["loaded"] == "", f"identity modules pulled in: {lines['loaded']}"
