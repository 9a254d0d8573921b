"""Which templates of an identity should decide: all of them, or only those above the gate?

    python bench/template_policy.py [--identities 100] [--embedder arcface_mobilefacenet_128]

An identity enrolled without the quality gate (``enroll_faces``: gallery naming, an older or
lower gate, an import) keeps faces the gate would refuse today. This benchmark builds such a
gallery from celeba500: per person, photos 1-3 in LABELS.csv order are enrolled, photos 1 and 2
each with one degradation of ``bench/degradations.py`` (drawn per photo, seeded), photo 3 clean;
the person's other photos (clean) are the probes. Every probe is compared with every enrolled
identity (verify, 1:1 against a claim): the identity's score is the best similarity over its
templates, as ``verify`` and ``identify`` decide.

* ``all``: every template decides (the product's behaviour before IDENTITY_TEMPLATE_QUALITY_POLICY);
* ``gate``: templates below ``enroll_min_quality`` are ignored when the identity has at least one
  template at or above it (an identity with none keeps all, so it stays findable).

Rows: FNMR and FMR at the shipped calibrated thresholds (FAR 1e-3 and 1e-4), and FNMR at a
FMR of 1e-3 with the threshold fitted on the other half of the people (two identity-disjoint
folds, impostor comparisons of the fitting fold only, pooled), so a policy that only lowers
every score is not credited for a stricter threshold. Embeddings are cached in
``.bench_cache/template_policy-<embedder>-<identities>.npz``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.celeba import _settings, celeba_labels
from bench.common import command_line, print_table
from bench.degradations import DEGRADATIONS

REPO = Path(__file__).resolve().parents[1]
DETECTOR = "retinaface_mnet025"
SEED = 11
ENROLLED = 3  # photos 1-3 of each person; the first two degraded
DEGRADED = 2


def _largest(analyzer: object, image: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, float]:
    """(embedding, quality, box, eye distance) of the largest face; quality -1 when none."""
    faces = analyzer.analyze([image])  # type: ignore[attr-defined]
    if not len(faces):
        return np.zeros(0, np.float32), -1.0, np.zeros(4), 0.0
    f = faces.largest()
    return f.embeddings[0], float(f.quality[0]), f.boxes[0], float(f.inter_ocular[0])


def build(embedder: str, identities: int) -> dict[str, np.ndarray]:
    """Per photo used: identity index, enrolled or probe, embedding, quality (cached)."""
    cache = REPO / ".bench_cache" / f"template_policy-{embedder}-{identities}.npz"
    if cache.is_file():
        return dict(np.load(cache))
    from identity.pipeline import FaceAnalyzer

    analyzer = FaceAnalyzer(_settings(DETECTOR, embedder))
    paths, labels = celeba_labels()
    people = [p for p in dict.fromkeys(labels) if (labels == p).sum() >= ENROLLED + 3][:identities]
    rng = np.random.default_rng(SEED)
    kinds = list(DEGRADATIONS)
    rows: dict[str, list] = {k: [] for k in ("who", "enrolled", "emb", "quality", "degradation")}
    for who, person in enumerate(people):
        for j, i in enumerate(np.flatnonzero(labels == person)):
            image = cv2.imread(str(paths[i]))
            emb, q, box, iod = _largest(analyzer, image)
            kind = "clean"
            if j < DEGRADED and q >= 0:
                kind = kinds[int(rng.integers(len(kinds)))]
                emb, q, _, _ = _largest(analyzer, DEGRADATIONS[kind](image, box, iod, rng))
            if q < 0:
                continue  # not found: neither enrolled nor a probe
            rows["who"].append(who)
            rows["enrolled"].append(j < ENROLLED)
            rows["emb"].append(emb)
            rows["quality"].append(q)
            rows["degradation"].append(kind)
        print(f"{who + 1}/{len(people)} people", file=sys.stderr)
    out = {k: np.asarray(v) for k, v in rows.items()}
    cache.parent.mkdir(exist_ok=True)
    np.savez(cache, **out)
    return out


def identity_scores(
    d: dict[str, np.ndarray], gate: float | None, best_only: bool = False
) -> tuple[np.ndarray, ...]:
    """(scores (probes, people), probe's person, templates deciding per person). ``gate``: the
    ``gate`` policy at that quality; ``best_only``: only the person's best-quality template."""
    enrolled, probes = d["enrolled"], ~d["enrolled"]
    people = np.unique(d["who"][enrolled])
    sims = d["emb"][probes] @ d["emb"][enrolled].T
    owner, quality = d["who"][enrolled], d["quality"][enrolled]
    scores = np.full((int(probes.sum()), len(people)), -1.0)
    used = np.zeros(len(people), int)
    for k, person in enumerate(people):
        mine = owner == person
        if gate is not None and (quality[mine] >= gate).any():
            mine &= quality >= gate
        if best_only:
            mine = np.arange(len(owner)) == np.flatnonzero(mine)[np.argmax(quality[mine])]
        scores[:, k] = sims[:, mine].max(axis=1)
        used[k] = int(mine.sum())
    return scores, d["who"][probes], people, used


def rates(scores: np.ndarray, truth: np.ndarray, thr: float) -> tuple[float, float, int, int]:
    gen = scores[truth]
    imp = scores[~truth]
    return (
        float((gen < thr).mean()),
        float((imp >= thr).mean()),
        int((imp >= thr).sum()),
        len(imp),
    )


def heldout_fnmr(
    scores: np.ndarray, truth: np.ndarray, probe_fold: np.ndarray, fold: np.ndarray, far: float
) -> float:
    """FNMR pooled over two identity-disjoint folds: a comparison belongs to a fold when the
    probe's person and the claimed person are both in it; its threshold at ``far`` is fitted on
    the other fold's impostor comparisons."""
    missed = total = 0
    for f in (False, True):
        fit = (probe_fold[:, None] != f) & (fold[None, :] != f)
        test = (probe_fold[:, None] == f) & (fold[None, :] == f)
        imp = np.sort(scores[fit & ~truth])[::-1]
        thr = float(np.nextafter(imp[int(far * len(imp))], 1.0))
        missed += int((scores[test & truth] < thr).sum())
        total += int((test & truth).sum())
    return missed / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedder", default="arcface_mobilefacenet_128")
    parser.add_argument("--identities", type=int, default=100)
    args = parser.parse_args()
    from identity.settings import Settings

    gate = Settings().enroll_min_quality
    d = build(args.embedder, args.identities)
    record = json.loads(
        (REPO / "models" / "calibration" / f"{DETECTOR}+{args.embedder}.json").read_text()
    )
    thresholds = {float(k): float(v) for k, v in record["thresholds"].items()}
    enrolled = d["enrolled"]
    below = enrolled & (d["quality"] < gate)
    rows = []
    policies = (("all", None, False), ("gate", gate, False), ("best quality only*", None, True))
    for name, g, best_only in policies:
        scores, probe_who, people, used = identity_scores(d, g, best_only)
        truth = probe_who[:, None] == people[None, :]
        fold_of = {p: i % 2 == 1 for i, p in enumerate(people)}
        fold = np.array([fold_of[p] for p in people])
        probe_fold = np.array([fold_of[p] for p in probe_who])
        row: list[object] = [name, f"{used.mean():.2f}"]
        for far in (1e-3, 1e-4):
            fnmr, fmr, n_imp, imp_total = rates(scores, truth, thresholds[far])
            row += [f"{fnmr:.4f}", f"{fmr:.1e} ({n_imp}/{imp_total})"]
        row.append(f"{heldout_fnmr(scores, truth, probe_fold, fold, 1e-3):.4f}")
        rows.append(row)
    print_table(
        [
            "policy",
            "templates deciding per person",
            "FNMR at calibrated FAR 1e-3",
            "FMR reached",
            "FNMR at calibrated FAR 1e-4",
            "FMR reached",
            "FNMR at FMR 1e-3 (held-out threshold)",
        ],
        rows,
        f"Template policy on celeba500, {len(np.unique(d['who']))} people, "
        f"{int(enrolled.sum())} templates ({int(below.sum())} below the gate {gate}), "
        f"{int((~enrolled).sum())} clean probes, {args.embedder}",
    )
    print("\n*not a product setting: the single best-quality template per person, for comparison")
    print(f"\n`{command_line()}`")


if __name__ == "__main__":
    main()
