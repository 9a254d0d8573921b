"""What a gallery indexing job is asked to do (``IngestOptions``) and did (``IngestReport``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from identity.gallery.sources import LabelMode

# unreadable files listed in a report (the counts are always complete)
MAX_LISTED_ERRORS = 1000


@dataclass
class IngestOptions:
    labels: LabelMode = "none"
    labels_csv: Path | None = None
    workers: int = 1
    batch_size: int = 8
    engine: Literal["local", "ray"] = "local"
    cluster: bool = True  # unlabelled mode: propose identities after enrolling
    cluster_method: Literal["graph", "components", "hdbscan"] = "graph"
    cluster_threshold: float | None = None  # None = the embedder's threshold at cluster_far
    # files a CSV gallery may name (None = anywhere, the CLI); API jobs pass the gallery roots
    allowed_roots: list[Path] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "labels_csv": None if self.labels_csv is None else str(self.labels_csv),
            "workers": self.workers,
            "batch_size": self.batch_size,
            "engine": self.engine,
            "cluster": self.cluster,
            "cluster_method": self.cluster_method,
            "cluster_threshold": self.cluster_threshold,
            "allowed_roots": (
                None if self.allowed_roots is None else [str(r) for r in self.allowed_roots]
            ),
        }


@dataclass
class IngestReport:
    job_id: str
    collection: str
    source: str
    label_mode: str
    total: int | None = None
    images_seen: int = 0
    skipped_known: int = 0  # already in the store (an earlier run, or enrolled via the API)
    duplicates: int = 0  # the same bytes twice in this gallery
    analysed: int = 0
    faces_found: int = 0
    enrolled: int = 0
    rejected: int = 0
    rejected_reasons: Counter[str] = field(default_factory=Counter)  # faces per reason code
    images_without_faces: int = 0
    unreadable: list[dict[str, str]] = field(default_factory=list)
    unreadable_count: int = 0
    skipped_non_images: int = 0
    identities_created: int = 0
    clusters: int | None = None
    clustered_faces: int | None = None
    seconds: float = 0.0
    done: int = 0  # images fully handled so far (progress), including skipped and unreadable
    notes: list[str] = field(default_factory=list)  # what did not happen, though the job is done

    @property
    def images_per_s(self) -> float:
        return self.images_seen / self.seconds if self.seconds > 0 else 0.0

    def add_unreadable(self, path: str, code: str, message: str) -> None:
        self.unreadable_count += 1
        if len(self.unreadable) < MAX_LISTED_ERRORS:
            self.unreadable.append({"path": path, "code": code, "message": message})

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "collection": self.collection,
            "source": self.source,
            "label_mode": self.label_mode,
            "images_seen": self.images_seen,
            "skipped_known": self.skipped_known,
            "duplicates": self.duplicates,
            "analysed": self.analysed,
            "faces_found": self.faces_found,
            "enrolled": self.enrolled,
            "rejected": self.rejected,
            "rejected_reasons": dict(sorted(self.rejected_reasons.items())),
            "images_without_faces": self.images_without_faces,
            "unreadable_count": self.unreadable_count,
            "unreadable": self.unreadable,
            "skipped_non_images": self.skipped_non_images,
            "identities_created": self.identities_created,
            "clusters": self.clusters,
            "clustered_faces": self.clustered_faces,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 3),
            "notes": self.notes,
        }

    def to_text(self) -> str:
        lines = [
            f"collection: {self.collection}  job: {self.job_id}",
            f"images seen: {self.images_seen}",
            f"already indexed (skipped): {self.skipped_known}",
            f"duplicates in this gallery: {self.duplicates}",
            (
                f"analysed: {self.analysed}  faces found: {self.faces_found}"
                f"  images without a face: {self.images_without_faces}"
            ),
            f"enrolled: {self.enrolled}",
            f"rejected: {self.rejected}",
        ]
        for reason, n in sorted(self.rejected_reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {reason}: {n}")
        lines.append(f"unreadable: {self.unreadable_count}")
        for u in self.unreadable:
            lines.append(f"  {u['path']}: {u['code']}: {u['message']}")
        if self.identities_created:
            lines.append(f"identities created: {self.identities_created}")
        if self.clusters is not None:
            lines.append(
                f"proposed identities (clusters): {self.clusters}"
                f" covering {self.clustered_faces} faces"
            )
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append(f"time: {self.seconds:.1f} s  ({self.images_per_s:.2f} images/s)")
        return "\n".join(lines)
