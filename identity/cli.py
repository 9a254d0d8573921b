"""The library's commands (``analyze``, ``compare``, ``calibrate``, ``models``) and the error
mapping every command shares (one ``error:`` line, never a traceback).

The full ``identity`` command is assembled on the service side (``services.cli``), which adds
``serve``, ``keys``, ``db``, ``index`` and ``watch``: the library imports nothing from the service.
``python -m identity.cli`` runs the library commands alone.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import AliasChoices, ValidationError
from pydantic_settings import SettingsError
from typer.core import TyperGroup

try:  # recent typer vendors its own click: its usage errors are not click's classes
    from typer._click import exceptions as click_exceptions
except ImportError:  # typer that still depends on click
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from identity.errors import CodedError
from identity.settings import Settings


class PlainErrorsGroup(TyperGroup):
    """Usage errors (unknown option, value out of range, missing argument) as one ``error:``
    line on stderr, like every other error of this CLI, instead of typer's boxed panel."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except click_exceptions.UsageError as exc:
            _usage_error(exc)
            raise  # unreachable: _usage_error exits

    def invoke(self, ctx: Any) -> Any:
        # sub-commands parse their own options inside the group's invoke
        try:
            return super().invoke(ctx)
        except click_exceptions.UsageError as exc:
            _usage_error(exc)


def _usage_error(exc: click_exceptions.UsageError) -> None:
    no_args_is_help = getattr(click_exceptions, "NoArgsIsHelpError", None)  # click >= 8.2
    if no_args_is_help is not None and isinstance(exc, no_args_is_help):
        raise exc  # `identity` alone prints the help, as asked by no_args_is_help
    where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    fail(f"{exc.format_message()}{where}", exc.exit_code)


app = typer.Typer(
    cls=PlainErrorsGroup,
    name="identity",
    help="Face identity platform: analyse, compare, calibrate, serve, ingest galleries.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="Model registry: list, verify checksums, pull weights.", no_args_is_help=True
)
app.add_typer(models_app, name="models")

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def check_far(far: float | None, option: str = "--far") -> None:
    """A FAR is a probability strictly between 0 and 1; refuse others before loading models."""
    if far is not None and not 0 < far < 1:
        fail(f"{option} must be between 0 and 1 (exclusive), got {far:g}")


# Optional extras by top-level module, so a missing import names the pip command that fixes it.
EXTRA_FOR_MODULE = {
    "ray": "ray",
    "torch": "torch",
    "mediapipe": "mesh",
    "hdbscan": "dev",
    "sklearn": "dev",
    "timm": "dev",
    "onnxruntime_gpu": "gpu",
}


def _setting_name(field: str) -> str:
    """The environment variable a Settings field is read from (what the user typed)."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices) and alias.choices:
        return str(alias.choices[0])
    if field not in Settings.model_fields:
        return field
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def describe_error(exc: BaseException) -> str | None:
    """The one-line message for an error a user can cause and fix; None for a real bug."""
    if isinstance(exc, CodedError):
        return f"{exc.message} [{exc.code}]"
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(x) for x in err["loc"])
            name = _setting_name(loc) if exc.title == "Settings" else loc
            # never echo a credential back (DATABASE_URL carries a password)
            secret = re.search(r"key|secret|password|token|url", name, re.IGNORECASE)
            shown = "" if secret else f"={err.get('input')!r}"
            parts.append(f"{name}{shown}: {err['msg']}")
        what = "setting" if exc.title == "Settings" else exc.title
        return f"invalid {what} " + "; ".join(parts)
    if isinstance(exc, SettingsError):
        # pydantic-settings parses list and dict settings as JSON before validating them.
        found = re.search(r'field "([^"]+)"', str(exc))
        name = _setting_name(found.group(1)) if found else "a setting"
        return (
            f"invalid setting {name}: cannot parse its value ({exc.__cause__ or exc}); "
            "list settings are JSON, e.g. '[\"CPUExecutionProvider\"]'"
        )
    if isinstance(exc, UnicodeDecodeError):
        return f"a text input is not UTF-8 ({exc.reason} at byte {exc.start}): save it as UTF-8"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        if top in EXTRA_FOR_MODULE:
            return (
                f"this needs the optional module '{top}', which is not installed: "
                f"pip install 'identity-platform[{EXTRA_FOR_MODULE[top]}]'"
            )
        return f"missing Python module '{exc.name}': reinstall identity-platform"
    if isinstance(exc, ImportError):
        return str(exc)  # our own ImportErrors already say which extra to install
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return str(exc)
    # sqlalchemy is only imported by the commands that use a database: if it was never loaded,
    # the error cannot be one of its errors.
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, sa_exc.OperationalError):
        first = str(exc.orig or exc).strip().splitlines()[0]
        return f"database unreachable or failing: {first} (check DATABASE_URL)"
    # A malformed DATABASE_URL; other ArgumentErrors are bugs in our SQL and keep the traceback.
    if sa_exc is not None and (
        isinstance(exc, sa_exc.NoSuchModuleError)
        or (isinstance(exc, sa_exc.ArgumentError) and "URL" in str(exc))
    ):
        return f"DATABASE_URL is not a usable database URL: {exc} (e.g. postgresql+psycopg://...)"
    return None


def cli_errors(func: F) -> F:
    """Errors a user can cause become one ``error:`` line on stderr and exit status 2, never a
    traceback; anything else is a bug and keeps its traceback."""
    if getattr(func, "_cli_errors", False):
        return func

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            message = describe_error(exc)
            if message is None:
                raise
            fail(message)

    wrapper._cli_errors = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def guard_commands(typer_app: typer.Typer) -> None:
    """Wrap every command of ``typer_app`` and its sub-groups in ``cli_errors``, so commands
    defined elsewhere (``services.cli``) get the same mapping without importing this module."""
    for command in typer_app.registered_commands:
        if command.callback is not None:
            command.callback = cli_errors(command.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            guard_commands(group.typer_instance)


def settings_with(detector: str | None = None, embedder: str | None = None) -> Settings:
    overrides: dict[str, Any] = {
        k: v for k, v in (("detector", detector), ("embedder", embedder)) if v
    }
    return Settings(**overrides)


DetectorOpt = Annotated[
    str | None, typer.Option(help="Detector model (default IDENTITY_DETECTOR).")
]
EmbedderOpt = Annotated[
    str | None, typer.Option(help="Embedder model (default IDENTITY_EMBEDDER).")
]
FarOpt = Annotated[float | None, typer.Option(help="False accept rate that decides a match.")]


def _liveness_text(face: dict[str, Any], threshold: float) -> str:
    score = face.get("liveness")
    if score is None:
        return f" liveness=null ({face.get('liveness_reason')})"
    return (
        f" liveness={score:.3f} ({'live' if score >= threshold else 'SPOOF'} at >= {threshold:.3g})"
    )


# ---------------------------------------------------------------------------------------------
@app.command()
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


@app.command()
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


@app.command()
def calibrate(
    data: Annotated[
        Path,
        typer.Argument(
            help="Folder with one sub-folder per identity, or the base folder for --csv paths."
        ),
    ],
    csv_file: Annotated[Path | None, typer.Option("--csv", help="CSV of path,identity.")] = None,
    far: Annotated[list[float] | None, typer.Option(help="FARs to report (repeatable).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Save the ROC curve as a PNG here.")] = None,
    save: Annotated[bool, typer.Option(help="Store thresholds for the model.")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    set_name: Annotated[
        str | None,
        typer.Option(
            "--set",
            help="Name of the labelled set, recorded as the thresholds' evidence "
            "(default: the folder's name).",
        ),
    ] = None,
    detector: DetectorOpt = None,
    embedder: EmbedderOpt = None,
) -> None:
    """Compute ROC, EER and TAR at FAR on labelled faces and store the thresholds per FAR.

    The record names its evidence (set, identities, genuine and impostor pairs, the 95%
    Clopper-Pearson upper bound of each FAR) and keeps only FARs with at least 3/FAR impostor
    pairs behind them; it is stored per detector + embedder pipeline."""
    from identity.calibration import DEFAULT_FARS, save_calibration
    from identity.labelled import calibrate_from_labelled, read_labelled, save_roc_plot
    from identity.pipeline import FaceAnalyzer

    for value in far or []:
        check_far(value)
    settings = settings_with(detector, embedder)
    try:
        items = read_labelled(data, csv_file)
    except UnicodeDecodeError as exc:
        fail(f"labels CSV {csv_file} is not UTF-8 text ({exc.reason} at byte {exc.start})")
    if not items:
        fail(f"no labelled images found under {data}")
    analyzer = FaceAnalyzer(settings)
    report, genuine, impostor = calibrate_from_labelled(
        items, analyzer, settings, far or DEFAULT_FARS, set_name or data.resolve().name
    )
    saved = save_calibration(report, settings) if save else None
    if plot is not None:
        save_roc_plot(genuine, impostor, plot, f"{report.model}: AUC {report.auc:.4f}")
    if as_json:
        out = report.to_dict()
        out.pop("impostor_quantiles")
        out.pop("impostor_tail")
        out["saved_to"] = str(saved) if saved else None
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(
        f"pipeline {report.pipeline} on {report.set}: {report.n_images} images, "
        f"{report.n_identities} identities, {report.n_genuine} genuine / {report.n_impostor} "
        "impostor pairs"
    )
    typer.echo(f"AUC {report.auc:.4f}  EER {report.eer:.4f} (threshold {report.eer_threshold:.4f})")
    typer.echo(f"{'FAR':>8} {'threshold':>10} {'TAR':>7} {'FAR 95% upper':>14}  note")
    for p in report.points:
        note = (
            ""
            if p.reliable
            else (
                f"not offered: needs {3 / p.far:.0f} impostor pairs (3/FAR), has {report.n_impostor}"
            )
        )
        upper = f"{p.far_upper_95:.2e}" if p.far_upper_95 is not None else "-"
        typer.echo(f"{p.far:>8.0e} {p.threshold:>10.4f} {p.tar:>7.4f} {upper:>14}  {note}")
    for f in report.failed_images:
        typer.echo(f"skipped {f}", err=True)
    if saved:
        typer.echo(f"thresholds saved to {saved}")


# ---------------------------------------------------------------------------------------------
@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every known model: presence, location, checksum state, licence, and how to get it."""
    from identity.registry import load_manifests, model_status

    settings = Settings()
    rows = [
        model_status(n, settings.models_dir, settings.model_cache_dir) for n in load_manifests()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    # The licence decides whether a model may be used at all: shown whole on its own line, never
    # cut to a column; a missing model says how to get it.
    typer.echo(f"{'name':32} {'task':16} {'state':12} location")
    for r in rows:
        state = r["checksum"] if r["present"] else "missing"
        typer.echo(f"{r['name']:32} {r['task']:16} {state:12} {r['location'] or '-'}")
        typer.echo(f"    licence: {r['licence']}")
        if r["how_to_get"]:
            typer.echo(f"    get it: {r['how_to_get']}")


@models_app.command("verify")
def models_verify(names: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """Check the SHA-256 of every present model (or the named ones); exit 1 on a mismatch."""
    from identity.registry import load_manifests, model_status

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
def models_pull(
    name: str,
    allow_unpinned: Annotated[
        bool,
        typer.Option(
            help="Accept a model whose manifest has no SHA-256 and pin the downloaded file's."
        ),
    ] = False,
) -> None:
    """Download a model's weights into the cache, verifying the SHA-256 before keeping them."""
    from identity.registry import pull

    settings = Settings()
    path = pull(name, settings.model_cache_dir, allow_unpinned=allow_unpinned)
    typer.echo(f"{name}: saved to {path}")


guard_commands(app)

if __name__ == "__main__":
    app()
