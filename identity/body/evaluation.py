"""Re-ID evaluation: cross-frame retrieval on MOTChallenge sequences, rank-1 and mAP.

Protocol (``bench/reid.py``): every ground-truth pedestrian crop is a query; its gallery is the
crops of the same sequence in *other* frames (a query never meets its own frame, so a match is
never the same pixels); the positives are the crops with the same track id. Queries without any
positive in their gallery are skipped, as in Market-1501's protocol. ``cross_frame_scores`` ranks
by cosine similarity of global embeddings; ``dense_cross_frame_scores`` by best-buddies
similarity of dense patch descriptors (part-level matching).
"""

from __future__ import annotations

import configparser
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from identity.body.bodies import Bodies
from identity.errors import InvalidInput

# MOTChallenge gt.txt columns: frame, id, left, top, width, height, flag, class, visibility.
PEDESTRIAN_CLASS = 1


@dataclass
class ReIDSet:
    """Crops of a set of sequences with their labels; row i of every array is crop i."""

    crops: np.ndarray  # (N, H, W, 3) uint8 BGR
    track: np.ndarray  # (N,) int64, unique across sequences
    frame: np.ndarray  # (N,) int64
    sequence: np.ndarray  # (N,) int64 index into ``sequences``
    sequences: list[str]

    def __len__(self) -> int:
        return len(self.track)

    def subset(self, rows: np.ndarray) -> ReIDSet:
        return ReIDSet(
            self.crops[rows],
            self.track[rows],
            self.frame[rows],
            self.sequence[rows],
            self.sequences,
        )


def find_sequences(root: Path) -> list[Path]:
    """Folders under ``root`` (or ``root`` itself) that hold a MOTChallenge sequence."""
    root = Path(root)
    if (root / "gt" / "gt.txt").is_file():
        return [root]
    seqs = (
        sorted(p for p in root.iterdir() if (p / "gt" / "gt.txt").is_file())
        if root.is_dir()
        else []
    )
    if not seqs:
        raise InvalidInput(f"no MOTChallenge sequence (gt/gt.txt, img1/) under {root}")
    return seqs


def load_mot(
    root: Path,
    size_wh: tuple[int, int] = (128, 256),
    min_visibility: float = 0.5,
    min_height: float = 32.0,
    max_frames: int | None = None,
) -> ReIDSet:
    """Crops of visible pedestrians (class 1, flag 1) in the frames present in ``img1/``."""
    from identity.body.crops import crop_bodies

    crops, tracks, frames, seq_ids, names = [], [], [], [], []
    track_offset = 0
    for s, seq in enumerate(find_sequences(root)):
        info = configparser.ConfigParser()
        info.read(seq / "seqinfo.ini")
        im_dir = seq / info.get("Sequence", "imDir", fallback="img1")
        ext = info.get("Sequence", "imExt", fallback=".jpg")
        gt = np.loadtxt(seq / "gt" / "gt.txt", delimiter=",", ndmin=2)
        keep = (gt[:, 6] == 1) & (gt[:, 7] == PEDESTRIAN_CLASS) & (gt[:, 8] >= min_visibility)
        keep &= gt[:, 5] >= min_height
        gt = gt[keep]
        present = sorted(int(p.stem) for p in im_dir.glob(f"*{ext}") if p.stem.isdigit())
        if max_frames is not None:
            present = present[:max_frames]
        names.append(seq.name)
        for frame in present:
            rows = gt[gt[:, 0] == frame]
            if not len(rows):
                continue
            image = cv2.imread(str(im_dir / f"{frame:06d}{ext}"), cv2.IMREAD_COLOR)
            if image is None:
                raise InvalidInput(f"cannot read frame {frame} of {seq}")
            boxes = np.hstack([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]])
            crops.append(crop_bodies([image], Bodies.from_boxes(boxes), size_wh))
            tracks.append(rows[:, 1].astype(np.int64) + track_offset)
            frames.append(np.full(len(rows), frame, np.int64))
            seq_ids.append(np.full(len(rows), s, np.int64))
        track_offset += int(gt[:, 1].max()) + 1 if len(gt) else 0
    if not crops:
        raise InvalidInput(f"no visible pedestrians in the frames under {root}")
    return ReIDSet(
        np.concatenate(crops),
        np.concatenate(tracks),
        np.concatenate(frames),
        np.concatenate(seq_ids),
        names,
    )


def average_precision(similarity: np.ndarray, positive: np.ndarray) -> float:
    """AP of one ranked list: mean over positives of precision at each positive's rank.
    Ties are broken by gallery order (stable sort), so results are reproducible."""
    order = np.argsort(-similarity, kind="stable")
    hits = positive[order].astype(bool)
    if not hits.any():
        raise InvalidInput("average precision needs at least one positive")
    ranks = np.flatnonzero(hits) + 1  # 1-based ranks of the positives
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def retrieval_scores(
    similarity: np.ndarray,
    query_labels: Sequence[int] | np.ndarray,
    gallery_labels: Sequence[int] | np.ndarray,
    valid: np.ndarray | None = None,
) -> dict[str, float]:
    """Rank-1 and mAP of a (Q, G) similarity matrix (higher = more alike).

    ``valid`` (Q, G) bool masks which gallery items each query may see; queries with no valid
    positive are skipped and counted in ``queries``'s complement.
    """
    sim = np.asarray(similarity, np.float64)
    q = np.asarray(query_labels)
    g = np.asarray(gallery_labels)
    if sim.shape != (len(q), len(g)):
        raise InvalidInput(
            f"similarity {sim.shape} does not match {len(q)} queries, {len(g)} gallery"
        )
    mask = np.ones_like(sim, bool) if valid is None else np.asarray(valid, bool)
    rank1, aps = [], []
    for i in range(len(q)):
        seen = np.flatnonzero(mask[i])
        pos = g[seen] == q[i]
        if not pos.any():
            continue
        top = seen[np.argmax(sim[i, seen])]  # argmax keeps the first of ties, like the stable sort
        rank1.append(g[top] == q[i])
        aps.append(average_precision(sim[i, seen], pos))
    if not aps:
        raise InvalidInput("no query has a positive in its gallery")
    return {"rank1": float(np.mean(rank1)), "mAP": float(np.mean(aps)), "queries": float(len(aps))}


def cross_frame_scores(
    embeddings: np.ndarray, data: ReIDSet, queries: np.ndarray | None = None
) -> dict[str, float]:
    """The bench protocol on L2-normalised embeddings: gallery = same sequence, other frames.
    ``queries`` (row indices) restricts the queries, not the gallery."""
    emb = np.asarray(embeddings, np.float32)
    rows = np.arange(len(data)) if queries is None else np.asarray(queries, np.int64)
    sim = emb[rows] @ emb.T
    valid = (data.sequence[rows, None] == data.sequence[None, :]) & (
        data.frame[rows, None] != data.frame[None, :]
    )
    return retrieval_scores(sim, data.track[rows], data.track, valid)


def best_buddies_to_gallery(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """``identity.body.vit.best_buddies`` of one crop against many, in one matrix product.

    ``query`` (P, C) and ``gallery`` (G, Q, C) hold L2-normalised patch descriptors; returns (G,)
    scores, mutual nearest-neighbour pairs / min(P, Q), in [0, 1]. Ties go to the first index,
    as in ``best_buddies``.
    """
    q = np.asarray(query, np.float32)
    g = np.asarray(gallery, np.float32)
    if q.ndim != 2 or g.ndim != 3 or g.shape[2] != q.shape[1] or not len(q) or not g.shape[1]:
        raise InvalidInput(
            f"best buddies need (P, C) and (G, Q, C) descriptors, got {q.shape}, {g.shape}"
        )
    n, patches, c = g.shape
    sim = (g.reshape(-1, c) @ q.T).reshape(n, patches, len(q))  # (G, Q, P)
    q_to_g = sim.argmax(axis=1)  # (G, P): each query patch's nearest gallery patch
    g_to_q = sim.argmax(axis=2)  # (G, Q): each gallery patch's nearest query patch
    mutual = np.take_along_axis(g_to_q, q_to_g, axis=1) == np.arange(len(q))
    return mutual.sum(axis=1) / min(len(q), patches)


def dense_cross_frame_scores(
    descriptors: np.ndarray, data: ReIDSet, queries: np.ndarray | None = None, chunk: int = 32
) -> dict[str, float]:
    """The bench protocol with best-buddies similarity of dense descriptors (N, P, C).

    Part-level matching costs a (P x P) product per pair, about 100x the global descriptor's
    dot product, so ``queries`` (row indices) may restrict the queries; every query still
    meets its whole gallery (same sequence, other frames). ``chunk`` bounds the memory of one
    product (chunk x P x C floats).
    """
    desc = np.asarray(descriptors, np.float32)
    if desc.ndim != 3 or len(desc) != len(data):
        raise InvalidInput(f"expected ({len(data)}, P, C) descriptors, got {desc.shape}")
    rows = np.arange(len(data)) if queries is None else np.asarray(queries, np.int64)
    valid = (data.sequence[rows, None] == data.sequence[None, :]) & (
        data.frame[rows, None] != data.frame[None, :]
    )
    sim = np.full(valid.shape, -np.inf, np.float64)
    for i, row in enumerate(rows):
        gallery = np.flatnonzero(valid[i])
        for start in range(0, len(gallery), chunk):
            part = gallery[start : start + chunk]
            sim[i, part] = best_buddies_to_gallery(desc[row], desc[part])
    return retrieval_scores(sim, data.track[rows], data.track, valid)


def colour_histograms(
    crops_bgr: np.ndarray, stripes: int = 6, bins: tuple[int, int, int] = (8, 4, 4)
) -> np.ndarray:
    """The classic re-ID baseline: HSV histograms of horizontal stripes, concatenated.

    Stripes keep the coarse vertical layout (shirt above trousers); square-rooted counts
    (Hellinger kernel) then L2 normalisation make cosine similarity a sensible histogram match.
    """
    crops = np.asarray(crops_bgr)
    out = []
    for crop in crops:
        hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
        edges = np.linspace(0, len(hsv), stripes + 1).astype(int)
        parts = [
            cv2.calcHist([hsv[a:b]], [0, 1, 2], None, list(bins), [0, 180, 0, 256, 0, 256]).ravel()
            for a, b in itertools.pairwise(edges)
        ]
        out.append(np.sqrt(np.concatenate(parts)))
    feats = np.asarray(out, np.float32).reshape(len(crops), -1)
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
