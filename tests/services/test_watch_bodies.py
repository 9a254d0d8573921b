"""`identity watch VIDEO --collection C --bodies`: people followed by body on real MOT17 frames,
the real person detector (SSD) and re-ID model (Intel 0287), a real Postgres collection."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from identity.settings import Settings
from identity.video.tracker import iou_matrix

from svc_helpers import DATA

SEQ = DATA / "mot" / "MOT17-09-FRCNN"
SCALE = 0.5  # 1920x1080 frames written at 960x540


def _gt(frame: int) -> dict[int, np.ndarray]:
    """Visible pedestrians of one frame: track id -> x1,y1,x2,y2 in source pixels."""
    gt = np.loadtxt(SEQ / "gt" / "gt.txt", delimiter=",")
    gt = gt[(gt[:, 0] == frame) & (gt[:, 6] == 1) & (gt[:, 7] == 1) & (gt[:, 8] >= 0.9)]
    return {int(r[1]): np.array([r[2], r[3], r[2] + r[4], r[3] + r[5]]) for r in gt}


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frames 2-4 (not the enrolment frame), each twice: six frames at 960x540."""
    path = tmp_path_factory.mktemp("bodies") / "mot17_09.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (960, 540))
    assert writer.isOpened()
    for frame in (2, 2, 3, 3, 4, 4):
        image = cv2.imread(str(SEQ / "img1" / f"{frame:06d}.jpg"))
        writer.write(cv2.resize(image, (960, 540), interpolation=cv2.INTER_AREA))
    writer.release()
    return path


def _watch(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """The CLI opens its own store from the environment: point it at the test's."""
    from services.cli import app

    assert settings.kek is not None and settings.database_url is not None
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("IDENTITY_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("IDENTITY_MODELS_DIR", str(settings.models_dir))
    monkeypatch.setenv("IDENTITY_KEK", settings.kek.get_secret_value())
    result = CliRunner().invoke(app, ["watch", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_watch_bodies_names_the_enrolled_walker(
    client: TestClient,
    admin: dict[str, str],
    collection: str,
    settings: Settings,
    video: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.body_store import BodyStore

    first, last = _gt(1), _gt(4)
    # the tallest person seen in both frames is enrolled from frame 1 (not in the video)
    walker = max(set(first) & set(last), key=lambda t: first[t][3] - first[t][1])
    r = client.post(
        f"/v1/collections/{collection}/identities", json={"external_id": "walker"}, headers=admin
    )
    assert r.status_code == 201, r.text
    store = client.app.state.store  # type: ignore[attr-defined]
    enrolled = BodyStore(store).enroll_images(
        collection,
        r.json()["id"],
        [("f1.jpg", (SEQ / "img1" / "000001.jpg").read_bytes())],
        first[walker].tolist(),
    )
    assert len(enrolled["accepted"]) == 1, enrolled

    code, output = _watch(
        settings, monkeypatch, str(video), "--collection", collection, "--bodies",
        "--identify-after", "3", "--far", "0.001",
    )  # fmt: skip
    assert code == 0, output
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    started = {e["track_id"]: e for e in events if e["event"] == "track_started"}
    identified = [e for e in events if e["event"] == "identified"]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["frames"] == 6 and summary["persons"] > 0
    named = [e for e in identified if e["label"] == "walker"]
    assert named, identified
    for e in named:  # whoever is named "walker" is the walker: their track starts on their box
        box = np.array(started[e["track_id"]]["bbox"]) / SCALE
        assert iou_matrix(box[None], _gt(2)[walker][None])[0, 0] > 0.5, (e, box)
        top = e["candidates"][0]
        assert top["match"] is True and top["similarity"] > e["threshold"]
        assert e["body_model"] == "reid_intel_0287"
    # every other identified track is someone else: not named
    assert all(e["label"] is None for e in identified if e not in named)


def test_bodies_needs_a_collection(video: Path) -> None:
    from services.cli import app

    result = CliRunner().invoke(app, ["watch", str(video), "--gallery", ".", "--bodies"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--collection" in errors[0], result.output


def test_unknown_collection_is_one_error_line(
    settings: Settings, video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = _watch(
        settings, monkeypatch, str(video), "--collection", "no-such-collection", "--bodies"
    )
    assert code != 0
    assert not [line for line in output.splitlines() if line.startswith("{")], output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no-such-collection" in errors[0], output
