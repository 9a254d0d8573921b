"""Threshold calibration on labelled faces: ROC, EER, TAR at FAR, and the threshold per FAR.

Verification decides by a named false-accept rate, never by a magic similarity. Thresholds depend
on the whole pipeline (detector and alignment as much as embedder), so a calibration record
belongs to a ``<detector>+<embedder>`` pair. A threshold for a FAR is read, first found wins, from
1. ``<data_dir>/calibration/<detector>+<embedder>.json`` (written by ``identity calibrate``, or
   the older ``<embedder>.json``);
2. the record shipped for that pipeline, ``models/calibration/<detector>+<embedder>.json``
   (celeba500, ``bench/calibrate.py``), or else the one shipped for the embedder with another
   detector;
3. the model manifest's ``thresholds`` table.

Every record carries its evidence: the set it was measured on, identities, genuine and impostor
pair counts and, per FAR, the impostors above the threshold and the upper limit of the 95%
Clopper-Pearson interval of the FAR. A FAR is offered only where at least
``MIN_IMPOSTORS_PER_FAR / FAR`` impostor pairs stand behind it (``reliable``); a stricter one is
refused with ``CalibrationError`` rather than extrapolated.

One module per job: ``curves`` (measuring on labelled pairs: ROC, EER, the report), ``records``
(reading and writing the records, their evidence), ``policy`` (the threshold a decision uses).
"""

from identity.calibration.curves import (
    DEFAULT_FARS,
    MIN_IMPOSTORS_PER_FAR,
    WIDE_FARS,
    CalibrationReport,
    FarPoint,
    auc_of,
    eer_of,
    enough_impostors,
    evaluate,
    far_key,
    pair_scores,
    roc_curve,
    threshold_at_far,
    threshold_in_sorted,
)
from identity.calibration.policy import (
    calibrated_threshold,
    decision_threshold,
    far_at,
    threshold_for,
)
from identity.calibration.records import (
    SHIPPED_DIR,
    Calibration,
    calibration_path,
    known_thresholds,
    load_calibration,
    pipeline_calibration,
    save_calibration,
    shipped_calibration,
    write_record,
)

__all__ = [
    "DEFAULT_FARS",
    "MIN_IMPOSTORS_PER_FAR",
    "SHIPPED_DIR",
    "WIDE_FARS",
    "Calibration",
    "CalibrationReport",
    "FarPoint",
    "auc_of",
    "calibrated_threshold",
    "calibration_path",
    "decision_threshold",
    "eer_of",
    "enough_impostors",
    "evaluate",
    "far_at",
    "far_key",
    "known_thresholds",
    "load_calibration",
    "pair_scores",
    "pipeline_calibration",
    "roc_curve",
    "save_calibration",
    "shipped_calibration",
    "threshold_at_far",
    "threshold_for",
    "threshold_in_sorted",
    "write_record",
]
