"""Model sessions: created lazily on first use, shared, guarded against concurrent loading,
and unloaded when idle (the way Immich's machine-learning service keeps its models).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from identity.registry import ResolvedModel, resolve
from identity.settings import Settings

T = TypeVar("T")


def resolve_model(name: str, settings: Settings) -> ResolvedModel:
    return resolve(name, settings.models_dir, settings.model_cache_dir)


def onnx_session(
    resolved: ResolvedModel,
    settings: Settings,
    spinning: bool = True,
    extra_outputs: Sequence[str] = (),
) -> Any:
    """An onnxruntime session on the first available provider named in settings.

    ``extra_outputs`` names inner tensors the session returns after the graph's own outputs
    (e.g. a feature map for ``identity.recognisability``); the graph is edited in memory only.

    Spinning (intra-op threads busy-waiting after each run) needs ``spinning`` and
    ``settings.onnx_spinning``. Every session has its own thread pool, so when models run one
    after another (detector, embedder, the liveness pair) or requests run side by side, each
    pool's spinning threads steal the cores the next run needs: on 2 cores the two MiniFASNets
    took 40 ms a face spinning and 16 ms not (5 ms each alone).

    With ``intra_op_threads`` 0 on the CPU the session is an ``AdaptiveSession``.
    """
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    providers = [p for p in settings.onnx_providers if p in available] or ["CPUExecutionProvider"]
    source: bytes | str
    if extra_outputs:
        source = with_outputs(resolved.read_bytes(), extra_outputs)
    else:
        source = resolved.read_bytes() if resolved.blob is not None else str(resolved.path)

    def make(threads: int) -> Any:
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        if not (spinning and settings.onnx_spinning):
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(source, sess_options=opts, providers=providers)

    if settings.intra_op_threads or providers[0] != "CPUExecutionProvider":
        return make(settings.intra_op_threads)
    return AdaptiveSession(make)


def with_outputs(model: bytes, names: Sequence[str]) -> bytes:
    """The ONNX graph ``model`` with the inner tensors ``names`` added as outputs."""
    import onnx

    graph = onnx.load_from_string(model)
    for name in names:
        graph.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    return bytes(graph.SerializeToString())


def on_cpu(session: Any) -> bool:
    """Whether an ``onnx_session`` runs on the CPU (an ``AdaptiveSession`` always does)."""
    if isinstance(session, AdaptiveSession):
        return True
    return bool(session.get_providers()[0] == "CPUExecutionProvider")


class _InFlight:
    """How many threads of this process are busy with image work (a model run, or a whole
    analysis that ``working`` marks: decoding and alignment included)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self.busy = 0

    @contextmanager
    def working(self) -> Iterator[int]:
        """Mark this thread busy (re-entrant); yields how many other threads were busy."""
        depth = getattr(self._local, "depth", 0)
        with self._lock:
            if depth == 0:
                self.busy += 1
            others = self.busy - 1
        self._local.depth = depth + 1
        try:
            yield others
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._lock:
                    self.busy -= 1


IN_FLIGHT = _InFlight()


class AdaptiveSession:
    """One model behind two onnxruntime sessions: every core for a run that is alone, one
    thread for a run that starts while other threads are busy with image work (``IN_FLIGHT``:
    a request still decoding counts, so its neighbour's run does not take its core).

    A lone request gets the lowest latency from intra-op threads; requests side by side get
    more done each on one core than sharing every core, and none of the thread pools
    oversubscribes the machine (bench/api.py; docs/service.md, "Load on loopback"). The one-thread
    session is made on first contention, so a process that never runs two at once holds one.
    """

    def __init__(self, make: Callable[[int], Any]) -> None:
        self._make = make
        self._wide = make(0)
        self._narrow: Any = None
        self._lock = threading.Lock()

    def get_inputs(self) -> Any:
        return self._wide.get_inputs()

    def get_outputs(self) -> Any:
        return self._wide.get_outputs()

    def _one_thread(self) -> Any:
        with self._lock:
            if self._narrow is None:
                self._narrow = self._make(1)
            return self._narrow

    def run(self, output_names: Any, feeds: dict[str, Any]) -> Any:
        with IN_FLIGHT.working() as others:
            session = self._wide if others == 0 else self._one_thread()
            return session.run(output_names, feeds)


def openvino_model(resolved: ResolvedModel, settings: Settings) -> Any:
    """An OpenVINO compiled model (CPU) for an IR pair (.xml + .bin), with a dynamic batch.

    Intel's IRs are exported with batch 1; their layers are batch-agnostic, so the first
    dimension is opened up here and one call takes the whole batch. The ``openvino`` package is
    the ``body`` extra.
    """
    try:
        import openvino as ov
    except ImportError as exc:
        from identity.errors import ModelError

        raise ModelError(
            f"model '{resolved.manifest.name}' needs the openvino runtime: pip install "
            "'identity-platform[body]'",
            model=resolved.manifest.name,
        ) from exc
    if resolved.path is None or resolved.weights_path is None:
        from identity.errors import ModelError

        raise ModelError(f"model '{resolved.manifest.name}' must be an IR file pair (.xml, .bin)")
    core = ov.Core()
    model = core.read_model(str(resolved.path), str(resolved.weights_path))
    shapes = {}
    for port in model.inputs:
        dims = port.get_partial_shape()
        dims[0] = -1
        shapes[port.any_name] = dims
    model.reshape(shapes)
    config = (
        {"INFERENCE_NUM_THREADS": settings.intra_op_threads} if settings.intra_op_threads else {}
    )
    return core.compile_model(model, "CPU", config)


class ModelPool:
    """Process-wide cache of loaded runners keyed by (kind, name).

    ``get`` builds a runner once even when many threads ask at the same time; ``unload_idle``
    drops runners unused for ``idle_s`` seconds so a quiet service gives its memory back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._items: dict[tuple[str, str], Any] = {}
        self._last_used: dict[tuple[str, str], float] = {}
        self.load_seconds: dict[tuple[str, str], float] = {}

    def get(self, kind: str, name: str, factory: Callable[[], T]) -> T:
        key = (kind, name)
        with self._lock:
            if key in self._items:
                self._last_used[key] = time.monotonic()
                return self._items[key]  # type: ignore[no-any-return]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]  # type: ignore[no-any-return]
            start = time.perf_counter()
            item = factory()
            with self._lock:
                self._items[key] = item
                self._last_used[key] = time.monotonic()
                self.load_seconds[key] = time.perf_counter() - start
            return item

    def loaded(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._items)

    def unload_idle(self, idle_s: float) -> list[tuple[str, str]]:
        now = time.monotonic()
        with self._lock:
            stale = [k for k, t in self._last_used.items() if now - t > idle_s]
            for k in stale:
                self._items.pop(k, None)
                self._last_used.pop(k, None)
        return stale

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._last_used.clear()


POOL = ModelPool()


def build_runner(runners: dict[str, str], name: str, settings: Settings) -> Any:
    """Instantiate the runner class a manifest names: ``Class(resolved_model, settings)``."""
    import importlib

    from identity.errors import ModelError
    from identity.registry import get_manifest

    manifest = get_manifest(name)
    if manifest.runner not in runners:
        raise ModelError(
            f"model '{name}' uses runner '{manifest.runner}', which is not one of "
            f"{sorted(runners)} for this task",
            model=name,
        )
    module_name, _, cls_name = runners[manifest.runner].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(resolve_model(name, settings), settings)
