"""``--engine ray``: the same indexing on a local Ray instance (Ray Data map_batches)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gallery_helpers import TRAIN

pytest.importorskip("ray.data", reason="ray[data] is the 'ray' extra")


def test_ray_engine_matches_local(gallery, new_collection, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    import ray

    from services.gallery import IngestOptions, run_ingest

    folder = tmp_path / "g"
    for person in ("obama", "biden"):
        shutil.copytree(TRAIN / person, folder / person)
    (folder / "obama" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    try:
        ray_cid, local_cid = new_collection(), new_collection()
        opts = IngestOptions(labels="folders", workers=1, batch_size=2, engine="ray")
        by_ray = run_ingest(gallery, ray_cid, folder, opts)
        again = run_ingest(gallery, ray_cid, folder, opts)  # dedupe happens in the store layer
    finally:
        ray.shutdown()
    local = run_ingest(gallery, local_cid, folder, IngestOptions(labels="folders", batch_size=2))
    assert by_ray.enrolled == local.enrolled == 4
    assert by_ray.identities_created == 2
    assert [u["path"] for u in by_ray.unreadable] == ["obama/broken.jpg"]
    assert again.enrolled == 0 and again.skipped_known == 4
