"""``identity templates``: a collection's face models (status, migrate, switch, drop) and the
enrollment gate re-run on its stored templates (``gate``).

The procedure (docs/model-migration.md): ``migrate --to NEW`` re-embeds the kept source crops
while decisions go on with the active model (resumable: run it again after a kill or new
enrolments), ``switch --to NEW`` makes it active in one step (and ``switch --to OLD`` back),
``drop --model OLD`` deletes the old templates once nobody needs them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

templates_app = typer.Typer(
    help="A collection's templates: face models (status, migrate, switch, drop) and the gate.",
    no_args_is_help=True,
)

CollectionOpt = Annotated[str, typer.Option("--collection", "-c", help="Collection.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@contextmanager
def _store() -> Iterator[Any]:
    from identity.settings import Settings
    from services.db import open_database, upgrade
    from services.embedded_pg import exit_on_sigterm
    from services.store import IdentityStore

    exit_on_sigterm()
    settings = Settings()
    with open_database(settings) as eng:
        upgrade(eng)
        yield IdentityStore(settings, eng), eng


@templates_app.command("status")
def status(collection: CollectionOpt, as_json: JsonOpt = False) -> None:
    """The active model and, per model, templates, source crops and what it does not cover."""
    with _store() as (store, _):
        out = store.face_models(collection)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"{collection}: active model {out['active']}")
    for m in out["models"]:
        mark = "*" if m["active"] else " "
        typer.echo(
            f" {mark} {m['model']:32} templates {m['templates']:>7}  crops {m['with_crop']:>7}  "
            f"uncovered {m['uncovered']:>7}"
            + (
                f"  (not calibrated: {m['calibration_problem']})"
                if m["calibration_problem"]
                else ""
            )
        )


@templates_app.command("migrate")
def migrate(
    collection: CollectionOpt,
    to: Annotated[str, typer.Option("--to", help="The face model to re-embed with.")],
    as_json: JsonOpt = False,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
) -> None:
    """Re-embed the collection's templates with another model, beside the active ones.

    Decisions keep using the active model; rerun to resume after a kill or new enrolments."""
    from tqdm import tqdm

    from services.gallery import GalleryStore, run_migration

    with _store() as (store, engine):
        bar = tqdm(desc="migrating", unit="face", file=sys.stderr, disable=not progress)

        def on_progress(report: Any) -> None:
            bar.total = report.total
            bar.update(report.done - bar.n)

        try:
            report = run_migration(
                GalleryStore(store, engine), collection, to, on_progress=on_progress
            )
        finally:
            bar.close()
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.to_text())


@templates_app.command("switch")
def switch(
    collection: CollectionOpt,
    to: Annotated[str, typer.Option("--to", help="The face model to decide with from now.")],
    force: Annotated[
        bool, typer.Option(help="Switch although some templates are not migrated yet.")
    ] = False,
) -> None:
    """Make a model the collection's active one (one step; switch back the same way)."""
    with _store() as (store, _):
        out = store.switch_model(collection, to, force=force)
    typer.echo(f"{collection}: active model {out['active']} (was {out['previous']})")


@templates_app.command("drop")
def drop(
    collection: CollectionOpt,
    model: Annotated[str, typer.Option("--model", help="The (inactive) model to drop.")],
) -> None:
    """Delete every template of an inactive model (erased like an identity's: files, index)."""
    with _store() as (store, _):
        out = store.drop_model(collection, model)
    typer.echo(f"{collection}: dropped {out['dropped']} templates of {model}")


@templates_app.command("gate")
def gate(
    collection: CollectionOpt,
    min_quality: Annotated[
        float | None,
        typer.Option("--min-quality", help="Gate to apply (default IDENTITY_ENROLL_MIN_QUALITY)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-run the enrollment gate on the stored templates: who falls below it (deletes nothing;
    remove a face on the dashboard's identity page)."""
    with _store() as (store, _):
        out = store.quality_report(collection, min_quality)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(
        f"{collection} ({out['model']}): {out['templates_below_gate']} of "
        f"{out['templates_checked']} templates below the gate (quality >= {out['min_quality']}) "
        f"in {out['identities_with_templates_below_gate']} of {out['identities_checked']} "
        f"identities; {len(out['identities_with_no_template_passing'])} left with none passing"
        + (
            f"; {out['templates_quality_missing']} without a stored quality"
            if out["templates_quality_missing"]
            else ""
        )
    )
    for p in out["identities"]:
        none = "  NO TEMPLATE PASSES" if p["no_template_passes"] else ""
        typer.echo(f"  {p['external_id']} ({p['passing']}/{p['templates']} pass){none}")
        for t in p["below_gate"]:
            typer.echo(f"    face {t['template_id']}: " + "; ".join(t["gate_reasons"]))
        for t in p["not_stored"]:
            typer.echo(f"    face {t['template_id']}: not stored: " + ", ".join(t["missing"]))


def register(app: typer.Typer) -> None:
    app.add_typer(templates_app, name="templates")
