"""``identity analyze`` and ``identity compare``: what the pipeline finds in images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from identity.cli.options import DetectorOpt, EmbedderOpt, FarOpt, check_far, settings_with
from identity.errors import CodedError


def _liveness_text(face: dict[str, Any], threshold: float) -> str:
    score = face.get("liveness")
    if score is None:
        return f" liveness=null ({face.get('liveness_reason')})"
    return (
        f" liveness={score:.3f} ({'live' if score >= threshold else 'SPOOF'} at >= {threshold:.3g})"
    )


def analyze(
    images: Annotated[list[Path], typer.Argument(help="Image files.", exists=False)],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    embeddings: Annotated[bool, typer.Option("--embeddings", help="Include embeddings.")] = False,
    detector: DetectorOpt = None,
    embedder: EmbedderOpt = None,
    liveness: Annotated[
        bool,
        typer.Option("--liveness", help="Presentation-attack score per face (docs/liveness.md)."),
    ] = False,
) -> None:
    """Detect faces and report boxes, landmarks, quality and embeddings for each image."""
    from identity.errors import ModelError
    from identity.image import load_image
    from identity.pipeline import FaceAnalyzer

    settings = settings_with(detector, embedder)
    analyzer = FaceAnalyzer(settings)
    live_thr = None
    if liveness:
        from identity.liveness import liveness_threshold

        live_thr = liveness_threshold(settings).to_dict()
    results: list[dict[str, Any]] = []
    failures = 0
    for path in images:
        # One bad file among many is reported and skipped; the exit status says some failed.
        try:
            image = load_image(path, settings)
            faces = analyzer.analyze([image], liveness=liveness)
        except ModelError:
            raise  # models load on first use: a broken model is not this image's fault
        except CodedError as exc:
            failures += 1
            typer.echo(f"error: {path}: {exc.message} [{exc.code}]", err=True)
            results.append({"image": str(path), "error": exc.to_dict()})
            continue
        results.append(
            {
                "image": str(path),
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "detector": analyzer.detector_name,
                "embedder": analyzer.embedder_name,
                "faces": faces.sorted_by_area().to_dicts(with_embeddings=embeddings),
                **({"liveness_threshold": live_thr} if live_thr else {}),
            }
        )
    if as_json:
        # Always a list, one entry per image in argument order, so callers need not special-case
        # a single image.
        typer.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                continue  # already reported on stderr
            typer.echo(f"{r['image']} ({r['width']}x{r['height']}): {len(r['faces'])} face(s)")
            for i, f in enumerate(r["faces"]):
                q = f.get("quality", {})
                reasons = ", ".join(q.get("reasons", [])) or "ok"
                box = ", ".join(f"{v:.0f}" for v in f["bbox"])
                typer.echo(
                    f"  [{i}] bbox=({box}) det={f['det_score']:.3f} "
                    f"quality={q.get('score', float('nan')):.2f} ({reasons}) "
                    f"norm={f.get('embedding_norm', float('nan')):.2f}"
                    + (_liveness_text(f, live_thr["threshold"]) if live_thr else "")
                )
    if failures:
        raise typer.Exit(1)


def compare(
    image_a: Path,
    image_b: Path,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    far: FarOpt = None,
    detector: DetectorOpt = None,
    embedder: EmbedderOpt = None,
) -> None:
    """Compare the largest face of two images: similarity, threshold, FAR and decision."""
    from identity.calibration import calibrated_threshold, far_at
    from identity.errors import NoFaceFound
    from identity.image import load_image
    from identity.pipeline import FaceAnalyzer

    check_far(far)
    settings = settings_with(detector, embedder)
    analyzer = FaceAnalyzer(settings)
    embs = []
    for path in (image_a, image_b):
        faces = analyzer.analyze([load_image(path, settings)])
        if not len(faces):
            raise NoFaceFound(f"no face found in {path}", image=str(path))
        best = faces.largest()
        assert best.embeddings is not None  # analyze embeds by default
        embs.append(best.embeddings[0])
    similarity = float(embs[0] @ embs[1])
    decision_far = far if far is not None else settings.default_far
    threshold, calibration = calibrated_threshold(
        analyzer.embedder_name, decision_far, settings, analyzer.detector_name
    )
    result = {
        "similarity": round(similarity, 4),
        "threshold": round(threshold, 4),
        "far": decision_far,
        "estimated_far_at_similarity": far_at(
            analyzer.embedder_name, similarity, settings, analyzer.detector_name
        ),
        "match": similarity >= threshold,
        "embedder": analyzer.embedder_name,
        "calibration": calibration.evidence(decision_far),
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        verdict = "MATCH" if result["match"] else "no match"
        typer.echo(
            f"{verdict}: similarity {similarity:.4f}, threshold {threshold:.4f} at FAR "
            f"{decision_far:g} ({analyzer.embedder_name})"
        )
