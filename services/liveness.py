"""The per-collection liveness policy applied to a probe or enrollment face.

``off``: no presentation-attack check unless the request opts in (``liveness=true``), which then
reports the score. ``report``: the score is always computed and returned, never decides.
``require``: a face judged an attack is refused (``PresentationAttack``, 422) and a face that
cannot be judged (too small, cut by the border) too (``LivenessUndetermined``, 422); the caller
audits the refusal. The threshold is the calibrated one for ``IDENTITY_LIVENESS_BPCER``
(``identity.liveness.calibration``), returned with its evidence in every result.

The scores themselves come from the library (``FaceAnalyzer.analyze(..., liveness=True)``); this
module only turns them into a verdict.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

from identity.errors import InvalidInput, LivenessUndetermined, PresentationAttack
from identity.faces import Faces
from identity.settings import Settings

LivenessPolicy = Literal["off", "report", "require"]
POLICIES: tuple[str, ...] = get_args(LivenessPolicy)


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise InvalidInput(
            f"liveness_policy must be one of {', '.join(POLICIES)}", liveness_policy=policy
        )
    return policy


def wanted(policy: str, requested: bool) -> bool:
    """Whether this request runs the check at all."""
    return policy != "off" or requested


def verdicts(faces: Faces, policy: str, settings: Settings) -> list[dict[str, Any]]:
    """One ``liveness`` object per face: score (None when not judged), live, threshold and why."""
    from identity.liveness import liveness_threshold

    if faces.liveness is None:
        raise InvalidInput("faces were analysed without liveness")
    thr = liveness_threshold(settings)
    out = []
    for i in range(len(faces)):
        score = float(faces.liveness[i])
        judged = not math.isnan(score)
        out.append(
            {
                "policy": policy,
                "score": round(score, 6) if judged else None,
                "live": bool(score >= thr.threshold) if judged else None,
                "reason": None if judged else (faces.liveness_reasons or [None] * len(faces))[i],
                **thr.to_dict(),
            }
        )
    return out


def refusal(verdict: dict[str, Any]) -> PresentationAttack | LivenessUndetermined | None:
    """The error a ``require`` policy raises for this verdict, or None when the face may pass."""
    if verdict["policy"] != "require" or verdict["live"]:
        return None
    if verdict["score"] is None:
        return LivenessUndetermined(
            f"liveness could not be judged ({verdict['reason']}); retake the photo with the whole "
            "face inside the frame and closer to the camera",
            reason=verdict["reason"],
        )
    return PresentationAttack(
        "the face was judged a presentation attack (printed photo or screen), not a live face",
        score=verdict["score"],
        threshold=verdict["threshold"],
        operating_point=verdict["operating_point"],
        meaning=verdict["meaning"],
    )


def audit_fields(verdict: dict[str, Any]) -> dict[str, Any]:
    """What the audit keeps of a verdict (not the evidence, which lives in the calibration file)."""
    return {
        "liveness": {
            k: verdict[k]
            for k in ("policy", "score", "live", "reason", "threshold", "operating_point")
        }
    }


# What a template keeps of its enrollment verdict (the score has its own column, see tables.py).
STORED = ("policy", "live", "reason", "threshold", "operating_point", "models")


def stored_verdict(verdict: dict[str, Any]) -> tuple[float | None, dict[str, Any]]:
    """(score, verdict without score) as ``face_templates.liveness`` and ``liveness_verdict``."""
    return verdict["score"], {k: verdict[k] for k in STORED}


def template_liveness(score: float | None, verdict: dict[str, Any] | None) -> dict[str, Any] | None:
    """A template's enrollment liveness as the API returns it; None when no check ran."""
    return None if verdict is None else {"score": score, **verdict}
