"""``python -m identity.cli``: the library's commands alone (the service adds the rest)."""

from identity.cli import app

if __name__ == "__main__":
    app()
