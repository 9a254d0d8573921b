"""The ``identity`` command line.

Library commands live here; the service, batch and video commands live beside their code and are
registered at the bottom, imported lazily so ``identity analyze`` never loads FastAPI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from identity.errors import IdentityError
from identity.settings import Settings

app = typer.Typer(
    name="identity",
    help="Face identity platform: analyse, compare, calibrate, serve, index galleries.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Model registry: list, verify checksums, pull weights.", no_args_is_help=True)
app.add_typer(models_app, name="models")

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def cli_errors(func: F) -> F:
    """Typed errors become one line on stderr and exit status 2, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except IdentityError as exc:
            fail(f"{exc.message} [{exc.code}]")
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


def settings_with(detector: str | None = None, embedder: str | None = None) -> Settings:
    overrides = {k: v for k, v in (("detector", detector), ("embedder", embedder)) if v}
    return Settings(**overrides)


DetectorOpt = Annotated[str | None, typer.Option(help="Detector model (default IDENTITY_DETECTOR).")]
EmbedderOpt = Annotated[str | None, typer.Option(help="Embedder model (default IDENTITY_EMBEDDER).")]
FarOpt = Annotated[float | None, typer.Option(help="False accept rate that decides a match.")]


# ---------------------------------------------------------------------------------------------
@app.command()
@cli_errors
def analyze(
    images: Annotated[list[Path], typer.Argument(help="Image files.", exists=False)],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    embeddings: Annotated[bool, typer.Option("--embeddings", help="Include embeddings.")] = False,
    detector: DetectorOpt = None,
    embedder: EmbedderOpt = None,
) -> None:
    """Detect faces and report boxes, landmarks, quality and embeddings for each image."""
    from identity.image import load_image
    from identity.pipeline import FaceAnalyzer

    settings = settings_with(detector, embedder)
    analyzer = FaceAnalyzer(settings)
    results: list[dict[str, Any]] = []
    failures = 0
    for path in images:
        try:
            image = load_image(path, settings)
        except IdentityError as exc:
            failures += 1
            results.append({"image": str(path), "error": exc.to_dict()})
            continue
        faces = analyzer.analyze([image])
        results.append(
            {
                "image": str(path),
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "detector": analyzer.detector_name,
                "embedder": analyzer.embedder_name,
                "faces": faces.sorted_by_area().to_dicts(with_embeddings=embeddings),
            }
        )
    if as_json:
        typer.echo(json.dumps(results if len(results) > 1 else results[0], indent=2))
    else:
        for r in results:
            if "error" in r:
                typer.echo(f"{r['image']}: error: {r['error']['message']}")
                continue
            typer.echo(f"{r['image']} ({r['width']}x{r['height']}): {len(r['faces'])} face(s)")
            for i, f in enumerate(r["faces"]):
                q = f.get("quality", {})
                reasons = ", ".join(q.get("reasons", [])) or "ok"
                box = ", ".join(f"{v:.0f}" for v in f["bbox"])
                typer.echo(
                    f"  [{i}] bbox=({box}) det={f['det_score']:.3f} "
                    f"quality={q.get('score', float('nan')):.2f} ({reasons}) "
                    f"norm={f.get('embedding_norm', float('nan')):.2f}"
                )
    if failures:
        raise typer.Exit(1)


@app.command()
@cli_errors
def compare(
    image_a: Path,
    image_b: Path,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    far: FarOpt = None,
    detector: DetectorOpt = None,
    embedder: EmbedderOpt = None,
) -> None:
    """Compare the largest face of two images: similarity, threshold, FAR and decision."""
    from identity.calibration import far_at, threshold_for
    from identity.errors import NoFaceFound
    from identity.image import load_image
    from identity.pipeline import FaceAnalyzer

    settings = settings_with(detector, embedder)
    analyzer = FaceAnalyzer(settings)
    embs = []
    for path in (image_a, image_b):
        faces = analyzer.analyze([load_image(path, settings)])
        if not len(faces):
            raise NoFaceFound(f"no face found in {path}", image=str(path))
        embs.append(faces.largest().embeddings[0])
    similarity = float(embs[0] @ embs[1])
    decision_far = far if far is not None else settings.default_far
    threshold = threshold_for(analyzer.embedder_name, decision_far, settings)
    result = {
        "similarity": round(similarity, 4),
        "threshold": round(threshold, 4),
        "far": decision_far,
        "estimated_far_at_similarity": far_at(analyzer.embedder_name, similarity, settings),
        "match": similarity >= threshold,
        "embedder": analyzer.embedder_name,
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        verdict = "MATCH" if result["match"] else "no match"
        typer.echo(
            f"{verdict}: similarity {similarity:.4f}, threshold {threshold:.4f} at FAR "
            f"{decision_far:g} ({analyzer.embedder_name})"
        )


@app.command()
@cli_errors
def calibrate(
    data: Annotated[Path, typer.Argument(help="Folder with one sub-folder per identity, or the "
                                               "base folder for --csv paths.")],
    csv_file: Annotated[Path | None, typer.Option("--csv", help="CSV of path,identity.")] = None,
    far: Annotated[list[float] | None, typer.Option(help="FARs to report (repeatable).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Save the ROC curve as a PNG here.")] = None,
    save: Annotated[bool, typer.Option(help="Store thresholds for the model.")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    detector: DetectorOpt = None,
    embedder: EmbedderOpt = None,
) -> None:
    """Compute ROC, EER and TAR at FAR on labelled faces and store the thresholds per FAR."""
    from identity.calibration import (
        DEFAULT_FARS,
        calibrate_from_labelled,
        read_labelled,
        save_calibration,
        save_roc_plot,
    )
    from identity.pipeline import FaceAnalyzer

    settings = settings_with(detector, embedder)
    items = read_labelled(data, csv_file)
    if not items:
        fail(f"no labelled images found under {data}")
    analyzer = FaceAnalyzer(settings)
    report, genuine, impostor = calibrate_from_labelled(items, analyzer, settings, far or DEFAULT_FARS)
    saved = save_calibration(report, settings) if save else None
    if plot is not None:
        save_roc_plot(genuine, impostor, plot, f"{report.model}: AUC {report.auc:.4f}")
    if as_json:
        out = report.to_dict()
        out.pop("impostor_quantiles")
        out["saved_to"] = str(saved) if saved else None
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(
        f"model {report.model}: {report.n_images} images, {report.n_identities} identities, "
        f"{report.n_genuine} genuine / {report.n_impostor} impostor pairs"
    )
    typer.echo(f"AUC {report.auc:.4f}  EER {report.eer:.4f} (threshold {report.eer_threshold:.4f})")
    typer.echo(f"{'FAR':>8} {'threshold':>10} {'TAR':>7}  note")
    for p in report.points:
        note = "" if p.reliable else f"unreliable: fewer than {1 / p.far:.0f} impostor pairs"
        typer.echo(f"{p.far:>8.0e} {p.threshold:>10.4f} {p.tar:>7.4f}  {note}")
    for f in report.failed_images:
        typer.echo(f"skipped {f}", err=True)
    if saved:
        typer.echo(f"thresholds saved to {saved}")


# ---------------------------------------------------------------------------------------------
@models_app.command("list")
@cli_errors
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every known model: presence, location, licence and checksum state."""
    from models.registry import load_manifests, model_status

    settings = Settings()
    rows = [model_status(n, settings.models_dir, settings.model_cache_dir) for n in load_manifests()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'name':32} {'task':16} {'state':12} {'licence':34} location")
    for r in rows:
        state = r["checksum"] if r["present"] else "missing"
        typer.echo(f"{r['name']:32} {r['task']:16} {state:12} {r['licence'][:34]:34} {r['location'] or '-'}")


@models_app.command("verify")
@cli_errors
def models_verify(names: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """Check the SHA-256 of every present model (or the named ones); exit 1 on a mismatch."""
    from models.registry import load_manifests, model_status

    settings = Settings()
    bad = 0
    for name in names or list(load_manifests()):
        r = model_status(name, settings.models_dir, settings.model_cache_dir)
        if not r["present"]:
            if names:
                bad += 1
            typer.echo(f"{name}: missing")
            continue
        typer.echo(f"{name}: {r['checksum']} ({r['location']})")
        bad += r["checksum"] == "MISMATCH"
    if bad:
        raise typer.Exit(1)


@models_app.command("pull")
@cli_errors
def models_pull(
    name: str,
    allow_unpinned: Annotated[bool, typer.Option(
        help="Accept a model whose manifest has no SHA-256 and pin the downloaded file's.")] = False,
) -> None:
    """Download a model's weights into the cache, verifying the SHA-256 before keeping them."""
    from models.registry import pull

    settings = Settings()
    path = pull(name, settings.model_cache_dir, allow_unpinned=allow_unpinned)
    typer.echo(f"{name}: saved to {path}")


# --- commands that live beside their own code (registered lazily) ----------------------------

# service: serve, db upgrade|reindex, keys create|list|revoke (services/cli.py imports no FastAPI)
from services.cli import register as _register_service_commands  # noqa: E402

_register_service_commands(app)

# video: identity watch SOURCE --gallery DIR | --collection C (identity/video/cli.py)
from identity.video.cli import watch as _watch  # noqa: E402

app.command("watch")(_watch)

# gallery: identity index PATH --collection C (identity/gallery/cli.py)
from identity.gallery.cli import register as _register_gallery_commands  # noqa: E402

_register_gallery_commands(app)
