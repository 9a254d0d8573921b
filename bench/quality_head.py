"""How far a quality score learned from the embedder's own features goes (an exploration, not
the product's score; docs/calibration.md says why).

    python bench/celeba.py --pipelines retinaface_mnet025+arcface_w600k_mbf_int8   # embed once
    python bench/quality_head.py

CR-FIQA's idea without its training: the default embedder's last feature map (512 x 7 x 7, the
tensor before the global depthwise convolution) is read beside the embedding, pooled to each
channel's mean, standard deviation and maximum, and a ridge regression from those 1,536 values
(with or without the product's signals) predicts a face's share of genuine comparisons above the
FMR 1e-3 threshold (sigmoid-softened, scale 0.1), all fitted on four identity-disjoint folds and
scored by the error-versus-reject curve of bench/erc.py on the fifth. Each crop runs alone, as
the product runs this int8 graph (its activation scales are per tensor). The pooled maps are
cached in .bench_cache/celeba500.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.celeba import CACHE, celeba_labels, complete, detect_all, embed_all
from bench.common import MODELS, command_line
from bench.erc import FMR, erc, mislabelled, print_erc
from bench.heldout import N_FOLDS, folds_of, pairs_within
from identity.calibration import threshold_in_sorted

DETECTOR, EMBEDDER = "retinaface_mnet025", "arcface_w600k_mbf_int8"
FEATURE_MAP = "509"  # the last PReLU's output in this graph, before the 7 x 7 depthwise conv
ALPHA, TAU = 1000.0, 0.1


def pooled_maps(data: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 1536) per-channel mean, std and max of each face's last feature map (zeros where no
    face was found), cached."""
    path = CACHE / f"{DETECTOR}+{EMBEDDER}.feature_map.npy"
    if path.exists():
        return np.load(path)
    import onnx
    import onnxruntime as ort

    from identity.align import align_faces
    from identity.faces import Faces
    from identity.preprocess import to_tensor
    from identity.registry import resolve

    resolved = resolve(EMBEDDER, MODELS, None)
    graph = onnx.load_from_string(resolved.read_bytes())
    graph.graph.output.append(
        onnx.helper.make_tensor_value_info(FEATURE_MAP, onnx.TensorProto.FLOAT, None)
    )
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    det = detect_all(DETECTOR, CACHE)
    paths, _ = celeba_labels()
    out = np.zeros((len(paths), 3 * 512), np.float32)
    for i in np.flatnonzero(data["found"]):
        image = cv2.imread(str(paths[i]))
        faces = Faces(
            boxes=det["boxes"][i : i + 1],
            landmarks=det["landmarks"][i : i + 1],
            scores=det["scores"][i : i + 1],
            image_index=np.zeros(1, int),
        )
        crop = align_faces([image], faces, "arcface_112")
        fmap = session.run([FEATURE_MAP], {"input.1": to_tensor(crop, resolved.manifest)})[0][0]
        out[i] = np.concatenate([fmap.mean((1, 2)), fmap.std((1, 2)), fmap.max((1, 2))])
    np.save(path, out)
    return out


def share_matched(
    emb: np.ndarray, ids: np.ndarray, found: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Per face among ``rows``: the mean over its genuine partners of sigmoid((s - t) / TAU), t
    the FMR 1e-3 threshold of these rows' impostor pairs; NaN for a face without a partner."""
    pairs = pairs_within(emb, found, ids, rows, False, found_only=True)
    t = threshold_in_sorted(np.sort(pairs.scores[~pairs.same])[::-1], FMR)
    gen = pairs.same
    soft = 1 / (1 + np.exp(-(pairs.scores[gen] - t) / TAU))
    total, count = np.zeros(len(emb)), np.zeros(len(emb))
    for side in (pairs.i[gen], pairs.j[gen]):
        np.add.at(total, side, soft)
        np.add.at(count, side, 1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def ridge_of_fold(
    x: np.ndarray, emb: np.ndarray, ids: np.ndarray, found: np.ndarray, fold: np.ndarray
) -> Callable[[int], np.ndarray]:
    """Per held-out fold k: a ridge fitted on the faces of the other folds, applied to all."""
    fitted: dict[int, np.ndarray] = {}

    def of(k: int) -> np.ndarray:
        if k not in fitted:
            train = np.flatnonzero(found & (fold != k))
            y = share_matched(emb, ids, found, train)
            ok = train[np.isfinite(y[train])]
            mu, sd = x[ok].mean(0), x[ok].std(0) + 1e-9
            z = (x[ok] - mu) / sd
            w = np.linalg.solve(z.T @ z + ALPHA * np.eye(z.shape[1]), z.T @ (y[ok] - y[ok].mean()))
            fitted[k] = (x - mu) / sd @ w + y[ok].mean()
        return fitted[k]

    return of


def main() -> None:
    data = embed_all(DETECTOR, EMBEDDER, CACHE)
    paths, ids = celeba_labels()
    found = data["found"].astype(bool) & complete(data)
    emb, fold = data["emb"], folds_of(ids)
    maps = pooled_maps(data)
    pose = np.abs(data["pose"][:, :2]).max(axis=1)
    signals = np.c_[
        data["det_score"],
        pose,
        np.log(np.maximum(data["iod"], 1)),
        data["sharpness"],
        data["norms"],
    ]
    inputs: dict[str, np.ndarray | None] = {
        "embedding norm (no fit)": None,
        "ridge: norm + pooled feature map": np.c_[data["norms"], maps],
        "ridge: product's signals + pooled feature map": np.c_[signals, maps],
    }
    clean = found & ~np.isin([p.name for p in paths], mislabelled())
    title = f"Error-versus-reject on celeba500 ({{}} faces), {DETECTOR}+{EMBEDDER}, FNMR at FMR "
    title += f"{FMR:g}, {N_FOLDS} held-out folds, fitted on the other folds"
    for keep in (found, clean):
        curves = {}
        for name, x in inputs.items():
            score = (
                (lambda k: data["norms"]) if x is None else ridge_of_fold(x, emb, ids, keep, fold)
            )
            curves[name] = erc(emb, ids, keep, score)
        left_out = int((found & ~keep).sum())
        label = f", without the {left_out} faces in celeba500_mislabelled.csv" if left_out else ""
        print_erc(curves, title.format(int(keep.sum())) + label)
        print()
    print(f"`{command_line()}`")


if __name__ == "__main__":
    main()
