"""The error mapping every command shares: a user's mistake is one ``error:`` line on stderr and
a non-zero exit, never a traceback or typer's boxed panel; a real bug keeps its traceback."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

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


F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


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
