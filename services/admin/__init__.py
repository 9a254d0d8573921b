"""The admin dashboard: server-rendered pages at ``/admin`` (see ``routes.router``)."""
