"""The ``identity`` command line on real photos with the default (packaged) models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app

from shared_data import SHARED_DIR

SHARED = SHARED_DIR
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
        app,
        [
            "analyze",
            "--json",
            "--embeddings",
            str(FR / "two_people.jpg"),
            str(TRAIN / "obama/obama.jpg"),
        ],
    )
    assert result.exit_code == 0, result.output
    images = json.loads(result.stdout)
    assert [len(r["faces"]) for r in images] == [2, 1]
    face = images[1]["faces"][0]
    assert {"bbox", "landmarks", "det_score", "quality", "embedding_norm", "embedding"} <= set(face)
    assert len(face["embedding"]) == 512  # the default embedder, arcface_w600k_mbf_int8
    assert sum(v * v for v in face["embedding"]) == pytest.approx(1.0, abs=1e-4)
    assert 0.0 <= face["quality"]["score"] <= 1.0 and isinstance(face["quality"]["reasons"], list)
    # faces are listed largest first
    areas = [
        (f["bbox"][2] - f["bbox"][0]) * (f["bbox"][3] - f["bbox"][1]) for f in images[0]["faces"]
    ]
    assert areas == sorted(areas, reverse=True)


def test_analyze_bad_file_is_reported_not_a_traceback(runner, tmp_path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a photo")
    result = runner.invoke(app, ["analyze", "--json", str(bad), str(TRAIN / "biden/biden.jpg")])
    assert result.exit_code == 1
    rows = json.loads(result.stdout)  # stdout stays valid JSON; the error line is on stderr
    assert rows[0]["error"]["code"] == "bad_image"
    assert len(rows[1]["faces"]) == 1
    assert_one_error_line(result.stderr, str(bad))
    assert "Traceback" not in result.output


def test_analyze_reports_each_bad_image_on_stderr_and_goes_on(runner, tmp_path) -> None:
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes((TRAIN / "obama/obama.jpg").read_bytes()[:200])
    missing = tmp_path / "missing.jpg"
    folder = tmp_path / "a_folder.jpg"
    folder.mkdir()
    good = TRAIN / "biden/biden.jpg"
    result = runner.invoke(app, ["analyze", str(bad), str(missing), str(folder), str(good)])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert [e.split(": ")[1] for e in errors] == [str(bad), str(missing), str(folder)]
    assert "error" not in result.stdout and f"{good} (" in result.stdout
    assert "Traceback" not in result.output


def test_analyze_json_is_a_list_even_for_one_image(runner) -> None:
    result = runner.invoke(app, ["analyze", "--json", str(TRAIN / "obama/obama.jpg")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and len(rows) == 1 and len(rows[0]["faces"]) == 1


def test_compare_same_and_different_people(runner) -> None:
    same = runner.invoke(
        app, ["compare", "--json", str(TRAIN / "obama/obama.jpg"), str(TRAIN / "obama/obama2.jpg")]
    )
    assert same.exit_code == 0, same.output
    same_r = json.loads(same.output)
    other = runner.invoke(
        app, ["compare", "--json", str(TRAIN / "obama/obama.jpg"), str(TRAIN / "biden/biden.jpg")]
    )
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
    result = runner.invoke(
        app, ["calibrate", str(people), "--json", "--plot", str(plot), "--far", "0.1"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["n_identities"] == 5 and report["n_images"] == 9
    assert report["auc"] > 0.9
    saved = json.loads(Path(report["saved_to"]).read_text())
    assert set(saved["thresholds"]) == {"1e-01"}
    # the record is the pipeline's and carries its evidence: 32 impostor pairs stand behind FAR
    # 0.1 (3/FAR = 30), with the FAR's 95% Clopper-Pearson upper bound
    assert Path(report["saved_to"]).name == f"{saved['detector']}+{saved['model']}.json"
    assert saved["set"] == "people" and saved["n_impostor"] >= 30
    point = saved["points"][0]
    assert (
        point["reliable"] and point["far_upper_95"] > point["impostors_above"] / saved["n_impostor"]
    )
    assert plot.read_bytes()[:4] == b"\x89PNG"
    compare = runner.invoke(
        app,
        [
            "compare",
            "--json",
            "--far",
            "0.1",
            str(TRAIN / "obama/obama.jpg"),
            str(TRAIN / "obama/obama2.jpg"),
        ],
    )
    result = json.loads(compare.output)
    assert result["threshold"] == pytest.approx(saved["thresholds"]["1e-01"], abs=1e-4)
    assert (
        result["calibration"]["set"] == "people" and result["calibration"]["source"] == "calibrated"
    )


@pytest.mark.parametrize("far", ["0", "1", "1.5", "-0.01"])
def test_calibrate_refuses_a_far_outside_0_1_before_any_work(runner, far) -> None:
    result = runner.invoke(app, ["calibrate", str(TRAIN), "--far", far, "--no-save"])
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "--far must be between 0 and 1")


def test_calibrate_non_utf8_csv_is_one_error_line(runner, tmp_path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_bytes("path,identity\nobama/obama.jpg,Ob\xe4ma\n".encode("latin-1"))
    result = runner.invoke(app, ["calibrate", str(TRAIN), "--csv", str(labels)])
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "not UTF-8")


def test_usage_errors_are_one_error_line(runner) -> None:
    missing = runner.invoke(app, ["compare", str(TRAIN / "obama/obama.jpg")])
    assert missing.exit_code == 2
    assert_one_error_line(missing.stderr, "Missing argument")
    unknown = runner.invoke(app, ["analyze", "--bogus", str(TRAIN / "obama/obama.jpg")])
    assert unknown.exit_code == 2
    assert_one_error_line(unknown.stderr, "--bogus")


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
    # a model with a quality head is checked with it
    assert rows["arcface_w600k_mbf_int8"]["quality_head"] == "ok"
    assert rows["dlib_resnet_v1"]["quality_head"] is None
    headed = runner.invoke(app, ["models", "verify", "arcface_mobilefacenet_128"])
    assert headed.exit_code == 0 and headed.output.rstrip().endswith("; quality head: ok")
    assert rows["w600k_r50"]["how_to_get"] == "identity models pull w600k_r50 --allow-unpinned"
    assert rows["scrfd_2.5g_kps"]["how_to_get"] is None
    text = runner.invoke(app, ["models", "list"]).output
    # every licence whole (not cut to a column), and a missing model says how to get it
    for row in rows.values():
        assert f"    licence: {row['licence']}\n" in text
    assert "    get it: identity models pull w600k_r50 --allow-unpinned\n" in text


def test_console_script_exits_non_zero_with_a_message(tmp_path) -> None:
    proc = run_identity("compare", str(tmp_path / "nope.jpg"), str(tmp_path / "x.jpg"))
    assert proc.returncode != 0
    assert_one_error_line(proc.stderr, "nope.jpg")


def run_identity(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).parent / "identity"
    return subprocess.run(
        [str(exe), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def assert_one_error_line(stderr: str, needle: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("IDENTITY_DET_THRESHOLD", "abc"), ("IDENTITY_ONNX_PROVIDERS", "CPU")],
)
def test_a_bad_setting_is_one_error_line_naming_it(tmp_path, name, value) -> None:
    proc = run_identity(
        "analyze",
        str(TRAIN / "obama/obama.jpg"),
        env={name: value, "IDENTITY_DATA_DIR": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, f"invalid setting {name}")


def test_unreachable_database_is_one_error_line(tmp_path) -> None:
    proc = run_identity(
        "ingest",
        str(TRAIN),
        "--collection",
        "c",
        "--no-progress",
        env={
            "DATABASE_URL": "postgresql+psycopg://u:p@127.0.0.1:1/x",
            "IDENTITY_DATA_DIR": str(tmp_path),
        },
    )
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "database unreachable")
    assert "u:p@" not in proc.stderr  # never echo the password of DATABASE_URL


def test_error_mapping_of_optional_modules_and_decoding() -> None:
    from identity.cli import describe_error

    ray = describe_error(ModuleNotFoundError("No module named 'ray'", name="ray"))
    assert ray is not None and "identity-platform[ray]" in ray
    mesh = describe_error(
        ModuleNotFoundError("No module named 'mediapipe'", name="mediapipe.python")
    )
    assert mesh is not None and "identity-platform[mesh]" in mesh
    decode = describe_error(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    assert decode is not None and "UTF-8" in decode
    assert describe_error(ZeroDivisionError()) is None  # a bug keeps its traceback


@pytest.mark.parametrize("url", ["notaurl", "foo://x/y"])
def test_malformed_database_url_is_one_error_line(runner, monkeypatch, url) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "DATABASE_URL is not a usable database URL")


def test_console_script_stderr_has_no_third_party_chatter() -> None:
    """MediaPipe's absl/TFLite lines and protobuf's deprecation warning go to the log, not to
    the terminal of someone who ran one command (FaceMesh runs in quality, BlazeFace here)."""
    photo = str(TRAIN / "obama" / "obama.jpg")
    for args in (("analyze", photo), ("analyze", "--detector", "blazeface_short", photo)):
        proc = run_identity(*args)
        assert proc.returncode == 0, proc.stderr
        assert "face(s)" in proc.stdout
        assert proc.stderr.strip() == "", proc.stderr
