"""The ``identity`` command: the library's commands (``identity.cli``) plus the service's.

Assembled here because only the service side may see both: ``serve``, ``db``, ``keys``, ``audit``
(``service.py``), ``ingest`` (``ingest.py``: batch gallery ingestion into the store),
``templates`` (``templates.py``: a collection's face models, migration, the gate re-run) and ``watch`` (``watch.py``). Service modules are imported inside each command, so ``identity analyze`` never
loads FastAPI or SQLAlchemy.
"""

from __future__ import annotations

from identity.cli import app, guard_commands
from services.cli import ingest, service, templates, watch

service.register(app)
ingest.register(app)
templates.register(app)
app.command("watch")(watch.watch)

# Last: every command registered above maps errors the same way as the library's.
guard_commands(app)

__all__ = ["app"]
