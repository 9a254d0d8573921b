"""Score-level fusion of a face and a body match (``services.body_store``).

When a probe has both a person and a face inside the person box:

    margin_m = (similarity_m - threshold_m) / (1 - threshold_m)     for m in {face, body}
    fused    = (w_face * margin_face + w_body * margin_body) / (w_face + w_body)
    match    = fused >= 0

Each threshold is the model's own calibrated threshold at the requested FAR
(``identity.calibration.threshold_for``), so a margin is 0 exactly at that model's decision
boundary and 1 at identical templates: the two scores are put on one calibrated scale before
they are mixed (score-level fusion after per-matcher normalisation). With one modality present
the rule reduces to that modality's own calibrated decision. Faces weigh more by default
(w_face = 2, w_body = 1): clothing changes between days, faces do not.
"""

from __future__ import annotations

from identity.errors import InvalidInput

FACE_WEIGHT = 2.0
BODY_WEIGHT = 1.0


def margin(similarity: float, threshold: float) -> float:
    """Similarity above the calibrated threshold, as a fraction of the room above it."""
    if not -1.0 <= threshold < 1.0:
        raise InvalidInput("threshold must be in [-1, 1)", threshold=threshold)
    return (float(similarity) - threshold) / (1.0 - threshold)


def fuse(
    face: tuple[float, float] | None,
    body: tuple[float, float] | None,
    face_weight: float = FACE_WEIGHT,
    body_weight: float = BODY_WEIGHT,
) -> float | None:
    """Fused score from (similarity, threshold) pairs; >= 0 is a match; None with no score."""
    terms = []
    if face is not None:
        terms.append((face_weight, margin(*face)))
    if body is not None:
        terms.append((body_weight, margin(*body)))
    if not terms:
        return None
    return sum(w * m for w, m in terms) / sum(w for w, _ in terms)
