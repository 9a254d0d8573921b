"""Shared detector code on its own: letterbox back-mapping, priors/anchors, decoders, NMS."""

from __future__ import annotations

import numpy as np
import pytest

from identity.detect.anchors import (
    decode_prior_boxes,
    decode_prior_points,
    decode_yunet,
    distance_to_boxes,
    distance_to_points,
    grid_points,
    retinaface_priors,
)
from identity.detect.geometry import canvas_size, fit_size, letterbox
from identity.detect.nms import box_iou, nms
from identity.detect.retinaface import mxnet_anchors, mxnet_base_anchors, mxnet_decode


@pytest.mark.parametrize("wh", [(1382, 1868), (640, 480), (100, 37), (3, 2000), (640, 640)])
def test_letterbox_maps_points_back_exactly(wh: tuple[int, int]) -> None:
    w, h = wh
    img = np.zeros((h, w, 3), np.uint8)
    canvas, box = letterbox(img, (640, 640))
    assert canvas.shape == (640, 640, 3)
    rw, rh = box.resized_wh
    assert max(rw, rh) == 640 and rw <= 640 and rh <= 640
    # Source corners land on the resized area's corners and come back unchanged.
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h], [w / 3, h / 7]], np.float32)
    on_canvas = box.points_to_canvas(corners)
    np.testing.assert_allclose(on_canvas[3], [rw, rh], atol=1e-3)
    np.testing.assert_allclose(box.points_to_source(on_canvas), corners, rtol=1e-6, atol=1e-3)
    b = box.boxes_to_source(np.array([[0, 0, rw, rh]], np.float32))
    np.testing.assert_allclose(b[0], [0, 0, w, h], atol=1e-3)


def test_letterbox_content_is_top_left_and_padded_with_zero() -> None:
    img = np.full((100, 200, 3), 200, np.uint8)
    canvas, box = letterbox(img, (64, 64))
    assert box.resized_wh == (64, 32)
    assert (canvas[:32] == 200).all() and (canvas[32:] == 0).all()


def test_letterbox_point_of_a_real_feature() -> None:
    """A bright dot at a known source pixel is found at the back-mapped position."""
    img = np.zeros((900, 1500, 3), np.uint8)
    img[600:606, 1200:1206] = 255  # centre (1203, 603)
    canvas, box = letterbox(img, (640, 640))
    ys, xs = np.nonzero(canvas[..., 0] > 0)
    weights = canvas[ys, xs, 0].astype(np.float64)
    centre_canvas = np.array([(xs + 0.5) @ weights, (ys + 0.5) @ weights]) / weights.sum()
    np.testing.assert_allclose(box.points_to_source(centre_canvas), [1203, 603], atol=0.6)


def test_canvas_and_fit() -> None:
    assert canvas_size(640, 32) == (640, 640)
    assert canvas_size(650, 32) == (672, 672)
    assert canvas_size(600, 128) == (640, 640)
    assert fit_size((1000, 500), (640, 640)) == (640, 320)
    assert fit_size((10, 5), (640, 640)) == (640, 320)  # small images are scaled up
    assert fit_size((1, 5000), (640, 640)) == (1, 640)


def test_grid_points_order() -> None:
    pts = grid_points(3, 2, 8, per_cell=2)
    assert pts.shape == (12, 2)
    np.testing.assert_array_equal(pts[:4], [[0, 0], [0, 0], [8, 0], [8, 0]])
    np.testing.assert_array_equal(pts[6], [0, 8])  # second row starts after three cells
    np.testing.assert_array_equal(grid_points(2, 1, 16, offset=0.5), [[8, 8], [24, 8]])


def test_retinaface_priors_layout() -> None:
    priors = retinaface_priors((64, 32), [8, 16, 32], [[16, 32], [64, 128], [256, 512]])
    # cells: 8x4 + 4x2 + 2x1 = 42, two priors each
    assert priors.shape == (84, 4)
    np.testing.assert_array_equal(priors[0], [4, 4, 16, 16])
    np.testing.assert_array_equal(priors[1], [4, 4, 32, 32])
    np.testing.assert_array_equal(priors[2], [12, 4, 16, 16])
    np.testing.assert_array_equal(priors[64], [8, 8, 64, 64])  # first stride-16 prior
    np.testing.assert_array_equal(priors[-1], [48, 16, 512, 512])


def test_prior_decoding() -> None:
    priors = np.array([[100, 50, 20, 40]], np.float32)
    np.testing.assert_allclose(
        decode_prior_boxes(np.zeros((1, 4)), priors, (0.1, 0.2)), [[90, 30, 110, 70]]
    )
    loc = np.array([[1.0, -1.0, np.log(2) / 0.2, 0.0]], np.float32)
    # centre moves by 0.1 * size, width doubles
    np.testing.assert_allclose(
        decode_prior_boxes(loc, priors, (0.1, 0.2)), [[82, 26, 122, 66]], atol=1e-4
    )
    pts = decode_prior_points(np.array([[0, 0, 10, -5] + [0] * 6], np.float32), priors, (0.1, 0.2))
    np.testing.assert_allclose(pts[0, :2], [[100, 50], [120, 30]])


def test_distance_decoding() -> None:
    pts = np.array([[16, 24]], np.float32)
    np.testing.assert_array_equal(
        distance_to_boxes(pts, np.array([[4, 6, 8, 10]], np.float32)), [[12, 18, 24, 34]]
    )
    kps = distance_to_points(pts, np.arange(10, dtype=np.float32)[None])
    np.testing.assert_array_equal(kps[0, 0], [16, 25])
    np.testing.assert_array_equal(kps[0, 4], [24, 33])


def test_yunet_decoding() -> None:
    bbox = np.zeros((6, 4), np.float32)
    bbox[4] = [0.5, 0.25, np.log(3), 0.0]  # cell (col 1, row 1) of a 3x2 grid
    kps = np.zeros((6, 10), np.float32)
    kps[4, :2] = [0.5, -0.5]
    boxes, points = decode_yunet(bbox, kps, cols=3, rows=2, stride=16)
    cx, cy, w, h = (1 + 0.5) * 16, (1 + 0.25) * 16, 3 * 16, 16
    np.testing.assert_allclose(
        boxes[4], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-4
    )
    np.testing.assert_allclose(points[4, 0], [1.5 * 16, 0.5 * 16])
    np.testing.assert_allclose(boxes[0], [-8, -8, 8, 8])


def test_mxnet_retinaface_anchors_match_insightface_config() -> None:
    # The anchors InsightFace's MXNet RetinaFace generates for its default config
    # (base 16, ratio 1, scales 32/16, 8/4, 2/1), in its inclusive-pixel convention.
    np.testing.assert_array_equal(
        mxnet_base_anchors((32.0, 16.0)), [[-248, -248, 263, 263], [-120, -120, 135, 135]]
    )
    np.testing.assert_array_equal(
        mxnet_base_anchors((8.0, 4.0)), [[-56, -56, 71, 71], [-24, -24, 39, 39]]
    )
    np.testing.assert_array_equal(
        mxnet_base_anchors((2.0, 1.0)), [[-8, -8, 23, 23], [0, 0, 15, 15]]
    )
    anchors = mxnet_anchors(2, 2, 8, (2.0, 1.0))
    np.testing.assert_array_equal(anchors[3], [8, 0, 23, 15])  # cell (1, 0), second anchor
    boxes, pts = mxnet_decode(anchors, np.zeros((8, 4), np.float32), np.zeros((8, 10), np.float32))
    np.testing.assert_allclose(boxes, anchors)
    np.testing.assert_allclose(pts[3, 0], [15.5, 7.5])  # zero offsets = the anchor centre


def test_nms() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.9], np.float32)
    keep = nms(boxes, scores, 0.4)
    np.testing.assert_array_equal(keep, [0, 2])  # tie keeps the earlier index
    assert len(nms(boxes, scores, 1.0)) == 4
    assert box_iou(boxes[0], boxes[1:2])[0] == pytest.approx(81 / 119)
    assert len(nms(np.zeros((0, 4)), np.zeros(0), 0.4)) == 0
