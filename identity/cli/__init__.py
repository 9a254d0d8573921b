"""The library's commands (``analyze``, ``compare``, ``calibrate``, ``models``) and the error
mapping every command shares (one ``error:`` line, never a traceback).

The full ``identity`` command is assembled on the service side (``services.cli``), which adds
``serve``, ``keys``, ``db``, ``ingest``, ``jobs``, ``audit`` and ``watch``: the library imports
nothing from the service. ``python -m identity.cli`` runs the library commands alone.

One module per topic: ``errors`` (the mapping, ``cli_errors``, ``guard_commands``), ``options``
(shared options), ``analyze`` (``analyze``, ``compare``), ``calibrate``, ``models``.
"""

from __future__ import annotations

import typer

from identity.cli.analyze import analyze, compare
from identity.cli.calibrate import calibrate
from identity.cli.errors import PlainErrorsGroup, cli_errors, describe_error, fail, guard_commands
from identity.cli.models import models_app

app = typer.Typer(
    cls=PlainErrorsGroup,
    name="identity",
    help="Face identity platform: analyse, compare, calibrate, serve, ingest galleries.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models_app, name="models")
app.command()(analyze)
app.command()(compare)
app.command()(calibrate)

guard_commands(app)

__all__ = ["app", "cli_errors", "describe_error", "fail", "guard_commands"]
