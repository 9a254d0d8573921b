"""dlib's face descriptor on onnxruntime (the converted graph) against dlib's own loop, on the
same aligned chips of deepface's 61 photos: largest difference, decisions on its 520 labelled
pairs at the shipped FAR 1e-3 threshold, and milliseconds per face (batches of 8 and of 1).

    python bench/dlib_runtime.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MODELS, command_line, deepface_pairs, print_table
from identity.calibration import known_thresholds
from identity.embed.dlib_resnet import DlibResNetEmbedder
from identity.image import load_image
from identity.pipeline import FaceAnalyzer
from identity.runtime import resolve_model
from identity.settings import Settings


def per_face_ms(
    runner: DlibResNetEmbedder, chips: np.ndarray, batch: int, repeat: int = 2
) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        for i in range(0, len(chips), batch):
            runner.embed(chips[i : i + batch])
    return (time.perf_counter() - start) * 1000 / (repeat * len(chips))


def main() -> None:
    pairs = deepface_pairs()
    photos = sorted({p.a for p in pairs} | {p.b for p in pairs})
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(data_dir=Path(tmp), models_dir=MODELS)
        analyzer = FaceAnalyzer(base, detector="retinaface_mnet025", embedder="dlib_resnet_v1")
        faces = analyzer.analyze([load_image(p, base) for p in photos]).largest()
        chips = faces.crops
        row_of = {photos[int(i)]: r for r, i in enumerate(faces.image_index)}
        # the FAR 1e-3 threshold of the shipped celeba500 record the product decides with
        threshold = known_thresholds("dlib_resnet_v1", base, "retinaface_mnet025")[0][1e-3]
        results, rows = {}, []
        for runtime in ("dlib", "onnxruntime"):
            s = base.model_copy(update={"dlib_runtime": runtime})
            runner = DlibResNetEmbedder(resolve_model("dlib_resnet_v1", s), s)
            emb, _ = runner.embed(chips)
            results[runtime] = emb
            decisions = [
                float(emb[row_of[p.a]] @ emb[row_of[p.b]]) >= threshold
                for p in pairs
                if p.a in row_of and p.b in row_of
            ]
            errors = sum(d != p.same for d, p in zip(decisions, pairs, strict=True))
            rows.append(
                [
                    runtime,
                    len(chips),
                    per_face_ms(runner, chips, 8),
                    per_face_ms(runner, chips, 1),
                    errors,
                    np.array(decisions),
                ]
            )
        diff = float(np.abs(results["dlib"] - results["onnxruntime"]).max())
        same = int((rows[0][5] == rows[1][5]).sum())
        table = [r[:5] + [f"{same}/{len(rows[0][5])}", f"{diff:.1e}"] for r in rows]
    print_table(
        [
            "runtime",
            "faces",
            "ms/face (batch 8)",
            "ms/face (batch 1)",
            "errors (520 pairs)",
            "same decisions",
            "max abs diff",
        ],
        table,
        title=f"dlib_resnet_v1 runtimes, FAR 1e-3 threshold {threshold}",
    )
    print(f"\n`{command_line()}`")


if __name__ == "__main__":
    main()
