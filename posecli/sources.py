"""What `posecli predict` reads: SOURCE arguments expanded into images and videos, and the person boxes for them.

Inputs: image files, folders (images and videos inside, sorted by name), video files (anything OpenCV's
VideoCapture opens) and globs. Everything is checked before any inference, so a bad input stops the run before
any output is written (or, with ``skip_bad``, is reported and left out).

Boxes (x, y, w, h in image pixels, taken as given) come from one of:
  - a bbox file: COCO detection results ``{image_id, category_id, bbox, score}`` with an annotation file mapping
    ids to file names, or a list of records carrying ``file_name`` (and ``frame`` for videos);
  - the whole image: one box ``[0, 0, W, H]`` per image or frame;
  - a torchvision detector (person class), weights fetched with posecli's download rules.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from posecli.errors import PoseCliError
from posecli.files import is_finite_number

if TYPE_CHECKING:
    from posecli.checkpoints import DownloadProgress

IMAGE_EXTENSIONS = frozenset(
    [
        ".bmp",
        ".dib",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jp2",
        ".png",
        ".webp",
        ".pbm",
        ".pgm",
        ".ppm",
        ".pxm",
        ".pnm",
        ".tif",
        ".tiff",
        ".exr",
        ".hdr",
        ".pic",
        ".sr",
        ".ras",
    ]
)
VIDEO_EXTENSIONS = frozenset(
    [".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp", ".ogv"]
)
GLOB_CHARS = frozenset("*?[")
DEFAULT_FPS = 25.0  # for videos whose container does not say

Warn = Callable[[str], None]


@dataclass(frozen=True)
class MediaInput:
    """One image or video to run on."""

    path: Path
    name: str  # file_name in predictions.json: the path as the user gave it (folder/file for folder contents)
    kind: Literal["image", "video"]
    fps: float | None = None  # videos: frames per second (DEFAULT_FPS when the container does not say)
    frame_count: int | None = None  # videos: as the container reports it (may be approximate)
    relative_name: str | None = None  # for files found in a folder: the name inside the folder

    @property
    def num_frames_hint(self) -> int | None:
        """Frames to expect (1 for an image), for progress bars."""
        return 1 if self.kind == "image" else self.frame_count


# ------------------------------------------------------------------------------------------------ inputs
def _bad(message: str, path: str | Path, skip_bad: bool, warn: Warn) -> None:
    if not skip_bad:
        raise PoseCliError(message, path)
    warn(f"{path}: {message}; skipped (--skip-bad)")


def probe_video(path: Path) -> tuple[float, int] | str:
    """(fps, frame count) of a video OpenCV can decode, else the problem as text."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return "cannot open video (corrupt, or a format/codec OpenCV cannot read)"
        ok, frame = cap.read()
        if not ok or frame is None:
            return "cannot decode any frame of the video (corrupt or empty)"
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    if not math.isfinite(fps) or fps <= 0:
        fps = DEFAULT_FPS
    return fps, max(count, 1)


def _classify(path: Path, name: str, skip_bad: bool, warn: Warn, relative: str | None = None) -> MediaInput | None:
    """A checked MediaInput for one file, or None when it is bad and skipped."""
    if not path.exists():
        _bad("file not found", path, skip_bad, warn)
        return None
    if not path.is_file():
        _bad("not a file", path, skip_bad, warn)
        return None
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS or (ext not in VIDEO_EXTENSIONS and cv2.haveImageReader(str(path))):
        if not cv2.haveImageReader(str(path)):  # reads the file's signature only
            _bad("not an image OpenCV can decode (wrong type or corrupt)", path, skip_bad, warn)
            return None
        return MediaInput(path=path, name=name, kind="image", relative_name=relative)
    probed = probe_video(path)
    if isinstance(probed, str):
        what = probed if ext in VIDEO_EXTENSIONS else "neither an image nor a video OpenCV can decode"
        _bad(what, path, skip_bad, warn)
        return None
    fps, count = probed
    return MediaInput(path=path, name=name, kind="video", fps=fps, frame_count=count, relative_name=relative)


def expand_sources(sources: Sequence[str], skip_bad: bool = False, warn: Warn = lambda _: None) -> list[MediaInput]:
    """SOURCE arguments -> checked images and videos, in argument order (folder and glob contents sorted)."""
    if not sources:
        raise PoseCliError("no SOURCE given: pass image files, folders, videos or a glob")
    out: list[MediaInput] = []
    seen: set[Path] = set()

    def add(item: MediaInput | None) -> None:
        if item is None:
            return
        key = item.path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(item)

    for arg in sources:
        path = Path(arg).expanduser()
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
            )
            if not found:
                _bad("no images or videos in this folder", path, skip_bad, warn)
            for p in found:
                add(_classify(p, str(Path(arg) / p.name), skip_bad, warn, relative=p.name))
        elif not path.exists() and GLOB_CHARS & set(arg):
            matches = sorted(glob.glob(os.path.expanduser(arg), recursive=True))
            files = [m for m in matches if Path(m).is_file()]
            if not files:
                _bad("no file matches this pattern", arg, skip_bad, warn)
            for m in files:
                add(_classify(Path(m), m, skip_bad, warn))
        else:
            add(_classify(path, arg, skip_bad, warn))
    if not out:
        raise PoseCliError("no readable image or video among the SOURCE arguments")
    return out


def read_image_bgr(item: MediaInput) -> np.ndarray:
    """Decode an image input (H, W, 3) uint8 BGR; a file that fails to decode is a PoseCliError."""
    image = cv2.imread(str(item.path), cv2.IMREAD_COLOR)
    if image is None:
        raise PoseCliError("cannot decode image (corrupt or truncated)", item.path)
    return image


def iter_frames(item: MediaInput) -> Iterator[tuple[int | None, np.ndarray]]:
    """(frame index or None for images, BGR frame (H, W, 3) uint8) for every frame of an input."""
    if item.kind == "image":
        yield None, read_image_bgr(item)
        return
    cap = cv2.VideoCapture(str(item.path))
    try:
        if not cap.isOpened():
            raise PoseCliError("cannot open video", item.path)
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            yield index, frame
            index += 1
    finally:
        cap.release()


# ------------------------------------------------------------------------------------------------ boxes
@dataclass
class Box:
    """One person box to run the pose model on."""

    bbox: tuple[float, float, float, float]  # x, y, w, h image px (float64, as given)
    score: float = 1.0
    category_id: Any = 1
    image_id: Any = None


FrameKey = tuple[int, int | None]  # (input index, frame index or None for images)


@dataclass
class FileBoxes:
    """Boxes read from a bbox file, grouped by (input, frame), in file order."""

    boxes: dict[FrameKey, list[Box]] = field(default_factory=dict)
    image_ids: dict[int, Any] = field(default_factory=dict)  # input index -> COCO image id (from --ann-file)

    def for_frame(self, key: FrameKey) -> list[Box]:
        """The boxes of one image or video frame (empty when the file has none)."""
        return self.boxes.get(key, [])


def _check_box(value: Any, where: str, source: Path) -> tuple[float, float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) < 4 or not all(is_finite_number(v) for v in value[:4]):
        raise PoseCliError(f"{where}: bbox must be [x, y, w, h] finite numbers", source)
    x, y, w, h = (float(v) for v in value[:4])
    if w <= 0 or h <= 0:
        raise PoseCliError(f"{where}: bbox width and height must be positive, got {value[:4]}", source)
    return x, y, w, h


class _InputIndex:
    """Find the input a bbox record's file_name means: the name as given, the full path, or the name inside a
    folder / the base name when only one input has it."""

    def __init__(self, inputs: Sequence[MediaInput]) -> None:
        self.exact: dict[str, int] = {}
        self.loose: dict[str, list[int]] = {}
        for i, item in enumerate(inputs):
            for key in {item.name, str(item.path), str(item.path.resolve())}:
                self.exact.setdefault(os.path.normpath(key), i)
            for key in {item.relative_name, item.path.name}:
                if key is not None:
                    self.loose.setdefault(os.path.normpath(key), []).append(i)

    def find(self, file_name: str) -> int | None | Literal["ambiguous"]:
        key = os.path.normpath(file_name)
        if key in self.exact:
            return self.exact[key]
        hits = self.loose.get(key, [])
        if len(hits) > 1:
            return "ambiguous"
        return hits[0] if hits else None


def load_bbox_file(
    bbox_file: Path,
    inputs: Sequence[MediaInput],
    ann_file: Path | None,
    det_bbox_thr: float,
    skip_bad: bool = False,
    warn: Warn = lambda _: None,
) -> FileBoxes:
    """Read a bbox file (COCO detections + ann file, or records with file_name) and attach its boxes to inputs."""
    from posecli.files import load_json_file  # size-limited JSON reader

    if not bbox_file.is_file():
        raise PoseCliError("bbox file not found" if not bbox_file.exists() else "bbox file is not a file", bbox_file)
    records = load_json_file(bbox_file, "bbox file")
    if not isinstance(records, list):
        raise PoseCliError(
            "a bbox file must be a JSON list of {image_id, bbox, score} (with --ann-file) or {file_name, bbox, ...}",
            bbox_file,
        )
    index = _InputIndex(inputs)
    id_to_name: dict[Any, str] = {}
    person_category: Any = None
    if ann_file is not None:
        if not ann_file.is_file():
            raise PoseCliError("annotation file not found", ann_file)
        coco = load_json_file(ann_file, "annotation file")
        if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
            raise PoseCliError("an annotation file must be a COCO file with an 'images' list", ann_file)
        for img in coco["images"]:
            if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
                raise PoseCliError("every entry of 'images' needs an id and a file_name", ann_file)
            id_to_name[img["id"]] = img["file_name"]
        cats = coco.get("categories") or [{"id": 1}]
        person_category = cats[0].get("id", 1) if isinstance(cats[0], dict) else 1

    out = FileBoxes()
    unknown: list[str] = []
    for i, rec in enumerate(records):
        where = f"record #{i}"
        if not isinstance(rec, dict) or "bbox" not in rec:
            raise PoseCliError(f"{where}: needs a bbox (and file_name, or image_id with --ann-file)", bbox_file)
        bbox = _check_box(rec["bbox"], where, bbox_file)
        score = rec.get("score", rec.get("bbox_score", 1.0))
        if not is_finite_number(score):
            raise PoseCliError(f"{where}: score must be a finite number", bbox_file)
        category = rec.get("category_id", person_category if person_category is not None else 1)
        if person_category is not None and category != person_category:
            continue  # not the person category of the annotation file (as evaluate)
        if float(score) < det_bbox_thr:
            continue
        image_id = rec.get("image_id")
        if isinstance(rec.get("file_name"), str):
            file_name = rec["file_name"]
        elif ann_file is not None and "image_id" in rec:
            if image_id not in id_to_name:
                raise PoseCliError(f"{where}: image_id {image_id!r} is not in {ann_file}", bbox_file)
            file_name = id_to_name[image_id]
        elif "image_id" in rec:
            raise PoseCliError(
                f"{where}: has an image_id but no file_name; pass --ann-file (a COCO file with 'images') to map "
                "ids to file names",
                bbox_file,
            )
        else:
            raise PoseCliError(f"{where}: needs a file_name (or image_id with --ann-file)", bbox_file)
        found = index.find(file_name)
        if found == "ambiguous":
            raise PoseCliError(
                f"{where}: file_name '{file_name}' matches several inputs; give the path as in the SOURCE arguments",
                bbox_file,
            )
        if found is None:
            if not skip_bad:
                raise PoseCliError(f"{where}: image '{file_name}' is not among the SOURCE inputs", bbox_file)
            unknown.append(file_name)
            continue
        item = inputs[found]
        frame = rec.get("frame")
        if item.kind == "video":
            if type(frame) is not int or frame < 0:
                raise PoseCliError(
                    f"{where}: '{file_name}' is a video: the record needs a frame number >= 0", bbox_file
                )
        elif frame is not None:
            raise PoseCliError(f"{where}: '{file_name}' is an image: a record for it takes no frame", bbox_file)
        if image_id is not None:
            out.image_ids.setdefault(found, image_id)
        out.boxes.setdefault((found, frame), []).append(
            Box(bbox=bbox, score=float(score), category_id=category, image_id=image_id)
        )
    if unknown:
        shown = ", ".join(sorted(set(unknown))[:3])
        warn(f"{bbox_file}: {len(unknown)} boxes name images not among the inputs ({shown}...); skipped (--skip-bad)")
    return out


def whole_image_box(image_wh: Sequence[int]) -> Box:
    """One box covering the whole image or frame: [0, 0, W, H], score 1."""
    return Box(bbox=(0.0, 0.0, float(image_wh[0]), float(image_wh[1])))


# ------------------------------------------------------------------------------------------------ detector
DEFAULT_DETECTOR_THR = 0.3  # keep person detections scoring at least this (MMPose's demo default)


def detector_names() -> list[str]:
    """The torchvision detection models (``torchvision.models.list_models`` of the detection module)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models.detection))


def detector_weights_url(name: str) -> tuple[str, int]:
    """(download URL of the default COCO weights, label index of 'person') of a torchvision detector."""
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    categories = list(weights.meta.get("categories", []))
    person = categories.index("person") if "person" in categories else 1
    return weights.url, person


def detector_weights_file(name: str, cache_dir: Path | None = None, progress: DownloadProgress | None = None) -> Path:
    """The detector's weights file: torchvision's cache if it holds it, else downloaded into posecli's cache.

    Downloads follow the checkpoint rules (progress bar, the sha256 prefix in torchvision's file names checked);
    when the file cannot be fetched the error says where to put it by hand.
    """
    import torch

    from posecli.checkpoints import cached_path, download_checkpoint

    url, _ = detector_weights_url(name)
    file_name = Path(url).name
    torch_cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if torch_cached.is_file():
        return torch_cached
    try:
        return download_checkpoint(url, cache_dir, progress=progress)
    except PoseCliError as exc:
        target = cached_path(url, cache_dir)
        message = exc.message.split("; offline?", 1)[0]  # the checkpoint hint speaks of a URL the user never gave
        raise PoseCliError(
            f"{message}. Offline? Download {url} on a machine with network access and copy it to {target} "
            f"(or {torch_cached}), or pass --detector-weights FILE",
            exc.path,
        ) from None


class PersonDetector:
    """A torchvision detector returning person boxes (x, y, w, h) with scores for BGR images."""

    def __init__(
        self,
        name: str,
        weights: Path | None,
        device: Any,
        score_thr: float,
        cache_dir: Path | None = None,
        progress: DownloadProgress | None = None,
    ):
        """Build ``name`` and load its weights (a local state_dict file, or torchvision's COCO weights)."""
        import torch
        import torchvision

        from posecli.checkpoints import load_weights_only

        names = detector_names()
        if name not in names:
            raise PoseCliError(f"unknown detector '{name}'; torchvision has: {', '.join(names)}")
        person = 1
        if weights is None:
            weights = detector_weights_file(name, cache_dir, progress)
            _, person = detector_weights_url(name)
        elif not Path(weights).is_file():
            raise PoseCliError("detector weights not found", weights)
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None)
        state = load_weights_only(weights)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise PoseCliError(f"not a state_dict of tensors for detector '{name}'", weights)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise PoseCliError(f"these weights do not fit detector '{name}': {first}", weights) from None
        self.model = model.to(device).eval()
        self.device = device
        self.person_label = person
        self.score_thr = float(score_thr)
        self.name = name

    def __call__(self, images_bgr: Sequence[np.ndarray]) -> list[list[Box]]:
        """Person boxes of each image (one forward pass for the list), best first."""
        import torch

        batch = [
            torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))).to(self.device).float() / 255.0
            for img in images_bgr
        ]  # RGB (3, H, W) in [0, 1], as torchvision's detectors take them
        with torch.inference_mode():
            outputs = self.model(batch)
        result: list[list[Box]] = []
        for out in outputs:
            boxes = out["boxes"].double().cpu().numpy()  # (N, 4) x1, y1, x2, y2
            labels = out["labels"].cpu().numpy()
            scores = out["scores"].double().cpu().numpy()
            keep = (labels == self.person_label) & (scores >= self.score_thr)
            people = []
            for (x1, y1, x2, y2), s in zip(boxes[keep], scores[keep], strict=True):
                if x2 > x1 and y2 > y1:
                    people.append(Box(bbox=(float(x1), float(y1), float(x2 - x1), float(y2 - y1)), score=float(s)))
            result.append(people)
        return result
