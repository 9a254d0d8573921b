"""``identity calibrate``: ROC, EER and thresholds per FAR from labelled faces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from identity.cli.errors import fail
from identity.cli.options import DetectorOpt, EmbedderOpt, check_far, settings_with


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
