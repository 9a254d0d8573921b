"""``python -m services.cli ...`` is the ``identity`` command."""

from services.cli import app

app()
