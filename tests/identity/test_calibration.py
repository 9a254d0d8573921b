"""Calibration maths on score sets whose answers are known by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from identity.binomial import clopper_pearson
from identity.calibration import (
    CalibrationReport,
    FarPoint,
    calibrated_threshold,
    enough_impostors,
    evaluate,
    far_at,
    pair_scores,
    pipeline_calibration,
    roc_curve,
    save_calibration,
    threshold_at_far,
    threshold_for,
)
from identity.errors import CalibrationError, InvalidInput
from identity.labelled import read_labelled, save_roc_plot
from identity.settings import Settings


def test_pair_scores_split_genuine_and_impostor() -> None:
    emb = np.eye(3, dtype=np.float32)[[0, 0, 1, 2]]  # two identical vectors for "a"
    genuine, impostor = pair_scores(emb, ["a", "a", "b", "c"])
    assert genuine.tolist() == [1.0]
    assert len(impostor) == 5 and np.all(impostor == 0.0)


def test_roc_of_separable_scores_has_auc_one_and_eer_zero() -> None:
    genuine = np.linspace(0.6, 0.9, 30)
    impostor = np.linspace(-0.2, 0.5, 300)
    report = evaluate("m", genuine, impostor, fars=(1e-2,))
    assert report.auc == pytest.approx(1.0)
    assert report.eer == pytest.approx(0.0)
    p = report.points[0]
    # 1% of 300 impostors = 3 may pass: the threshold sits just above the 4th highest impostor
    assert np.sum(impostor >= p.threshold) <= 3
    assert p.tar == 1.0 and p.reliable


def test_threshold_at_far_never_exceeds_the_far() -> None:
    rng = np.random.default_rng(0)
    genuine = rng.normal(0.6, 0.1, 500)
    impostor = rng.normal(0.1, 0.1, 5000)
    for far in (1e-1, 1e-2, 1e-3):
        t, tar = threshold_at_far(genuine, impostor, far)
        assert np.mean(impostor >= t) <= far
        assert tar == pytest.approx(np.mean(genuine >= t))


def test_roc_ties_are_decided_together() -> None:
    far, tar, thr = roc_curve(np.array([0.5, 0.5]), np.array([0.5, 0.1]))
    # at threshold 0.5 both genuine and the tied impostor pass at once
    i = int(np.flatnonzero(thr == 0.5)[0])
    assert (far[i], tar[i]) == (0.5, 1.0)


def test_a_far_needs_3_over_far_impostor_pairs() -> None:
    report = evaluate("m", np.array([0.9, 0.8]), np.linspace(0, 0.5, 50), fars=(1e-2, 1e-4))
    assert [p.reliable for p in report.points] == [False, False]
    # 200 pairs measure FAR 1e-2 (2 impostors may pass) but cannot stand behind it: 300 can
    report = evaluate("m", np.array([0.9, 0.8]), np.linspace(0, 0.5, 299), fars=(1e-2,))
    assert not report.points[0].reliable and report.thresholds() == {}
    report = evaluate("m", np.array([0.9, 0.8]), np.linspace(0, 0.5, 300), fars=(1e-2,))
    assert report.points[0].reliable and list(report.thresholds()) == ["1e-02"]
    assert enough_impostors(1e-4, 30_000) and not enough_impostors(1e-4, 29_999)


def test_clopper_pearson_matches_scipy_and_a_hand_computed_case() -> None:
    from scipy.stats import beta

    # k = 0: the upper limit solves (1 - p)^n = 0.025, i.e. p = 1 - 0.025^(1/n)
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-9))
    for k, n in [(3, 30_000), (12, 12_000_000), (1_200, 12_000_000), (19_990, 20_000), (5, 5)]:
        lo, hi = clopper_pearson(k, n)
        assert lo == pytest.approx(beta.ppf(0.025, k, n - k + 1) if k else 0.0, rel=1e-7)
        assert hi == pytest.approx(beta.ppf(0.975, k + 1, n - k) if k < n else 1.0, rel=1e-7)
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


def test_report_carries_its_evidence() -> None:
    from scipy.stats import beta

    rng = np.random.default_rng(1)
    genuine, impostor = rng.normal(0.7, 0.1, 2_000), rng.normal(0.0, 0.1, 40_000)
    report = evaluate(
        "m",
        genuine,
        impostor,
        fars=(1e-2, 1e-3, 1e-4, 1e-5),
        n_images=300,
        n_identities=30,
        detector="det",
        set_name="synthetic",
    )
    assert (report.set, report.pipeline, report.n_impostor) == ("synthetic", "det+m", 40_000)
    for p in report.points:
        k = int(np.sum(impostor >= p.threshold))
        assert p.impostors_above == k <= p.far * len(impostor)
        assert p.far_upper_95 == pytest.approx(beta.ppf(0.975, k + 1, 40_000 - k), rel=1e-7)
        assert p.tar_ci_95[0] <= p.tar <= p.tar_ci_95[1]
    # 40,000 pairs stand behind 1e-4 (needs 30,000) but not 1e-5 (needs 300,000)
    assert [p.reliable for p in report.points] == [True, True, True, False]
    assert set(report.thresholds()) == {"1e-02", "1e-03", "1e-04"}


def test_evaluate_needs_both_kinds_of_pairs() -> None:
    with pytest.raises(CalibrationError, match="genuine"):
        evaluate("m", np.array([]), np.array([0.1]))
    with pytest.raises(CalibrationError, match="impostor"):
        evaluate("m", np.array([0.9]), np.array([]))


def test_saved_thresholds_drive_decisions(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    # 3,000 impostor pairs: just enough to offer FAR 1e-3 (3/FAR)
    report = CalibrationReport(
        model="dlib_resnet_v1",
        n_images=10,
        n_identities=3,
        n_genuine=5,
        n_impostor=3000,
        auc=0.99,
        eer=0.02,
        eer_threshold=0.8,
        points=[FarPoint(1e-2, 0.80, 0.99, True, 30), FarPoint(1e-3, 0.90, 0.95, True, 3)],
        impostor_quantiles=list(np.linspace(-0.1, 0.9, 201)),
        detector=settings.detector,
        set="my_people",
    )
    path = save_calibration(report, settings)
    assert path.name == f"{settings.detector}+dlib_resnet_v1.json"
    assert json.loads(path.read_text())["thresholds"] == {"1e-02": 0.8, "1e-03": 0.9}
    assert threshold_for("dlib_resnet_v1", 1e-2, settings) == pytest.approx(0.8)
    assert threshold_for("dlib_resnet_v1", 1e-3, settings) == pytest.approx(0.9)
    # log-linear between calibrated FARs; a looser FAR than calibrated gets the loosest known
    # threshold (stricter than asked), a stricter one is refused rather than decided too loosely
    assert threshold_for("dlib_resnet_v1", 10**-2.5, settings) == pytest.approx(0.85)
    assert threshold_for("dlib_resnet_v1", 0.1, settings) == pytest.approx(0.8)
    with pytest.raises(CalibrationError, match="stricter than any threshold") as info:
        threshold_for("dlib_resnet_v1", 1e-6, settings)
    assert info.value.details["strictest_far"] == pytest.approx(1e-3)
    assert info.value.details["source"] == "calibrated"
    with pytest.raises(InvalidInput):
        threshold_for("dlib_resnet_v1", 0.0, settings)
    # FAR estimate from the stored impostor distribution falls as similarity rises
    assert far_at("dlib_resnet_v1", 0.85, settings) < far_at("dlib_resnet_v1", 0.3, settings)
    assert far_at("dlib_resnet_v1", 2.0, settings) == pytest.approx(1 / 3000)
    # the decision names its evidence: the set, the pairs, and the FAR's 95% upper bound (3 of
    # 3,000 impostors above the threshold)
    threshold, cal = calibrated_threshold("dlib_resnet_v1", 1e-3, settings)
    assert threshold == pytest.approx(0.9) and cal.source == "calibrated"
    evidence = cal.evidence(1e-3)
    assert evidence["set"] == "my_people" and evidence["impostor_pairs"] == 3000
    assert evidence["far_upper_95"] == pytest.approx(clopper_pearson(3, 3000)[1], rel=1e-2)
    # a record with too few impostor pairs for a FAR it lists does not offer that FAR
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "n_impostor": 2999}))
    assert sorted(pipeline_calibration("dlib_resnet_v1", settings).thresholds) == [1e-2]
    with pytest.raises(CalibrationError, match="3/FAR"):
        threshold_for("dlib_resnet_v1", 1e-3, settings)
    # decisions keep the loaded calibration only while the record file is unchanged
    path.unlink()
    assert pipeline_calibration("dlib_resnet_v1", settings).source == "shipped"


def test_read_labelled_folders_and_csv(tmp_path) -> None:
    for person, n in (("ann", 2), ("bob", 1)):
        (tmp_path / person).mkdir()
        for i in range(n):
            (tmp_path / person / f"{i}.jpg").write_bytes(b"x")
    (tmp_path / "ann" / "notes.txt").write_text("not an image")
    items = read_labelled(tmp_path)
    assert sorted((p.name, who) for p, who in items) == [
        ("0.jpg", "ann"),
        ("0.jpg", "bob"),
        ("1.jpg", "ann"),
    ]
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("path,identity\nann/0.jpg,ann\nbob/0.jpg,bob\n")
    assert [(p, who) for p, who in read_labelled(tmp_path, csv_file)] == [
        (tmp_path / "ann/0.jpg", "ann"),
        (tmp_path / "bob/0.jpg", "bob"),
    ]
    with pytest.raises(InvalidInput):
        read_labelled(tmp_path / "missing")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("path,identity\nann/0.jpg,Jos\xe9\n".encode("latin-1"))
    with pytest.raises(InvalidInput, match="latin1.csv is not UTF-8"):
        read_labelled(tmp_path, latin1)
    huge = tmp_path / "huge.csv"  # one field past the csv module's limit
    huge.write_text('path,identity\n"' + "a" * 200_000 + '",ann\n')
    with pytest.raises(InvalidInput, match="not valid CSV"):
        read_labelled(tmp_path, huge)


def test_roc_plot_is_a_png(tmp_path) -> None:
    out = save_roc_plot(np.array([0.8, 0.9]), np.array([0.1, 0.2, 0.85]), tmp_path / "roc.png", "t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
