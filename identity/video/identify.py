"""Who is this track? The ``Identifier`` interface and its two implementations.

``watch`` embeds a track's best crops with ``identifier.embedder_name`` and asks the identifier
about their mean embedding. Two identifiers:

* ``GalleryIdentifier``: a folder of labelled photos (``DIR/<label>/*.jpg``), embedded once at
  start, best cosine similarity per label; offline use and tests.
* ``StoreIdentifier``: a collection of the service's identity store (Postgres + FAISS) through
  ``IdentityStore.identify_faces``; the same path the HTTP ``identify`` endpoint takes.

Both decide with a calibrated threshold (``identity.calibration.threshold_for`` at a FAR) unless
an explicit similarity threshold is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from identity.calibration import decision_threshold
from identity.errors import InvalidInput, NoFaceFound
from identity.faces import Faces
from identity.settings import Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class Match:
    label: str | None  # best candidate's label (or external id), None when the gallery is empty
    similarity: float  # cosine similarity of the best candidate
    match: bool  # similarity >= threshold
    threshold: float
    identity_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label if self.match else None,
            "best_candidate": self.label,
            "similarity": round(self.similarity, 4),
            "match": self.match,
            "threshold": round(self.threshold, 4),
            **({"identity_id": self.identity_id} if self.identity_id else {}),
        }


class Identifier(Protocol):
    embedder_name: str

    def identify(self, embeddings: np.ndarray) -> list[Match]:
        """(N, D) L2-normalised embeddings -> one Match per row."""
        ...


class GalleryIdentifier:
    """Labelled photos in ``DIR/<label>/`` -> nearest label by cosine similarity."""

    def __init__(
        self,
        labels: list[str],
        embeddings: np.ndarray,
        embedder_name: str,
        threshold: float,
    ) -> None:
        self.labels = labels
        self.embeddings = np.asarray(embeddings, np.float32).reshape(len(labels), -1)
        self.embedder_name = embedder_name
        self.threshold = threshold

    @classmethod
    def from_folder(
        cls,
        folder: Path,
        settings: Settings,
        detector: str | None = None,
        embedder: str | None = None,
        far: float | None = None,
        threshold: float | None = None,
    ) -> GalleryIdentifier:
        from identity.align import align_faces
        from identity.detect import load_detector
        from identity.embed import load_embedder

        folder = Path(folder)
        if not folder.is_dir():
            raise InvalidInput(f"gallery {folder} is not a folder of <label>/ sub-folders")
        det = load_detector(detector or settings.detector, settings)
        emb_name = embedder or settings.embedder
        emb = load_embedder(emb_name, settings)
        labels, vectors = [], []
        for person in sorted(p for p in folder.iterdir() if p.is_dir()):
            for path in sorted(person.iterdir()):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                image = cv2.imread(str(path))
                if image is None:
                    continue
                faces = det.detect([image])
                if not len(faces):
                    continue
                face = faces.largest()
                crops = align_faces([image], face, emb.template)
                vec, _ = emb.embed(crops)
                labels.append(person.name)
                vectors.append(vec[0])
        if not labels:
            raise NoFaceFound(f"no face found in any photo under {folder}/<label>/")
        thr, _ = decision_threshold(emb_name, settings, far, threshold)
        return cls(labels, np.stack(vectors), emb_name, thr)

    def identify(self, embeddings: np.ndarray) -> list[Match]:
        sims = np.asarray(embeddings, np.float32) @ self.embeddings.T
        out = []
        for row in sims:
            j = int(np.argmax(row))
            s = float(row[j])
            out.append(Match(self.labels[j], s, s >= self.threshold, self.threshold))
        return out


class StoreIdentifier:
    """A collection of the service's identity store (``services.store.IdentityStore``)."""

    def __init__(
        self,
        store: Any,
        collection: str,
        far: float | None = None,
        threshold: float | None = None,
    ) -> None:
        self.store = store
        self.collection = collection
        self.far = far
        self.explicit_threshold = threshold
        self.embedder_name = store.model_name
        store.collection_id(collection)  # fail early on an unknown collection

    def identify(self, embeddings: np.ndarray) -> list[Match]:
        n = len(embeddings)
        faces = Faces(
            boxes=np.zeros((n, 4), np.float32),
            landmarks=np.zeros((n, 5, 2), np.float32),
            scores=np.ones(n, np.float32),
            image_index=np.arange(n, dtype=np.int32),
            embeddings=np.asarray(embeddings, np.float32),
        )
        result = self.store.identify_faces(
            self.collection, faces, top_k=1, far=self.far, threshold=self.explicit_threshold
        )
        thr = float(result["threshold"])
        out = []
        for row in result["faces"]:
            if not row["candidates"]:
                out.append(Match(None, -1.0, False, thr))
                continue
            c = row["candidates"][0]
            label = c.get("external_id") or c.get("display_name") or c["identity_id"]
            out.append(
                Match(label, float(c["similarity"]), bool(c["match"]), thr, c["identity_id"])
            )
        return out
