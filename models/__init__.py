"""Model manifests: one TOML file per model in ``manifests/`` (data only).

The code that reads them, resolves and verifies weights lives in the library:
``identity.registry``.
"""
