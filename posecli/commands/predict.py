"""`posecli predict`: run a pose model (.pth or exported .onnx) on images, folders, globs and videos.

Flow: check the output folder -> load the model -> expand and check every input -> read the boxes -> stream
frames in chunks (boxes, crops, batched inference, rescoring, optional OKS NMS, drawings) -> write
``predictions.json`` and move the drawings into ``vis/``. Nothing is written to the output folder before the
whole run succeeded: drawings are made in a hidden staging folder that an error removes.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from posecli.atomic import atomic_write_text, check_writable_dir
from posecli.datasets.meta import DatasetMeta
from posecli.engine.predict import (
    Crops,
    LoadedModel,
    Person,
    concat_crops,
    crop_boxes,
    infer_keypoints,
    load_onnx_model,
    load_pytorch_model,
    oks_nms_people,
    people_from_keypoints,
)
from posecli.errors import PoseCliError
from posecli.options import PredictOptions
from posecli.report import download_bar
from posecli.sources import (
    DEFAULT_DETECTOR_THR,
    Box,
    FileBoxes,
    MediaInput,
    PersonDetector,
    expand_sources,
    iter_frames,
    load_bbox_file,
    whole_image_box,
)
from posecli.vis import CENTER_BGR, LEFT_BGR, RIGHT_BGR, draw_poses, write_jpeg

PREDICTIONS_FILE = "predictions.json"
VIS_DIR = "vis"
MAX_PENDING_FRAMES = 16  # decoded frames held for drawing while their boxes fill a batch
MAX_PENDING_CROPS_ONLY = 256  # without drawings only the crops wait (e.g. 256 x 0.6 MB at 256x192)
DETECTOR_BATCH = 8  # frames per detector forward pass


# ------------------------------------------------------------------------------------------------ records
def person_record(item: MediaInput, frame: int | None, person: Person, image_id: Any) -> dict[str, Any]:
    """One predictions.json entry (DESIGN.md's field order)."""
    rec: dict[str, Any] = {"file_name": item.name}
    if frame is not None:
        rec["frame"] = frame
    if image_id is not None:
        rec["image_id"] = image_id
    rec["category_id"] = person.category_id
    rec["bbox"] = [float(v) for v in person.bbox]
    rec["bbox_score"] = float(person.bbox_score)
    rec["keypoints"] = [float(v) for v in np.asarray(person.keypoints, dtype=np.float64).reshape(-1)]
    rec["score"] = float(person.score)
    return rec


# ------------------------------------------------------------------------------------------------ drawings
def draw_frame(image_bgr: np.ndarray, people: list[Person], meta: DatasetMeta, kpt_thr: float) -> np.ndarray:
    """Skeletons (left/right colours, person scores), the boxes, and a colour legend on a copy of the frame."""
    canvas = draw_poses(image_bgr, [p.keypoints for p in people], meta, kpt_thr, scores=[p.score for p in people])
    zoom = canvas.shape[1] / image_bgr.shape[1]
    unit = max(canvas.shape[:2]) / 640.0
    for p in people:
        x, y, w, h = p.bbox
        a = (int(round((x + 0.5) * zoom - 0.5)), int(round((y + 0.5) * zoom - 0.5)))
        b = (int(round((x + w + 0.5) * zoom - 0.5)), int(round((y + h + 0.5) * zoom - 0.5)))
        cv2.rectangle(canvas, a, b, (200, 200, 200), max(1, round(unit)), cv2.LINE_AA)
    _draw_legend(canvas, unit)
    return canvas


def _draw_legend(canvas: np.ndarray, unit: float) -> None:
    """A small key in the top-left corner: which colour is the left side, the right side, the centre."""
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.45 * unit, max(1, round(unit))
    line = max(12, round(16 * unit))
    entries = (("left", LEFT_BGR), ("right", RIGHT_BGR), ("centre", CENTER_BGR), ("0.87 = person score", None))
    width = max(cv2.getTextSize(t, font, scale, thick)[0][0] for t, _ in entries) + round(26 * unit)
    height = line * len(entries) + round(6 * unit)
    x0, y0 = round(6 * unit), round(6 * unit)
    region = canvas[y0 : y0 + height, x0 : x0 + width]
    region[:] = (region * 0.4).astype(canvas.dtype)  # darken behind the text
    for i, (text, colour) in enumerate(entries):
        y = y0 + line * (i + 1)
        tx = x0 + round(6 * unit)
        if colour is not None:
            cv2.circle(canvas, (tx + round(5 * unit), y - round(4 * unit)), max(2, round(4 * unit)), colour, -1)
            tx += round(16 * unit)
        cv2.putText(canvas, text, (tx, y), font, scale, (255, 255, 255), thick, cv2.LINE_AA)


def _safe_stem(name: str) -> str:
    stem = os.path.splitext(name)[0].strip("./\\")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem) or "input"


class VisWriter:
    """Drawings into a staging folder: one JPEG per image, one video per input video (same frames and fps)."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self.files: list[Path] = []
        self._used: set[str] = set()
        self._video: cv2.VideoWriter | None = None
        self._video_item: MediaInput | None = None
        self._video_path: Path | None = None
        self.frames_written: dict[str, int] = {}

    def _name(self, item: MediaInput, ext: str) -> str:
        base = _safe_stem(item.relative_name or item.path.name)  # same names in two folders: _2, _3...
        name, n = base + ext, 1
        while name in self._used:
            n += 1
            name = f"{base}_{n}{ext}"
        self._used.add(name)
        return name

    def image(self, item: MediaInput, canvas: np.ndarray) -> None:
        """Write the drawing of an image."""
        path = self.staging / self._name(item, ".jpg")
        write_jpeg(path, canvas)
        self.files.append(path)

    def frame(self, item: MediaInput, canvas: np.ndarray) -> None:
        """Append a drawn frame to the input video's output video (opened on its first frame)."""
        if self._video_item is not item:
            self.close_video()
            self._open_video(item, canvas.shape[1], canvas.shape[0])
        assert self._video is not None and self._video_path is not None
        self._video.write(canvas)
        self.frames_written[self._video_path.name] = self.frames_written.get(self._video_path.name, 0) + 1

    def _open_video(self, item: MediaInput, width: int, height: int) -> None:
        fps = float(item.fps or 25.0)
        for ext, codec in ((".mp4", "mp4v"), (".avi", "MJPG")):
            path = self.staging / self._name(item, ext)
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
            if writer.isOpened():
                self._video, self._video_item, self._video_path = writer, item, path
                self.files.append(path)
                return
            writer.release()
            path.unlink(missing_ok=True)
        raise PoseCliError("cannot open a video writer for the drawings (no mp4v or MJPG encoder in OpenCV)", item.path)

    def close_video(self) -> None:
        """Finish the video being written, if any."""
        if self._video is not None:
            self._video.release()
        self._video, self._video_item, self._video_path = None, None, None


@contextmanager
def _staging_dir(output_dir: Path, enabled: bool) -> Iterator[Path | None]:
    """A hidden folder inside the output folder for drawings; removed whatever happens."""
    if not enabled:
        yield None
        return
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=".vis-staging.", dir=output_dir))
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        if created and not any(output_dir.iterdir()):
            output_dir.rmdir()  # a failed run leaves no trace, not even the folder it made
        raise
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ progress
class _RateColumn(ProgressColumn):
    """Frames per second of the task (images/s for still images)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed:.1f} {self.unit}", style="cyan")


@contextmanager
def _progress(total: int | None, label: str, unit: str) -> Iterator[Callable[[int], None]]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(unit))
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class _Pending:
    """A frame whose crops wait for a full batch (the decoded frame is kept only for drawing)."""

    index: int
    item: MediaInput
    frame: int | None
    image_bgr: np.ndarray | None
    boxes: list[Box]
    crops: Crops


@dataclass
class PredictRun:
    """What a run produced."""

    records: list[dict[str, Any]]
    images: int
    frames: int
    people: int
    seconds: float
    vis_files: list[Path]


class _Runner:
    """Streams frames: boxes -> crops -> batched inference once a batch of boxes is waiting -> records, drawings."""

    def __init__(
        self,
        loaded: LoadedModel,
        boxes: FileBoxes | None,
        detector: PersonDetector | None,
        oks_nms: bool,
        vis: VisWriter | None,
        skip_bad: bool,
        warn: Callable[[str], None],
        advance: Callable[[int], None],
    ) -> None:
        self.loaded, self.file_boxes, self.detector = loaded, boxes, detector
        self.oks_nms, self.vis, self.skip_bad, self.warn, self.advance = oks_nms, vis, skip_bad, warn, advance
        self.records: list[dict[str, Any]] = []
        self.to_detect: list[tuple[int, MediaInput, int | None, np.ndarray]] = []
        self.pending: list[_Pending] = []
        self.pending_boxes = 0
        self.images = self.frames = self.people = 0
        self.max_frames = MAX_PENDING_FRAMES if vis is not None else MAX_PENDING_CROPS_ONLY

    def run(self, inputs: list[MediaInput]) -> None:
        """Every frame of every input, in order."""
        for index, item in enumerate(inputs):
            try:
                for frame, image in iter_frames(item):
                    self._add(index, item, frame, image)
            except PoseCliError as exc:
                if not self.skip_bad:
                    raise
                self.warn(f"{exc}; skipped (--skip-bad)")
        self._detect()
        self._flush()

    def _add(self, index: int, item: MediaInput, frame: int | None, image: np.ndarray) -> None:
        if self.detector is not None:
            self.to_detect.append((index, item, frame, image))
            if len(self.to_detect) >= DETECTOR_BATCH:
                self._detect()
            return
        if self.file_boxes is not None:
            boxes = self.file_boxes.for_frame((index, frame))
        else:
            boxes = [whole_image_box((image.shape[1], image.shape[0]))]
        self._stage(index, item, frame, image, boxes)

    def _detect(self) -> None:
        if not self.to_detect:
            return
        assert self.detector is not None
        found = self.detector([t[3] for t in self.to_detect])  # one forward pass for the chunk
        for (index, item, frame, image), boxes in zip(self.to_detect, found, strict=True):
            self._stage(index, item, frame, image, boxes)
        self.to_detect = []

    def _stage(self, index: int, item: MediaInput, frame: int | None, image: np.ndarray, boxes: list[Box]) -> None:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        bboxes = np.array([b.bbox for b in boxes], dtype=np.float64).reshape(-1, 4)
        crops = crop_boxes(rgb, bboxes, self.loaded.input_wh)
        kept = image if self.vis is not None else None
        self.pending.append(_Pending(index, item, frame, kept, boxes, crops))
        self.pending_boxes += len(boxes)
        if self.pending_boxes >= self.loaded.test.batch_size or len(self.pending) >= self.max_frames:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        loaded = self.loaded
        joined = concat_crops([p.crops for p in self.pending], loaded.input_wh)
        keypoints = infer_keypoints(loaded.model, joined, loaded.test, loaded.meta.flip_index, loaded.device)
        start = 0
        for p in self.pending:
            n = len(p.crops)
            people = people_from_keypoints(
                keypoints[start : start + n], [b.bbox for b in p.boxes], [b.score for b in p.boxes], p.crops.scale,
                loaded.test.vis_thr,
            )  # fmt: skip
            start += n
            for person, box in zip(people, p.boxes, strict=True):
                person.category_id, person.image_id = box.category_id, box.image_id
            if self.oks_nms:
                people = oks_nms_people(people, loaded.test.oks_thr, loaded.meta.sigmas)
            fallback_id = self.file_boxes.image_ids.get(p.index) if self.file_boxes is not None else None
            for person in people:
                image_id = person.image_id if person.image_id is not None else fallback_id
                self.records.append(person_record(p.item, p.frame, person, image_id))
            self.people += len(people)
            if p.frame is None:
                self.images += 1
            else:
                self.frames += 1
            if self.vis is not None and p.image_bgr is not None:
                canvas = draw_frame(p.image_bgr, people, loaded.meta, loaded.test.vis_thr)
                if p.frame is None:
                    self.vis.image(p.item, canvas)
                else:
                    self.vis.frame(p.item, canvas)
        self.advance(len(self.pending))
        self.pending = []
        self.pending_boxes = 0


# ------------------------------------------------------------------------------------------------ command
def _check_output_dir(output_dir: Path) -> None:
    check_writable_dir(output_dir, "--output-dir")
    if (output_dir / PREDICTIONS_FILE).is_dir():
        raise PoseCliError("is a folder; posecli would write a file there", output_dir / PREDICTIONS_FILE)
    vis = output_dir / VIS_DIR
    if vis.exists() and not vis.is_dir():
        raise PoseCliError("exists and is not a folder (it would hold the drawings)", vis)


def _resolve_device(device: str) -> torch.device:
    from posecli.engine.distributed import resolve_device

    return resolve_device(device)


def run(opts: PredictOptions) -> PredictRun:
    """`posecli predict`: keypoints for every box of every image / video frame into OUTPUT_DIR/predictions.json."""
    console = Console()

    def warn(text: str) -> None:
        console.print(Text(f"warning: {text}", style="yellow"))

    checkpoint, preset, dataset, overrides = opts.checkpoint, opts.preset, opts.dataset, opts.overrides
    bbox_file, ann_file, detector, det_bbox_thr = opts.bbox_file, opts.ann_file, opts.detector, opts.det_bbox_thr
    skip_bad, cache_dir, save_vis = opts.skip_bad, opts.cache_dir, opts.save_vis
    assert checkpoint is not None
    output_dir = Path(opts.output_dir)
    _check_output_dir(output_dir)

    # ---- the model
    torch_device = _resolve_device(opts.device)
    if checkpoint.lower().endswith(".onnx"):
        loaded = load_onnx_model(Path(checkpoint), overrides, torch_device)
        if torch_device.type == "cuda" and "CUDAExecutionProvider" not in loaded.model.providers:
            warn("ONNX Runtime has no CUDA provider here (pip install onnxruntime-gpu): running on the CPU")
    else:
        loaded = load_pytorch_model(
            checkpoint, preset, overrides, torch_device, cache_dir, progress=download_bar, dataset=dataset
        )
    for text in loaded.warnings:
        warn(text)

    # ---- inputs and boxes: every problem reported before any output
    inputs = expand_sources(opts.sources, skip_bad, warn)
    file_boxes = None
    if bbox_file is not None:
        thr = (
            det_bbox_thr
            if det_bbox_thr is not None
            else (loaded.settings.data.det_bbox_thr if loaded.settings else 0.0)
        )
        file_boxes = load_bbox_file(Path(bbox_file), inputs, ann_file, thr, skip_bad, warn)
    person_detector = None
    if detector is not None:
        thr = DEFAULT_DETECTOR_THR if det_bbox_thr is None else det_bbox_thr
        person_detector = PersonDetector(
            detector, opts.detector_weights, torch_device, thr, cache_dir, progress=download_bar
        )

    # ---- the run
    frames_hint = [item.num_frames_hint for item in inputs]
    total = sum(f for f in frames_hint if f is not None) if all(f is not None for f in frames_hint) else None
    unit = "frames/s" if any(i.kind == "video" for i in inputs) else "images/s"
    where = f"{torch_device}" + (f", ONNX Runtime {loaded.model.providers[0]}" if loaded.kind == "onnx" else "")
    start = time.perf_counter()
    with _staging_dir(output_dir, save_vis) as staging:
        vis = VisWriter(staging) if staging is not None else None
        with _progress(total, f"predicting on {where}", unit) as advance:
            runner = _Runner(loaded, file_boxes, person_detector, opts.oks_nms, vis, skip_bad, warn, advance)
            try:
                runner.run(inputs)
            finally:
                if vis is not None:
                    vis.close_video()
        seconds = time.perf_counter() - start
        # ---- outputs, only now
        import json

        atomic_write_text(output_dir / PREDICTIONS_FILE, json.dumps(runner.records, separators=(",", ":")) + "\n")
        moved: list[Path] = []
        if vis is not None:
            (output_dir / VIS_DIR).mkdir(parents=True, exist_ok=True)
            for path in vis.files:
                target = output_dir / VIS_DIR / path.name
                os.replace(path, target)
                moved.append(target)

    done = runner.images + runner.frames
    rate = done / seconds if seconds > 0 else float("inf")
    console.print(
        Text(
            f"{runner.images} images, {runner.frames} video frames, {runner.people} people in {seconds:.1f} s "
            f"({rate:.1f} {unit}) with {loaded.kind} on {where}; flip_test={loaded.test.flip_test}, "
            f"post_process={loaded.test.post_process}"
            + (f" (kernel {loaded.test.modulate_kernel})" if loaded.test.post_process == "unbiased" else "")
        )
    )
    console.print(Text(f"wrote {output_dir / PREDICTIONS_FILE} ({len(runner.records)} records)"))
    if moved:
        console.print(Text(f"wrote {len(moved)} drawings into {output_dir / VIS_DIR}"))
    return PredictRun(runner.records, runner.images, runner.frames, runner.people, seconds, moved)
