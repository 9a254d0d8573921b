"""Turning service data into what the dashboard's templates show.

- ``annotated_probe``: the probe image (upright, downscaled) as a data URL plus its face boxes in
  the same pixel space, drawn by the template as an SVG overlay: no canvas, no JavaScript, and the
  boxes scale with the picture at any screen width.
- ``human_metrics``: the app's Prometheus registry read in-process into per-route counts and
  latencies, so an operator needs no Prometheus server to see what the service is doing.
- ``system_models`` / ``thresholds_table``: model presence, licence and checksum state, and the
  FAR -> threshold table in use.
"""

from __future__ import annotations

import base64
import math
from datetime import datetime
from typing import Any

from identity.errors import CodedError
from identity.settings import Settings

PROBE_MAX_SIDE = 960


def annotated_probe(data: bytes, settings: Settings, faces: list[dict[str, Any]]) -> dict[str, Any]:
    import cv2

    from identity.image import decode_image_bounded

    # Decoded as the pipeline does (EXIF upright, bounded), so the boxes land on the right pixels.
    decoded = decode_image_bounded(data, settings)
    image = decoded.image_bgr
    h, w = image.shape[:2]
    scale = min(1.0, PROBE_MAX_SIDE / max(h, w))
    if scale < 1.0:
        image = cv2.resize(
            image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
        )
    # face boxes are in the upload's pixels: through the decode's reduction, then the preview's
    fx, fy = decoded.scale_xy[0] * scale, decoded.scale_xy[1] * scale
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:  # cv2 only fails here on an empty array, which decode_image never returns
        raise RuntimeError("could not encode the probe preview")
    boxes = []
    for n, face in enumerate(faces, start=1):
        x1, y1, x2, y2 = (float(v) * f for v, f in zip(face["bbox"], (fx, fy, fx, fy), strict=True))
        top = face["candidates"][0] if face["candidates"] else None
        boxes.append(
            {
                "n": n,
                "x": x1,
                "y": y1,
                "w": x2 - x1,
                "h": y2 - y1,
                "match": bool(top and top["match"]),
                "label": f"#{n}" + (f" {top['external_id']}" if top and top["match"] else ""),
            }
        )
    height, width = image.shape[:2]
    return {
        "src": "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode(),
        "width": width,
        "height": height,
        "boxes": boxes,
        # stroke and font in image pixels, so they look the same size whatever the picture's size
        "stroke": max(2.0, max(width, height) / 300),
        "font": max(12.0, max(width, height) / 40),
    }


def format_when(value: Any) -> str:
    """UTC, to the second: audit times must compare across operators in different zones."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value.tzinfo else value.isoformat()
    return "" if value is None else str(value)


def format_detail(value: Any) -> str:
    """An audit detail value, short: floats to 4 decimals, lists comma-joined."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1 else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, list):
        return "[" + ", ".join(format_detail(v) for v in value) + "]"
    return str(value)


def format_duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "—"
    if math.isinf(seconds):
        return "slowest bucket"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def system_models(settings: Settings) -> list[dict[str, Any]]:
    from identity.registry import model_status
    from identity.runtime import POOL

    loaded = {name: kind for kind, name in POOL.loaded()}
    load_seconds = {name: s for (_, name), s in dict(POOL.load_seconds).items()}
    rows = []
    for role, name in (
        ("detector", settings.detector),
        ("face embedder", settings.embedder),
        ("body embedder", settings.body_embedder),
    ):
        try:
            status = model_status(name, settings.models_dir, settings.model_cache_dir)
        except CodedError as exc:
            status = {
                "name": name,
                "checksum": "unknown",
                "licence": "",
                "present": False,
                "error": exc.message,
            }
        except OSError as exc:  # unreadable weights file: show it, the page must still load
            status = {
                "name": name,
                "checksum": "unreadable",
                "licence": "",
                "present": True,
                "error": str(exc),
            }
        status["role"] = role
        status["loaded"] = name in loaded
        status["load_seconds"] = load_seconds.get(name)
        rows.append(status)
    return rows


def thresholds_table(model: str, settings: Settings, detector: str | None = None) -> dict[str, Any]:
    """The decision thresholds of a pipeline with their evidence (set, pairs, FAR upper bound)."""
    from identity.calibration import pipeline_calibration

    try:
        cal = pipeline_calibration(model, settings, detector)
    except CodedError as exc:
        return {"model": model, "rows": [], "source": "none", "error": exc.message}
    rows = [
        {"far": far, "threshold": thr, "far_upper_95": cal.evidence(far)["far_upper_95"]}
        for far, thr in sorted(cal.thresholds.items(), reverse=True)
    ]
    return {
        "model": model,
        "rows": rows,
        "source": cal.source,
        "set": cal.set,
        "pipeline": cal.pipeline,
        "impostor_pairs": cal.n_impostor,
        "genuine_pairs": cal.n_genuine,
        "identities": cal.n_identities,
    }


def _quantile_from_buckets(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Upper bound of the bucket holding quantile ``q`` (what Prometheus' histogram_quantile
    would interpolate; the bound is honest about the bucket resolution)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    for upper, cumulative in buckets:
        if cumulative >= q * total:
            return upper
    return buckets[-1][0]


def human_metrics(registry: Any) -> dict[str, Any]:
    requests: dict[tuple[str, str], dict[str, Any]] = {}
    latency: dict[tuple[str, str], dict[str, Any]] = {}
    gauges: list[dict[str, Any]] = []
    for family in registry.collect():
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "identity_http_requests_total":
                key = (labels.get("method", ""), labels.get("route", ""))
                row = requests.setdefault(key, {"count": 0, "errors": 0, "statuses": {}})
                row["count"] += sample.value
                status = labels.get("status", "")
                row["statuses"][status] = row["statuses"].get(status, 0) + sample.value
                if status[:1] in ("4", "5"):
                    row["errors"] += sample.value
            elif sample.name.startswith("identity_http_request_seconds"):
                key = (labels.get("method", ""), labels.get("route", ""))
                row = latency.setdefault(key, {"sum": 0.0, "count": 0.0, "buckets": []})
                if sample.name.endswith("_sum"):
                    row["sum"] = sample.value
                elif sample.name.endswith("_count"):
                    row["count"] = sample.value
                elif sample.name.endswith("_bucket"):
                    row["buckets"].append((float(labels["le"]), sample.value))
            elif family.type == "gauge":
                gauges.append(
                    {
                        "name": sample.name,
                        "help": family.documentation,
                        "labels": labels,
                        "value": sample.value,
                    }
                )
    rows = []
    for (method, route), r in sorted(requests.items(), key=lambda kv: -kv[1]["count"]):
        lat = latency.get((method, route), {"sum": 0.0, "count": 0.0, "buckets": []})
        buckets = sorted(lat["buckets"])
        rows.append(
            {
                "method": method,
                "route": route,
                "count": int(r["count"]),
                "errors": int(r["errors"]),
                "statuses": {k: int(v) for k, v in sorted(r["statuses"].items())},
                "mean_s": lat["sum"] / lat["count"] if lat["count"] else None,
                "p95_s": _quantile_from_buckets(buckets, 0.95),
            }
        )
    return {
        "requests": rows,
        "total": sum(r["count"] for r in rows),
        "errors": sum(r["errors"] for r in rows),
        "gauges": gauges,
    }
