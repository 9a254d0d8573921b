"""The per-row behaviour ``Faces`` and ``Bodies`` share (identity/rows.py): slicing keeps every
per-row field aligned, concatenation and per-image selection work the same for both."""

from __future__ import annotations

import numpy as np
import pytest

from identity.body.bodies import Bodies
from identity.faces import Faces


def _faces() -> Faces:
    return Faces(
        boxes=[[0, 0, 10, 10], [0, 0, 30, 30], [5, 5, 25, 25]],
        landmarks=np.arange(30, dtype=np.float32).reshape(3, 5, 2),
        scores=[0.9, 0.8, 0.7],
        image_index=[0, 0, 1],
        embeddings=np.eye(3, dtype=np.float32),
        quality=np.array([0.1, 0.2, 0.3], np.float32),
        quality_reasons=[["blur"], [], ["pose"]],
        quality_details=[{"i": 0}, {"i": 1}, {"i": 2}],
        extra={"age": np.array([20, 30, 40])},
    )


def test_faces_rows() -> None:
    faces = _faces()
    two = faces[np.array([False, True, True])]
    assert isinstance(two, Faces) and len(two) == 2
    assert two.quality_reasons == [[], ["pose"]] and two.quality_details == [{"i": 1}, {"i": 2}]
    assert two.extra["age"].tolist() == [30, 40] and two.embeddings is not None
    assert faces[1:].scores.tolist() == pytest.approx([0.8, 0.7])
    # the largest face of each image, in image order
    assert faces.largest().extra["age"].tolist() == [30, 40]
    assert faces.sorted_by_area().extra["age"].tolist() == [30, 40, 20]
    assert [len(f) for f in faces.split_by_image(3)] == [2, 1, 0]
    both = Faces.concatenate([faces, Faces.empty(), faces.with_(extra={})])
    assert len(both) == 6 and both.quality_reasons is not None and len(both.quality_reasons) == 6
    assert both.extra == {}  # only keys every part has survive
    assert len(Faces.concatenate([])) == 0
    with pytest.raises(IndexError, match="for 3 faces"):
        faces[np.array([True, False])]


def test_bodies_rows_and_descriptor_grid() -> None:
    people = Bodies.from_boxes([[0, 0, 10, 40], [0, 0, 20, 60]], image_index=[0, 0])
    with_desc = people.with_(descriptors=np.ones((2, 4, 8), np.float32), descriptor_grid=(2, 2))
    one = with_desc.largest()
    assert isinstance(one, Bodies) and one.descriptor_grid == (2, 2)
    assert one.descriptors is not None and one.descriptors.shape == (1, 4, 8)
    same = Bodies.concatenate([with_desc, with_desc])
    assert same.descriptor_grid == (2, 2) and same.descriptors is not None and len(same) == 4
    other = Bodies.from_boxes([[0, 0, 5, 5]]).with_(
        descriptors=np.ones((1, 6, 8), np.float32), descriptor_grid=(3, 2)
    )
    mixed = Bodies.concatenate([with_desc, other])
    assert len(mixed) == 3 and mixed.descriptors is None and mixed.descriptor_grid is None
    with pytest.raises(IndexError, match="for 2 bodies"):
        people[np.array([True])]


def test_timings_survive_slicing_and_sum_on_concatenation() -> None:
    faces = _faces().with_(timings={"detect": 0.5, "embed": 0.25})
    part = faces[1:]
    assert part.timings == {"detect": 0.5, "embed": 0.25}  # the work was done for every row
    part.timings["detect"] = 9.0
    assert faces.timings["detect"] == 0.5  # a slice's dict is its own
    no_face = Faces.empty().with_(timings={"decode": 0.125, "detect": 0.25})
    both = Faces.concatenate([faces, no_face, faces.with_(timings={"embed": 1.0})])
    assert both.timings == {"detect": 0.75, "embed": 1.25, "decode": 0.125}
    # only empty parts: their cost is still reported
    assert Faces.concatenate([no_face, no_face]).timings == {"decode": 0.25, "detect": 0.5}
