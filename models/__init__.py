"""The model registry: one TOML manifest per model in ``manifests/`` and the code in ``registry``."""

from models.registry import Manifest, ResolvedModel, get_manifest, load_manifests, pull, resolve

__all__ = ["Manifest", "ResolvedModel", "get_manifest", "load_manifests", "pull", "resolve"]
