"""`identity watch`: a short video built from real photos, tracked and identified against a gallery.

The gallery is face_recognition's knn_examples/train (5 people). The video shows Obama
(knn_examples/test/obama1.jpg, not a gallery photo) drifting across 16 frames, an empty gap that
ends his track, then Biden (cut from knn_examples/test/obama_and_biden.jpg, not a gallery photo)
for 16 frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from shared_data import SHARED_DIR

pytest.importorskip("mediapipe")

from identity.errors import InvalidInput
from identity.settings import Settings
from identity.video import GalleryIdentifier, IoUTracker, open_source
from identity.video.watch import VideoWatcher, WatchOptions, run_watch

DATA = SHARED_DIR / "data" / "face_recognition"
GALLERY = DATA / "knn_examples" / "train"
W, H = 640, 480


def paste(photo: np.ndarray, dx: int) -> np.ndarray:
    frame = np.full((H, W, 3), 40, np.uint8)
    scale = 400 / photo.shape[0]
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)[:, : W - 200]
    x = 100 + dx
    frame[40 : 40 + small.shape[0], x : x + small.shape[1]] = small[:, : W - x]
    return frame


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    obama = cv2.imread(str(DATA / "knn_examples" / "test" / "obama1.jpg"))
    both = cv2.imread(str(DATA / "knn_examples" / "test" / "obama_and_biden.jpg"))
    biden = both[250:900, 550:1150]  # the left man of the pair
    path = tmp_path_factory.mktemp("video") / "obama_then_biden.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    assert writer.isOpened()
    for i in range(16):
        writer.write(paste(obama, 3 * i))
    for _ in range(14):  # longer than the tracker's max_missed (10): Obama's track ends
        writer.write(np.full((H, W, 3), 40, np.uint8))
    for i in range(16):
        writer.write(paste(biden, 40 - 3 * i))
    writer.release()
    return path


def run_cli(*args: str) -> tuple[int, list[dict], str]:
    """`identity watch ARGS` through the main CLI, whose wrapper maps errors to one line."""
    from services.cli import app

    result = CliRunner().invoke(app, ["watch", *args])
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert "Traceback" not in result.output
    return result.exit_code, events, result.output


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="module")
def gallery(settings: Settings) -> GalleryIdentifier:
    return GalleryIdentifier.from_folder(GALLERY, settings)


def watch_events(video: Path, identifier: GalleryIdentifier, settings: Settings) -> list[dict]:
    events: list[dict] = []
    run_watch(str(video), identifier, settings, WatchOptions(), events.append)
    return [json.loads(json.dumps(e)) for e in events]  # what the CLI prints, as JSON


def test_two_tracks_identified_once_each(
    video: Path, gallery: GalleryIdentifier, settings: Settings
) -> None:
    events = watch_events(video, gallery, settings)
    kinds = [e["event"] for e in events]
    assert kinds.count("track_started") == 2, "\n".join(map(str, events))
    assert kinds.count("track_ended") == 2
    identified = [e for e in events if e["event"] == "identified"]
    assert [e["label"] for e in identified] == ["obama", "biden"]
    assert all(e["match"] and e["similarity"] >= e["threshold"] for e in identified)
    # identified once, from its best frames, not on every frame
    assert all(len(e["frames_used"]) == 3 for e in identified)
    started = {e["track_id"]: e for e in events if e["event"] == "track_started"}
    ended = {e["track_id"]: e for e in events if e["event"] == "track_ended"}
    assert started.keys() == ended.keys()
    first, second = sorted(started)
    assert ended[first]["label"] == "obama" and ended[second]["label"] == "biden"
    # timestamps come from the stream (10 fps): Obama is on frames 0-15, Biden from frame 30
    assert started[first]["t"] == pytest.approx(0.0, abs=0.11)
    assert started[second]["t"] == pytest.approx(3.0, abs=0.11)
    assert ended[first]["last_frame"] == 15 and ended[first]["frames_seen"] == 16
    assert ended[first]["t"] < started[second]["t"]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["frames"] == 46 and summary["fps"] > 0


def test_people_outside_the_gallery_are_tracked_but_not_named(
    video: Path, gallery: GalleryIdentifier, settings: Settings
) -> None:
    keep = [i for i, label in enumerate(gallery.labels) if label not in ("obama", "biden")]
    others = GalleryIdentifier(
        [gallery.labels[i] for i in keep],
        gallery.embeddings[keep],
        gallery.embedder_name,
        gallery.threshold,
    )
    events = watch_events(video, others, settings)
    identified = [e for e in events if e["event"] == "identified"]
    assert len(identified) == 2
    assert all(e["label"] is None and not e["match"] for e in identified)
    assert all(e["best_candidate"] not in ("obama", "biden") for e in identified)
    assert all(e.get("label") is None for e in events if e["event"] == "track_ended")


def test_the_command_prints_json_lines(video: Path, tmp_path: Path) -> None:
    small = tmp_path / "gallery" / "obama"
    small.mkdir(parents=True)
    for photo in (GALLERY / "obama").iterdir():
        (small / photo.name).symlink_to(photo)
    code, events, output = run_cli(str(video), "--gallery", str(small.parent), "--max-frames", "16")
    assert code == 0, output
    assert [e["event"] for e in events] == ["track_started", "identified", "track_ended", "summary"]
    assert events[1]["label"] == "obama" and events[-1]["frames"] == 16


def test_bad_sources_and_options_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        open_source(str(tmp_path / "missing.mp4"))
    code, _, output = run_cli(str(tmp_path / "missing.mp4"), "--gallery", str(GALLERY))
    assert code == 2 and "cannot open video source" in output
    code, _, output = run_cli("0", "--gallery", str(GALLERY), "--collection", "c")
    assert code == 2 and "exactly one of" in output


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--best-k", "0"),
        ("--identify-after", "0"),
        ("--max-frames", "0"),
        ("--max-missed", "-1"),
        ("--min-score", "1.5"),
        ("--threshold", "2"),
        ("--far", "0"),
        ("--far", "1"),
    ],
)
def test_out_of_range_options_are_one_error_line(option: str, value: str) -> None:
    code, _, output = run_cli("0", "--gallery", str(GALLERY), option, value)
    assert code == 2
    errors = error_lines(output)
    assert len(errors) == 1 and option in errors[0], output


def test_unreachable_store_is_one_error_line(video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u:p@127.0.0.1:1/x")
    code, events, output = run_cli(str(video), "--collection", "c")
    assert code == 2 and events == []
    errors = error_lines(output)
    assert len(errors) == 1 and "database unreachable" in errors[0], output


def test_watcher_refuses_best_k_zero(gallery: GalleryIdentifier, settings: Settings) -> None:
    from identity.detect import load_detector
    from identity.embed import load_embedder

    with pytest.raises(InvalidInput, match="best_k"):
        VideoWatcher(
            load_detector("blazeface_short", settings),
            load_embedder(gallery.embedder_name, settings),
            gallery,
            best_k=0,
        )


class InterruptedCapture:
    """A capture whose read raises KeyboardInterrupt (Ctrl-C) after ``frames`` frames."""

    def __init__(self, path: Path, frames: int) -> None:
        self.cap = cv2.VideoCapture(str(path))
        self.left = frames

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return self.cap.read()

    def get(self, prop: int) -> float:
        return self.cap.get(prop)


def test_ctrl_c_still_ends_tracks_and_prints_the_summary(
    video: Path, gallery: GalleryIdentifier, settings: Settings
) -> None:
    from identity.detect import load_detector
    from identity.embed import load_embedder

    watcher = VideoWatcher(
        load_detector("blazeface_short", settings),
        load_embedder(gallery.embedder_name, settings),
        gallery,
    )
    events: list[dict] = []
    with pytest.raises(KeyboardInterrupt):
        watcher.run(InterruptedCapture(video, 8), events.append)  # type: ignore[arg-type]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "track_started" and kinds[-2:] == ["track_ended", "summary"]
    assert events[-1]["frames"] == 8


def test_tracker_links_overlapping_boxes_and_ends_lost_tracks() -> None:
    tracker = IoUTracker(iou_threshold=0.3, max_missed=1)
    ids, started, _ = tracker.update(np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), 0, 0.0)
    assert len(started) == 2
    ids2, started2, _ = tracker.update(np.array([[52, 51, 62, 61], [1, 0, 11, 10]]), 1, 0.1)
    assert started2 == [] and ids2 == [ids[1], ids[0]]
    tracker.update(np.zeros((0, 4)), 2, 0.2)
    _, _, ended = tracker.update(np.zeros((0, 4)), 3, 0.3)
    assert sorted(t.track_id for t in ended) == sorted(ids)


def test_gallery_identifier_names_its_own_people(gallery: GalleryIdentifier) -> None:
    assert sorted(set(gallery.labels)) == sorted(p.name for p in GALLERY.iterdir())
    matches = gallery.identify(gallery.embeddings)
    assert [m.label for m in matches] == gallery.labels
    assert all(m.match for m in matches)
