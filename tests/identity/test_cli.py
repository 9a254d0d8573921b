"""The ``identity`` command line on real photos with the default (packaged) models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from identity.cli import app

SHARED = Path(__file__).resolve().parents[3] / "shared"
FR = SHARED / "data" / "face_recognition"
TRAIN = FR / "knn_examples" / "train"


@pytest.fixture()
def runner(tmp_path, monkeypatch) -> CliRunner:
    # a fresh data dir per test: no calibration files leak between tests
    monkeypatch.setenv("IDENTITY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("IDENTITY_MODELS_DIR", raising=False)
    return CliRunner()


def test_analyze_json_reports_every_face(runner) -> None:
    result = runner.invoke(
        app, ["analyze", "--json", "--embeddings", str(FR / "two_people.jpg"), str(TRAIN / "obama/obama.jpg")]
    )
    assert result.exit_code == 0, result.output
    images = json.loads(result.output)
    assert [len(r["faces"]) for r in images] == [2, 1]
    face = images[1]["faces"][0]
    assert {"bbox", "landmarks", "det_score", "quality", "embedding_norm", "embedding"} <= set(face)
    assert len(face["embedding"]) == 128
    assert sum(v * v for v in face["embedding"]) == pytest.approx(1.0, abs=1e-4)
    assert 0.0 <= face["quality"]["score"] <= 1.0 and isinstance(face["quality"]["reasons"], list)
    # faces are listed largest first
    areas = [(f["bbox"][2] - f["bbox"][0]) * (f["bbox"][3] - f["bbox"][1]) for f in images[0]["faces"]]
    assert areas == sorted(areas, reverse=True)


def test_analyze_bad_file_is_reported_not_a_traceback(runner, tmp_path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a photo")
    result = runner.invoke(app, ["analyze", "--json", str(bad), str(TRAIN / "biden/biden.jpg")])
    assert result.exit_code == 1
    rows = json.loads(result.output)
    assert rows[0]["error"]["code"] == "bad_image"
    assert len(rows[1]["faces"]) == 1
    assert "Traceback" not in result.output


def test_compare_same_and_different_people(runner) -> None:
    same = runner.invoke(app, ["compare", "--json", str(TRAIN / "obama/obama.jpg"), str(TRAIN / "obama/obama2.jpg")])
    assert same.exit_code == 0, same.output
    same_r = json.loads(same.output)
    other = runner.invoke(app, ["compare", "--json", str(TRAIN / "obama/obama.jpg"), str(TRAIN / "biden/biden.jpg")])
    other_r = json.loads(other.output)
    assert same_r["match"] is True and other_r["match"] is False
    assert same_r["similarity"] > other_r["similarity"]
    assert same_r["threshold"] == other_r["threshold"] and same_r["far"] == 1e-3


def test_compare_without_a_face_fails_cleanly(runner, tmp_path) -> None:
    import cv2
    import numpy as np

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    result = runner.invoke(app, ["compare", str(blank), str(TRAIN / "biden/biden.jpg")])
    assert result.exit_code == 2
    assert "no face found" in result.output


def test_calibrate_writes_thresholds_used_by_compare(runner, tmp_path) -> None:
    people = tmp_path / "people"
    shutil.copytree(TRAIN, people)
    plot = tmp_path / "roc.png"
    result = runner.invoke(app, ["calibrate", str(people), "--json", "--plot", str(plot), "--far", "0.1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["n_identities"] == 5 and report["n_images"] == 9
    assert report["auc"] > 0.9
    saved = json.loads(Path(report["saved_to"]).read_text())
    assert set(saved["thresholds"]) == {"1e-01"}
    assert plot.read_bytes()[:4] == b"\x89PNG"
    compare = runner.invoke(app, ["compare", "--json", "--far", "0.1",
                                  str(TRAIN / "obama/obama.jpg"), str(TRAIN / "obama/obama2.jpg")])
    assert json.loads(compare.output)["threshold"] == pytest.approx(saved["thresholds"]["1e-01"], abs=1e-4)


def test_calibrate_rejects_an_empty_folder(runner, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["calibrate", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no labelled images" in result.output


def test_models_list_and_verify(runner, monkeypatch) -> None:
    monkeypatch.setenv("IDENTITY_MODELS_DIR", str(SHARED / "models"))
    listed = runner.invoke(app, ["models", "list", "--json"])
    rows = {r["name"]: r for r in json.loads(listed.output)}
    assert rows["retinaface_mnet025"]["origin"] == "package"
    assert rows["scrfd_2.5g_kps"]["checksum"] == "ok"
    assert rows["w600k_r50"]["present"] is False  # only reachable with `models pull`
    verified = runner.invoke(app, ["models", "verify", "dlib_resnet_v1", "yunet_n"])
    assert verified.exit_code == 0 and verified.output.count(": ok") == 2
    missing = runner.invoke(app, ["models", "verify", "w600k_r50"])
    assert missing.exit_code == 1


def test_console_script_exits_non_zero_with_a_message(tmp_path) -> None:
    exe = Path(sys.executable).parent / "identity"
    proc = subprocess.run([str(exe), "compare", str(tmp_path / "nope.jpg"), str(tmp_path / "x.jpg")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "error" in proc.stderr.lower() and "Traceback" not in proc.stderr
