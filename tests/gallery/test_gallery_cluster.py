"""Clustering real face embeddings of the deepface photos against their LABELS.csv identities,
and the unlabelled indexing flow: cluster, name, merge."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from identity.gallery.cluster import (
    chinese_whispers,
    cluster_embeddings,
    connected_components,
    pairwise_scores,
)
from identity.settings import Settings

from gallery_helpers import DEEPFACE, SHARED, deepface_labels


@pytest.fixture(scope="module")
def deepface_embeddings() -> tuple[np.ndarray, list[str]]:
    """The largest face of each labelled deepface photo (61 photos, 13 people)."""
    from identity.image import load_image
    from identity.pipeline import FaceAnalyzer

    settings = Settings(models_dir=SHARED / "models")
    analyzer = FaceAnalyzer(settings)
    vectors, labels = [], []
    for rel, who in deepface_labels():
        faces = analyzer.analyze([load_image(DEEPFACE / rel, settings)])
        if len(faces):
            vectors.append(faces.largest().embeddings[0])
            labels.append(who)
    return np.stack(vectors), labels


def test_metrics_on_known_partitions() -> None:
    truth = ["a", "a", "b", "b", "c"]
    perfect = pairwise_scores(truth, np.array([0, 0, 1, 1, -1]))
    assert perfect == {
        "pairwise_precision": 1.0,
        "pairwise_recall": 1.0,
        "pairwise_f1": 1.0,
        "ari": 1.0,
    }
    merged = pairwise_scores(truth, np.array([0, 0, 0, 0, 0]))
    assert merged["pairwise_recall"] == 1.0 and merged["pairwise_precision"] == pytest.approx(0.2)
    assert merged["ari"] == pytest.approx(0.0)


def test_graph_algorithms_on_a_bridge() -> None:
    # two triangles joined by one weak edge: components merge them, Chinese whispers does not
    i = np.array([0, 0, 1, 3, 3, 4, 2])
    j = np.array([1, 2, 2, 4, 5, 5, 3])
    w = np.array([1, 1, 1, 1, 1, 1, 0.1])
    assert len(set(connected_components(6, i, j).tolist())) == 1
    labels = chinese_whispers(6, i, j, w)
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4] == labels[5]


def test_clustering_real_embeddings(deepface_embeddings) -> None:  # type: ignore[no-untyped-def]
    from identity.calibration import threshold_for

    x, truth = deepface_embeddings
    assert len(x) >= 55  # nearly every labelled photo has a detectable face
    settings = Settings(models_dir=SHARED / "models")
    threshold = threshold_for(settings.embedder, settings.cluster_far, settings)
    scores = {}
    for method in ("graph", "components", "hdbscan"):
        result = cluster_embeddings(x, method=method, threshold=threshold, min_size=2)
        scores[method] = pairwise_scores(truth, result.labels)
        print(method, result.n_clusters, {k: round(v, 3) for k, v in scores[method].items()})
    # 13 people: the similarity graph at the embedder's calibrated FAR 1e-4 threshold must find
    # them with few mistakes; HDBSCAN with no threshold at all must still be clearly informative
    # (seen: graph and hdbscan 13 clusters, ARI 1.0; components 12 clusters, ARI 0.93: one bridge
    # edge chains two people, which is why the graph method is Chinese whispers)
    assert scores["graph"]["pairwise_precision"] >= 0.95
    assert scores["graph"]["pairwise_recall"] >= 0.9
    assert scores["graph"]["ari"] >= 0.9
    assert scores["hdbscan"]["ari"] >= 0.8
    assert scores["graph"]["ari"] >= scores["components"]["ari"]


def test_unlabelled_index_cluster_name_merge(gallery, store, new_collection, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Index 3 people's photos without labels; clusters become identities an operator names."""
    import shutil

    from services.gallery import IngestOptions, run_ingest
    from services.tables import FaceTemplate, GalleryFace

    wanted = {}
    for rel, who in deepface_labels():
        wanted.setdefault(who, []).append(rel)
    people = sorted(wanted, key=lambda w: -len(wanted[w]))[:3]
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    truth = {}
    for who in people:
        for rel in wanted[who][:4]:
            shutil.copy(DEEPFACE / rel, folder / rel)
            truth[rel] = who
    cid = new_collection()
    report = run_ingest(gallery, cid, folder, IngestOptions(batch_size=4))
    assert report.label_mode == "none" and report.identities_created == 0
    assert report.enrolled >= 10 and report.clusters is not None and report.clusters >= 3

    clusters = gallery.list_clusters(cid)["items"]
    assert sum(c["size"] for c in clusters) == report.clustered_faces
    # the three largest proposals are each one person
    for c in clusters[:3]:
        people_in = {truth[f["path"]] for f in c["faces"]}
        assert len(people_in) == 1, c

    biggest = clusters[0]
    named = gallery.name_cluster(cid, biggest["id"], external_id="person-a", display_name="A")
    assert named["templates"] == biggest["size"]
    probe = (folder / biggest["faces"][0]["path"]).read_bytes()
    hit = store.identify(cid, probe)["faces"][0]["candidates"][0]
    assert hit["external_id"] == "person-a" and hit["match"]

    rest = gallery.list_clusters(cid)["items"]
    assert biggest["id"] not in {c["id"] for c in rest}
    if len(rest) >= 2:
        merged = gallery.merge_clusters(cid, rest[0]["id"], [rest[1]["id"]])
        assert merged["size"] == rest[0]["size"] + rest[1]["size"]
    collection_id = store.collection_id(cid)
    with store.sessions() as s:
        moved = s.execute(
            select(func.count()).where(
                GalleryFace.collection_id == collection_id, GalleryFace.template_id.is_not(None)
            )
        ).scalar_one()
        templates = s.execute(
            select(func.count()).where(FaceTemplate.collection_id == collection_id)
        ).scalar_one()
    assert moved == templates == biggest["size"]
    # the thumbnail of a gallery face is a JPEG
    assert gallery.face_thumbnail(cid, biggest["faces"][0]["face_id"])[:2] == b"\xff\xd8"
