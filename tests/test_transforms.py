"""Top-down geometry and augmentations: known boxes, known affine maps, flips, half body, random bounds."""

from __future__ import annotations

import numpy as np
import pytest

from posecli.datasets.meta import load_builtin
from posecli.transforms import (
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    affine_keypoints,
    affine_points,
    bbox_xywh_to_center_scale,
    clip_bbox_xywh,
    flip_center,
    flip_image,
    flip_keypoints,
    get_affine_transform,
    half_body_center_scale,
    normalize_image,
    random_half_body,
    random_scale_rotation,
    random_shift_center,
    warp_image,
)


# --------------------------------------------------------------------------------------------- boxes
def test_wide_box_grows_in_height_to_input_aspect_and_is_padded() -> None:
    center, scale = bbox_xywh_to_center_scale([10, 20, 100, 100], aspect_ratio=192 / 256)
    np.testing.assert_allclose(center, [60.0, 70.0])
    # w=100 > 0.75*100, so h = 100 / 0.75; then / 200 * 1.25
    np.testing.assert_allclose(scale, [100 / 200 * 1.25, 100 / 0.75 / 200 * 1.25], rtol=1e-6)
    assert center.dtype == np.float32 and scale.dtype == np.float32


def test_tall_box_grows_in_width() -> None:
    center, scale = bbox_xywh_to_center_scale([0, 0, 30, 200], aspect_ratio=0.75, padding=1.0)
    np.testing.assert_allclose(center, [15.0, 100.0])
    np.testing.assert_allclose(scale, [150 / 200, 1.0], rtol=1e-6)


def test_gt_box_is_clipped_as_mmpose_029() -> None:
    """TopDownCocoDataset: x1 = max(0, x), x2 = min(W - 1, x1 + max(0, w)); box = [x1, y1, x2 - x1, y2 - y1]."""
    assert clip_bbox_xywh([10, 20, 100, 50], (640, 480)) == [10, 20, 100, 50]
    assert clip_bbox_xywh([-5, -8, 20, 20], (640, 480)) == [0, 0, 20, 20]  # x1 clipped first, then + w
    assert clip_bbox_xywh([600, 400, 100, 100], (640, 480)) == [600, 400, 39, 79]
    assert clip_bbox_xywh([10, 10, 1, 30], (640, 480)) == [10, 10, 1, 30]
    assert clip_bbox_xywh([10, 10, 0, 30], (640, 480)) is None  # empty
    assert clip_bbox_xywh([10, 10, -4, 30], (640, 480)) is None
    assert clip_bbox_xywh([700, 10, 30, 30], (640, 480)) is None  # right of the image
    assert clip_bbox_xywh([639.5, 10, 30, 30], (640, 480)) is None  # x2 = W - 1 < x1


def test_box_stays_float64_until_center_and_scale() -> None:
    """MMPose keeps boxes as Python floats: 88.17 + 120.84 / 2 = 148.59 and 39.85 + 179.53 / 2 = 129.615 are
    rounded to float32 once; a float32 box first gives 129.61499 (another crop after OpenCV's fixed-point warp)."""
    bbox = clip_bbox_xywh([88.17, 39.85, 120.84, 179.53], (320, 240))
    assert bbox is not None and all(type(v) is float for v in bbox)
    center, scale = bbox_xywh_to_center_scale(bbox, aspect_ratio=192 / 256)
    assert center.tolist() == np.array([148.59, 129.615], np.float32).tolist()
    assert scale.tolist() == (np.array([179.53 * 0.75, 179.53], np.float32) / 200 * 1.25).tolist()
    center32, _ = bbox_xywh_to_center_scale(np.float32(bbox), aspect_ratio=192 / 256)
    assert center32[1] != center[1]  # the float32 box would not be MMPose's


# -------------------------------------------------------------------------------------------- affine
def test_affine_maps_box_corners_to_output_corners() -> None:
    center, out_wh = np.array([200.0, 150.0]), (192, 256)
    scale = np.array([192.0, 256.0]) / 200  # a box exactly the output size: a pure translation
    m = get_affine_transform(center, scale, 0.0, out_wh)
    np.testing.assert_allclose(m, [[1, 0, -104], [0, 1, -22]], atol=1e-4)
    corners = np.array([[104.0, 22.0], [296.0, 278.0], [200.0, 150.0]])
    np.testing.assert_allclose(affine_points(corners, m), [[0, 0], [192, 256], [96, 128]], atol=1e-3)


def test_affine_scales_a_box_twice_the_output_by_half() -> None:
    m = get_affine_transform([100.0, 100.0], np.array([96.0, 128.0]) / 100, 0.0, (48, 64))
    np.testing.assert_allclose(m, [[0.25, 0, 100 * -0.25 + 24], [0, 0.25, 100 * -0.25 + 32]], atol=1e-5)


def test_rotation_by_90_degrees_turns_content_counter_clockwise() -> None:
    center = np.array([50.0, 60.0])
    m = get_affine_transform(center, np.array([1.0, 1.0]), 90.0, (200, 200))  # 200 px box -> 200 px output
    right_of_center = center + [30.0, 0.0]
    below_center = center + [0.0, 30.0]
    # image right -> output up; image down -> output right
    np.testing.assert_allclose(affine_points(right_of_center, m), [100, 70], atol=1e-3)
    np.testing.assert_allclose(affine_points(below_center, m), [130, 100], atol=1e-3)
    np.testing.assert_allclose(affine_points(center, m), [100, 100], atol=1e-3)


@pytest.mark.parametrize("rot", [0.0, 17.5, -63.0, 180.0])
def test_inverse_affine_round_trips(rot: float) -> None:
    center, scale, out_wh = np.array([321.5, 240.25]), np.array([1.1, 1.4666]), (288, 384)
    fwd = get_affine_transform(center, scale, rot, out_wh)
    inv = get_affine_transform(center, scale, rot, out_wh, inv=True)
    pts = np.random.default_rng(0).uniform(0, 640, (20, 2))
    np.testing.assert_allclose(affine_points(affine_points(pts, fwd), inv), pts, atol=5e-3)
    full = np.vstack([fwd, [0, 0, 1]]) @ np.vstack([inv, [0, 0, 1]])
    np.testing.assert_allclose(full, np.eye(3), atol=1e-5)


def test_warp_moves_a_pixel_where_the_matrix_sends_it() -> None:
    image = np.zeros((100, 120, 3), np.uint8)
    image[40, 30] = (255, 128, 7)  # (row y=40, column x=30)
    m = get_affine_transform([60.0, 50.0], np.array([0.5, 0.5]), 0.0, (100, 100))  # 100-px box -> 100 px
    out = warp_image(image, m, (100, 100))
    assert out.shape == (100, 100, 3)
    x, y = affine_points([30.0, 40.0], m)
    assert (x, y) == pytest.approx((20.0, 40.0), abs=1e-4)
    assert tuple(out[40, 20]) == (255, 128, 7)
    assert out.sum() == 255 + 128 + 7


def test_only_visible_keypoints_are_mapped() -> None:
    kp = np.array([[10.0, 20.0], [5.0, 5.0]], np.float32)
    m = np.array([[2.0, 0.0, 1.0], [0.0, 2.0, -1.0]])
    out = affine_keypoints(kp, np.array([1.0, 0.0]), m)
    np.testing.assert_allclose(out, [[21, 39], [5, 5]])


# --------------------------------------------------------------------------------------------- flips
def test_flip_twice_is_identity_with_pairs_swapped_back() -> None:
    meta = load_builtin("coco")
    rng = np.random.default_rng(1)
    kp = rng.uniform(0, 99, (17, 2)).astype(np.float32)
    vis = np.ones(17, np.float32)
    once, vis1 = flip_keypoints(kp, vis, 100, meta.flip_pairs)
    # left_eye (1) now holds the mirrored right_eye (2)
    np.testing.assert_allclose(once[1], [99 - kp[2, 0], kp[2, 1]], rtol=1e-6)
    np.testing.assert_allclose(once[0], [99 - kp[0, 0], kp[0, 1]], rtol=1e-6)  # nose has no pair
    twice, vis2 = flip_keypoints(once, vis1, 100, meta.flip_pairs)
    np.testing.assert_allclose(twice, kp, atol=1e-5)
    np.testing.assert_array_equal(vis2, vis)


def test_flip_zeroes_invisible_keypoints_and_swaps_their_flags() -> None:
    kp = np.array([[10.0, 5.0], [20.0, 6.0], [30.0, 7.0]], np.float32)
    vis = np.array([1.0, 0.0, 1.0], np.float32)
    out, out_vis = flip_keypoints(kp, vis, 50, [(0, 1)])
    np.testing.assert_array_equal(out_vis, [0, 1, 1])
    np.testing.assert_allclose(out, [[0, 0], [39, 5], [19, 7]])


def test_flipped_image_pixel_lands_on_flipped_keypoint_and_center_rule() -> None:
    image = np.zeros((10, 16, 3), np.uint8)
    image[3, 4] = 200
    flipped = flip_image(image)
    kp, _ = flip_keypoints(np.array([[4.0, 3.0]]), np.array([1.0]), 16, [])
    assert flipped[3, int(kp[0, 0])].tolist() == [200, 200, 200] and kp[0, 0] == 11
    np.testing.assert_array_equal(flip_image(flipped), image)
    np.testing.assert_allclose(flip_center(np.array([4.0, 3.0]), 16), [11.0, 3.0])


# ------------------------------------------------------------------------------------------ half body
def _coco_person() -> tuple[np.ndarray, np.ndarray, list[int]]:
    meta = load_builtin("coco")
    kp = np.zeros((17, 2), np.float32)
    kp[:11] = np.stack([np.linspace(40, 60, 11), np.linspace(10, 50, 11)], axis=1)  # upper body
    kp[11:] = np.stack([np.linspace(45, 55, 6), np.linspace(70, 130, 6)], axis=1)  # hips, knees, ankles
    return kp, np.ones(17, np.float32), meta.upper_body_ids


def test_half_body_boxes_the_chosen_half() -> None:
    kp, vis, upper_ids = _coco_person()
    center, scale = half_body_center_scale(kp, vis, upper_ids, aspect_ratio=0.75, prefer_upper=True)
    np.testing.assert_allclose(center, kp[:11].mean(0), rtol=1e-6)
    # upper box 20 x 40: w < 0.75 h, so w = 30; then / 200 * 1.5
    np.testing.assert_allclose(scale, [30 / 200 * 1.5, 40 / 200 * 1.5], rtol=1e-6)
    center, scale = half_body_center_scale(kp, vis, upper_ids, aspect_ratio=0.75, prefer_upper=False)
    np.testing.assert_allclose(center, kp[11:].mean(0), rtol=1e-6)
    np.testing.assert_allclose(scale, [45 / 200 * 1.5, 60 / 200 * 1.5], rtol=1e-6)


def test_half_body_falls_back_when_a_half_is_too_small() -> None:
    kp, vis, upper_ids = _coco_person()
    vis[2:11] = 0  # only 2 upper joints visible: the lower half is taken even when upper is preferred
    center, _ = half_body_center_scale(kp, vis, upper_ids, 0.75, prefer_upper=True)
    np.testing.assert_allclose(center, kp[11:].mean(0), rtol=1e-6)
    vis[:] = 0
    vis[0] = 1  # one joint: no box
    assert half_body_center_scale(kp, vis, upper_ids, 0.75, prefer_upper=False) is None


def test_random_half_body_needs_enough_visible_joints() -> None:
    kp, vis, upper_ids = _coco_person()
    rng = np.random.default_rng(0)
    assert random_half_body(kp, vis, upper_ids, 0.75, num_joints_half_body=17, prob=1.0, rng=rng) is None
    assert random_half_body(kp, vis, upper_ids, 0.75, num_joints_half_body=8, prob=0.0, rng=rng) is None
    centers = [random_half_body(kp, vis, upper_ids, 0.75, 8, 1.0, rng)[0] for _ in range(400)]
    upper = np.mean([np.allclose(c, kp[:11].mean(0)) for c in centers])
    assert 0.6 < upper < 0.78  # P(randn < 0.5) = 0.69, MMPose's choice rule


# ---------------------------------------------------------------------------------------- random draws
def test_random_scale_and_rotation_stay_in_bounds() -> None:
    rng = np.random.default_rng(0)
    base = np.array([1.0, 2.0], np.float32)
    draws = [random_scale_rotation(base, 0.35, 45.0, 0.6, rng) for _ in range(3000)]
    factors = np.array([s[0] for s, _ in draws])
    rots = np.array([r for _, r in draws])
    assert factors.min() >= 0.65 - 1e-6 and factors.max() <= 1.35 + 1e-6
    assert factors.min() == pytest.approx(0.65, abs=1e-6)  # clipping is hit
    np.testing.assert_allclose([s[1] / s[0] for s, _ in draws], 2.0, rtol=1e-6)  # aspect kept
    assert np.abs(rots).max() <= 90.0 and np.abs(rots).max() == pytest.approx(90.0)
    assert 0.36 < np.mean(rots == 0.0) < 0.44  # rotation applied with probability 0.6
    assert all(r == 0.0 for _, r in (random_scale_rotation(base, 0.35, 45.0, 0.0, rng) for _ in range(200)))


def test_random_shift_is_bounded_by_the_box() -> None:
    rng = np.random.default_rng(0)
    center, scale = np.array([100.0, 100.0], np.float32), np.array([0.5, 1.0], np.float32)
    shifts = np.array([random_shift_center(center, scale, 0.16, 1.0, rng) - center for _ in range(500)])
    assert np.abs(shifts[:, 0]).max() <= 0.16 * 100 + 1e-4 and np.abs(shifts[:, 0]).max() > 14
    assert np.abs(shifts[:, 1]).max() <= 0.16 * 200 + 1e-4 and np.abs(shifts[:, 1]).max() > 28
    np.testing.assert_array_equal(random_shift_center(center, scale, 0.16, 0.0, rng), center)


# ------------------------------------------------------------------------------------------- normalise
def test_normalize_uses_imagenet_stats_in_rgb_order() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0] = 255  # red channel
    image[..., 2] = 51
    out = normalize_image(image)
    assert out.shape == (3, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], (1.0 - 0.485) / 0.229, rtol=1e-6)
    np.testing.assert_allclose(out[1], (0.0 - 0.456) / 0.224, rtol=1e-6)
    np.testing.assert_allclose(out[2], (0.2 - 0.406) / 0.225, rtol=1e-5)
    every = np.random.default_rng(0).permutation(np.arange(256 * 3, dtype=np.uint8)).reshape(16, 16, 3)
    arithmetic = ((every.astype(np.float32) / np.float32(255.0) - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB).transpose(
        2, 0, 1
    )
    np.testing.assert_array_equal(normalize_image(every), arithmetic)  # the lookup table is exact
    np.testing.assert_allclose(IMAGENET_MEAN_RGB, [0.485, 0.456, 0.406])
    np.testing.assert_allclose(IMAGENET_STD_RGB, [0.229, 0.224, 0.225])
