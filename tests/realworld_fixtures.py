"""Small COCO keypoint files with the quirks of real data sets (written for posecli; values made up).

The quirks were learned from the slices of COCO, AP-10K, MacaquePose, OneHand10K, Horse-10, Locust, CrowdPose,
OCHuman and COCO-WholeBody that MMPose keeps in its repository's tests/data: extra top-level, image and annotation
fields, polygon and RLE segmentations, several categories sharing one keypoint set, float visibility flags (2.0),
no ``num_keypoints``, ``licenses`` as a string, an empty skeleton, keypoints on the image border, boxes that touch
it, no ``area`` with a 17-point skeleton on 14 keypoints, unlabelled people and crowds, WholeBody's split fields
with detector confidences and validity flags.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

COCO17 = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
]  # fmt: skip
COCO_SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9], [8, 10], [9, 11],
    [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]  # fmt: skip
ANIMAL17 = [
    "left_eye", "right_eye", "nose", "neck", "root_of_tail", "left_shoulder", "left_elbow", "left_front_paw",
    "right_shoulder", "right_elbow", "right_front_paw", "left_hip", "left_knee", "left_back_paw", "right_hip",
    "right_knee", "right_back_paw",
]  # fmt: skip
CROWD14 = [
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
]  # fmt: skip
HAND21 = ["wrist"] + [f"{f}{i}" for f in ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
                      for i in range(1, 5)]  # fmt: skip
HORSE22 = [
    "Nose", "Eye", "Nearknee", "Nearfrontfetlock", "Nearfrontfoot", "Offknee", "Offfrontfetlock", "Offfrontfoot",
    "Shoulder", "Midshoulder", "Elbow", "Girth", "Wither", "Nearhindhock", "Nearhindfetlock", "Nearhindfoot", "Hip",
    "Stifle", "Offhindhock", "Offhindfetlock", "Offhindfoot", "Ischium",
]  # fmt: skip
LOCUST35 = (
    ["head", "neck", "thorax", "abdomen1", "abdomen2"]
    + [f"{part}{side}" for side in "LR" for part in ("anttip", "antbase", "eye")]
    + [f"{leg}{side}{i}" for side in "LR" for leg in ("foreleg", "midleg", "hindleg") for i in range(1, 5)]
)


def _points(rng: np.random.Generator, k: int, box: list[float], labelled: float, flag: float = 2) -> list[Any]:
    """K keypoints inside ``box`` (x, y, w, h), a share ``labelled`` of them labelled with ``flag``, others 0, 0, 0."""
    x, y, w, h = box
    out: list[Any] = []
    for _ in range(k):
        if rng.random() < labelled:
            out += [round(x + w * rng.uniform(0.1, 0.9), 2), round(y + h * rng.uniform(0.1, 0.9), 2), flag]
        else:
            out += [0, 0, 0]
    out[2] = flag if out[2] == 0 and labelled > 0 else out[2]  # everybody labelled keeps at least one point
    if out[2] == flag and out[0] == 0:
        out[0], out[1] = round(x + w / 2, 2), round(y + h / 2, 2)
    return out


def _ann(aid: int, image_id: int, box: list[float], kpts: list[Any], **extra: Any) -> dict[str, Any]:
    ann = {"id": aid, "image_id": image_id, "category_id": 1, "bbox": box, "iscrowd": 0, "keypoints": kpts}
    ann["num_keypoints"] = sum(1 for v in kpts[2::3] if v > 0)
    ann["area"] = round(box[2] * box[3] * 0.7, 4)
    ann.update(extra)
    return ann


def coco_like(rng: np.random.Generator) -> dict[str, Any]:
    """COCO: licenses and info, image urls, polygon segmentation, a crowd with RLE and no labelled keypoint."""
    images = [
        {"license": 4, "file_name": "000000000101.jpg", "coco_url": "http://example.invalid/101.jpg", "height": 96,
         "width": 128, "date_captured": "2013-11-19 21:22:42", "flickr_url": "http://example.invalid/f.jpg", "id": 101},
        {"license": 3, "file_name": "000000000202.jpg", "height": 120, "width": 100, "id": 202},
    ]  # fmt: skip
    a = _ann(5001, 101, [30.5, 10.25, 50.7, 80.1], _points(rng, 17, [30.5, 10.25, 50.7, 80.1], 0.8))
    a["segmentation"] = [[30.5, 10.25, 81.2, 10.25, 81.2, 90.35, 30.5, 90.35]]
    b = _ann(5002, 202, [10.0, 20.0, 60.0, 90.0], _points(rng, 17, [10.0, 20.0, 60.0, 90.0], 0.6))
    crowd = _ann(5003, 202, [0.0, 0.0, 90.0, 110.0], [0] * 51, iscrowd=1)
    crowd["segmentation"] = {"counts": [0, 40, 60, 9800], "size": [120, 100]}
    nobody = _ann(5004, 101, [90.0, 40.0, 20.0, 30.0], [0] * 51)  # a person with no labelled keypoint
    return {
        "info": {"description": "made up", "year": 2020},
        "licenses": [{"url": "http://example.invalid/l", "id": 3, "name": "x"}, {"id": 4, "name": "y"}],
        "categories": [{"supercategory": "person", "id": 1, "name": "person", "keypoints": COCO17,
                        "skeleton": COCO_SKELETON}],
        "images": images,
        "annotations": [a, b, crowd, nobody],
    }  # fmt: skip


def ap10k_like(rng: np.random.Generator) -> dict[str, Any]:
    """AP-10K: several species (non-consecutive category ids) share one 17-point keypoint set; integer boxes."""
    cats = [
        {"id": cid, "name": name, "supercategory": sup, "keypoints": ANIMAL17,
         "skeleton": [[1, 2], [1, 3], [2, 3], [3, 4], [4, 5], [4, 6], [6, 7], [7, 8], [4, 9], [9, 10], [10, 11],
                      [5, 12], [12, 13], [13, 14], [5, 15], [15, 16], [16, 17]]}
        for cid, name, sup in ((1, "antelope", "Bovidae"), (2, "argali sheep", "Bovidae"), (26, "cat", "Felidae"))
    ]  # fmt: skip
    images = [
        {"license": 1, "id": 37001, "file_name": "000000037001.jpg", "width": 128, "height": 96, "background": 5},
        {"license": 1, "id": 4, "file_name": "000000000004.jpg", "width": 112, "height": 80, "background": 1},
    ]
    anns = [
        _ann(9284, 37001, [6, 12, 100, 70], _points(rng, 17, [6, 12, 100, 70], 0.9), category_id=26),
        _ann(6, 4, [20, 10, 70, 60], _points(rng, 17, [20, 10, 70, 60], 0.9), category_id=1),
        _ann(7, 4, [60, 30, 40, 45], _points(rng, 17, [60, 30, 40, 45], 0.8), category_id=2),
    ]
    return {"info": {"description": "made up"}, "licenses": [{"id": 1, "name": "MIT"}], "images": images,
            "annotations": anns, "categories": cats}  # fmt: skip


def macaque_like(rng: np.random.Generator) -> dict[str, Any]:
    """MacaquePose: float keypoints and float flags (2.0 / 0.0), long float areas and boxes, polygons."""
    images = [{"id": 12900, "file_name": "d47f1b1e.jpg", "height": 90, "width": 128}]
    box = [14.387, 14.704, 62.301000000000002, 53.522]
    kpts = [float(v) for v in _points(rng, 17, box, 0.85, 2.0)]
    ann = _ann(16169, 12900, box, kpts, area=2067.9647999999926)
    ann["segmentation"] = [[40.8, 53.4, 46.5, 54.8, 50.2, 58.7, 57.3, 59.3, 65.2, 60.8, 14.4, 20.1]]
    return {"categories": [{"supercategory": "animal", "id": 1, "name": "macaque", "keypoints": COCO17,
                            "skeleton": COCO_SKELETON}], "images": images, "annotations": [ann]}  # fmt: skip


def onehand10k_like(rng: np.random.Generator) -> dict[str, Any]:
    """OneHand10K: `licenses` is a string, the year too, no num_keypoints, flags all 1, categories last."""
    images = [{"file_name": "9.jpg", "height": 100, "width": 70, "id": 9},
              {"file_name": "33.jpg", "height": 96, "width": 64, "id": 33}]  # fmt: skip
    anns = []
    for aid, box in ((9, [10, 15, 40, 70]), (33, [12, 20, 30, 50])):
        ann = _ann(aid, aid, box, _points(rng, 21, box, 0.7, 1))
        del ann["num_keypoints"]
        x, y, w, h = box
        ann["segmentation"] = [[x, y, x, y + h, x + w, y + h, x + w, y]]
        anns.append(ann)
    return {"info": {"description": "made up", "version": "1.0", "year": "2020"}, "licenses": "", "images": images,
            "annotations": anns, "categories": [{"supercategory": "hand", "id": 1, "name": "hand",
            "keypoints": HAND21, "skeleton": [[1, 2], [2, 3], [3, 4], [4, 5], [1, 6], [6, 7]]}]}  # fmt: skip


def horse10_like(rng: np.random.Generator) -> dict[str, Any]:
    """Horse-10: an empty skeleton, a box that ends at the right image edge, a keypoint on the border."""
    images = [{"id": 100, "file_name": "0244.png", "height": 81, "width": 144},
              {"id": 500, "file_name": "0292.png", "height": 81, "width": 144}]  # fmt: skip
    a = _ann(100, 100, [1, 19, 72, 48], _points(rng, 22, [1, 19, 72, 48], 0.9))
    b_box = [110, 23, 34, 48]  # x + w = 144 = the image width
    b = _ann(500, 500, b_box, _points(rng, 22, b_box, 0.6))
    b["keypoints"][0:3] = [143.1, 59.4, 2.0]  # on the last pixel column
    b["num_keypoints"] = sum(1 for v in b["keypoints"][2::3] if v > 0)
    return {"categories": [{"supercategory": "animal", "id": 1, "name": "horse", "keypoints": HORSE22,
                            "skeleton": []}], "images": images, "annotations": [a, b]}  # fmt: skip


def locust_like(rng: np.random.Generator) -> dict[str, Any]:
    """Locust: 35 keypoints, the box is exactly the labelled points' extent (points on its border)."""
    images = [{"id": 630, "file_name": "630.jpg", "height": 80, "width": 80}]
    kpts = _points(rng, 35, [12.6, 25.25, 43.25, 29.1], 1.0, 2.0)
    xs, ys = kpts[0::3], kpts[1::3]
    box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    return {"categories": [{"supercategory": "animal", "id": 1, "name": "locust", "keypoints": LOCUST35,
                            "skeleton": [[2, 1], [3, 2], [4, 3], [5, 4], [7, 6], [8, 7]]}], "images": images,
            "annotations": [_ann(630, 630, box, kpts, area=box[2] * box[3])]}  # fmt: skip


def crowdpose_like(rng: np.random.Generator) -> dict[str, Any]:
    """CrowdPose: no `area`, COCO's 17-point skeleton on 14 keypoints, crowdIndex, an unlabelled person."""
    images = [{"file_name": "106848.jpg", "id": 106848, "height": 85, "width": 128, "crowdIndex": 0.33},
              {"file_name": "103319.jpg", "id": 103319, "height": 96, "width": 128, "crowdIndex": 0.39}]  # fmt: skip
    anns = []
    for aid, iid, box, share in (
        (123803, 106848, [21.2, 2.7, 54.6, 70.5], 0.5),
        (131039, 106848, [21.7, 19.4, 7.1, 6.0], 0.0),
        (127068, 103319, [63.4, 31.5, 20.1, 49.5], 0.9),
    ):
        ann = _ann(aid, iid, box, _points(rng, 14, box, share, 2) if share else [0] * 42)
        del ann["area"]
        anns.append(ann)
    return {"categories": [{"supercategory": "person", "id": 1, "name": "person", "keypoints": CROWD14,
                            "skeleton": COCO_SKELETON[:12]}], "images": images, "annotations": anns}  # fmt: skip


def ochuman_like(rng: np.random.Generator) -> dict[str, Any]:
    """OCHuman: RLE segmentation dicts (string counts), float keypoints mixed with integers."""
    images = [{"file_name": "003799.jpg", "width": 90, "height": 86, "id": 1}]
    kpts = _points(rng, 17, [25, 11, 47, 75], 0.9)
    kpts[0], kpts[1] = 37.15701271305881, 18.886769422623237
    ann = _ann(1, 1, [25, 11, 47, 75], kpts, area=3567)
    ann["segmentation"] = {"counts": "Zei62gj08I7N2N2N2N1O1O001O1O", "size": [86, 90]}
    return {"categories": [{"keypoints": COCO17, "skeleton": COCO_SKELETON, "id": 1, "supercategory": "person",
                            "name": "person"}], "images": images, "annotations": [ann]}  # fmt: skip


def wholebody_like(rng: np.random.Generator) -> dict[str, Any]:
    """COCO-WholeBody: split fields with detector confidences, part boxes, validity booleans."""
    images = [{"license": 1, "file_name": "000000000785.jpg", "height": 85, "width": 128, "id": 785}]
    box = [56.2, 8.9, 43.7, 69.3]
    ann = _ann(442619, 785, box, _points(rng, 17, box, 0.9))
    ann["foot_kpts"] = _points(rng, 6, box, 0.5, 2)
    ann["face_kpts"] = [v if i % 3 != 2 else (0.61 if v else 0) for i, v in enumerate(_points(rng, 68, box, 0.7))]
    ann["lefthand_kpts"] = [v if i % 3 != 2 else (1.37 if v else 0) for i, v in enumerate(_points(rng, 21, box, 0.4))]
    ann["righthand_kpts"] = [0.0] * 63
    ann.update(face_box=[70.1, 9.3, 12.0, 14.2], lefthand_box=[0.0, 0.0, 0.0, 0.0], righthand_box=[0, 0, 0, 0],
               face_valid=True, lefthand_valid=True, righthand_valid=False, foot_valid=True)  # fmt: skip
    return {"categories": [{"supercategory": "person", "id": 1, "name": "person", "keypoints": COCO17,
                            "skeleton": COCO_SKELETON}], "images": images, "annotations": [ann]}  # fmt: skip


FIXTURES = {
    "coco": coco_like, "ap10k": ap10k_like, "macaque": macaque_like, "onehand10k": onehand10k_like,
    "horse10": horse10_like, "locust": locust_like, "crowdpose": crowdpose_like, "ochuman": ochuman_like,
    "coco_wholebody": wholebody_like,
}  # fmt: skip


def write_fixture(name: str, root: Path) -> tuple[Path, Path]:
    """The fixture's annotation file and an image folder of noise images of the sizes the file gives."""
    data = FIXTURES[name](np.random.default_rng(len(name)))
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for img in data["images"]:
        pixels = rng.integers(0, 255, (img["height"], img["width"], 3), dtype=np.uint8)
        cv2.imwrite(str(img_dir / img["file_name"]), pixels)
    ann = root / f"{name}.json"
    ann.write_text(json.dumps(data), encoding="utf-8")
    return ann, img_dir
