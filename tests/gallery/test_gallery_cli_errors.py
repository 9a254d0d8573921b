"""`identity ingest` on bad input: one `error:` line on stderr, a non-zero exit, no traceback, and
nothing written to the store (checked before the database is opened)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app

from gallery_helpers import TRAIN

REPO = Path(__file__).resolve().parents[2]
# Port 1 refuses at once: a command that reached the database would fail with a database error.
NO_DB = "postgresql+psycopg://u:p@127.0.0.1:1/x"


@pytest.fixture()
def runner(tmp_path, monkeypatch) -> CliRunner:
    monkeypatch.setenv("IDENTITY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", NO_DB)
    return CliRunner()


def one_error_line(result, needle: str) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code != 0, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], result.stderr
    assert "Traceback" not in result.output
    return errors[0]


def test_missing_gallery_fails_before_the_database(runner, tmp_path) -> None:
    result = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "-c", "c", "--no-progress"])
    line = one_error_line(result, "does not exist")
    assert "database" not in line


def test_missing_gallery_creates_no_collection(store, pg_url, tmp_path, monkeypatch) -> None:
    from services.errors import NotFound

    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("IDENTITY_DATA_DIR", str(tmp_path / "data"))
    name = "never-" + uuid.uuid4().hex[:8]
    result = CliRunner().invoke(
        app, ["ingest", str(tmp_path / "nope"), "-c", name, "--no-progress"]
    )
    one_error_line(result, "does not exist")
    with pytest.raises(NotFound):
        store.collection_id(name)


def test_missing_labels_csv_fails_before_the_database(runner, tmp_path) -> None:
    result = runner.invoke(
        app,
        [
            "ingest",
            str(TRAIN),
            "-c",
            "c",
            "--labels",
            "csv",
            str(tmp_path / "labels.csv"),
            "--no-progress",
        ],
    )
    one_error_line(result, "labels.csv")


def test_engine_ray_without_ray_names_the_extra(runner, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra sees
    result = runner.invoke(
        app, ["ingest", str(TRAIN), "-c", "c", "--engine", "ray", "--no-progress"]
    )
    one_error_line(result, "identity-platform[ray]")


def test_hdbscan_without_its_packages_names_the_extra(runner, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "hdbscan", None)
    result = runner.invoke(
        app, ["ingest", str(TRAIN), "-c", "c", "--cluster-method", "hdbscan", "--no-progress"]
    )
    one_error_line(result, "identity-platform[dev]")


@pytest.mark.parametrize("option", ["--workers", "--batch-size"])
def test_counts_below_one_are_refused(runner, option) -> None:
    result = runner.invoke(app, ["ingest", str(TRAIN), "-c", "c", option, "0"])
    one_error_line(result, option)


def test_unreachable_database_is_one_error_line(runner) -> None:
    result = runner.invoke(app, ["ingest", str(TRAIN), "-c", "c", "--no-progress"])
    one_error_line(result, "database unreachable")


def test_module_entry_point_maps_errors_too(tmp_path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": NO_DB,
        "IDENTITY_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "ingest", str(tmp_path / "nope"), "-c", "c"],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [
        f"error: gallery {tmp_path / 'nope'} does not exist [invalid_input]"
    ]
    assert "Traceback" not in proc.stderr


def test_old_command_name_index_still_works_the_same(runner, tmp_path) -> None:
    """``identity ingest`` was ``identity index``; the old name stays (hidden) for scripts."""
    old = runner.invoke(app, ["index", str(tmp_path / "nope"), "-c", "c", "--no-progress"])
    new = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "-c", "c", "--no-progress"])
    assert old.exit_code == new.exit_code != 0
    err = [line for line in new.output.splitlines() if line.startswith("error:")]
    assert err and err[0] in old.output
