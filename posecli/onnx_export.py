"""ONNX: export a pose model with its settings inside the file, check it with ONNX Runtime, and run it.

The file: input ``images`` (B, 3, H, W) float32, RGB, ImageNet-normalised; output ``heatmaps`` (B, K, h, w);
B is dynamic. The metadata property ``posecli`` holds a JSON object (keypoint names, flip pairs, input and heatmap
size, normalisation, test settings, dataset meta), so `posecli predict --checkpoint MODEL.onnx` needs no preset.
``OnnxModel`` has the torch model's interface (``__call__``, ``forward_flip_test``) so inference code is shared.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posecli import __version__
from posecli.codec import flip_back
from posecli.datasets.meta import DatasetMeta
from posecli.errors import PoseCliError
from posecli.transforms import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB

META_KEY = "posecli"
META_VERSION = 1
INPUT_NAME = "images"
OUTPUT_NAME = "heatmaps"
DEFAULT_OPSET = 17
CHECK_TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| over the heatmaps the export accepts
INSTALL_HINT = "pip install posecli[export]"


def require_onnx(purpose: str) -> tuple[Any, Any]:
    """The onnx and onnxruntime modules, or a PoseCliError naming the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "onnx/onnxruntime"
        raise PoseCliError(
            f"{purpose} needs the onnx and onnxruntime packages ({missing} is not installed): {INSTALL_HINT}"
        ) from None
    return onnx, onnxruntime


def onnx_metadata(
    meta: DatasetMeta,
    input_wh: Sequence[int],
    heatmap_wh: Sequence[int],
    test: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object stored in the ONNX file: what `predict` needs to use the model without a preset."""
    return {
        "format_version": META_VERSION,
        "posecli_version": __version__,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_size": [int(input_wh[0]), int(input_wh[1])],  # width, height (MMPose order)
        "heatmap_size": [int(heatmap_wh[0]), int(heatmap_wh[1])],
        "normalisation": {
            "channel_order": "RGB",
            "scale": 255.0,  # x / 255, then (x - mean) / std per channel
            "mean": [float(v) for v in IMAGENET_MEAN_RGB],
            "std": [float(v) for v in IMAGENET_STD_RGB],
        },
        "keypoint_names": list(meta.keypoint_names),
        "flip_pairs": [list(p) for p in meta.flip_pairs],
        "test": dict(test),
        "dataset_meta": meta.to_dict(),
        **(extra or {}),
    }


# ------------------------------------------------------------------------------------------------ export
@dataclass
class ExportResult:
    """What the export wrote and how it checked."""

    path: Path
    bytes: int
    opset: int
    max_abs_diff: float
    checked_batches: tuple[int, ...]
    providers: list[str]


def export_to_bytes(model: torch.nn.Module, input_wh: Sequence[int], opset: int) -> bytes:
    """The model as ONNX bytes (TorchScript exporter), dynamic batch, named input/output."""
    model = model.eval().cpu()
    w, h = int(input_wh[0]), int(input_wh[1])
    sample = torch.zeros(2, 3, h, w)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        try:
            torch.onnx.export(
                model,
                (sample,),
                buf,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:  # unsupported opset, operator without a symbolic, ...
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise PoseCliError(f"ONNX export failed (opset {opset}): {first}") from None
    return buf.getvalue()


def add_metadata(onnx_bytes: bytes, metadata: dict[str, Any]) -> bytes:
    """The ONNX model with ``metadata`` stored as the JSON metadata property ``posecli`` (checked by onnx)."""
    onnx, _ = require_onnx("ONNX export")
    proto = onnx.load_from_string(onnx_bytes)
    del proto.metadata_props[:]
    prop = proto.metadata_props.add()
    prop.key, prop.value = META_KEY, json.dumps(metadata)
    proto.producer_name, proto.producer_version = "posecli", __version__
    proto.doc_string = "posecli top-down heatmap pose model: images (B,3,H,W) normalised RGB -> heatmaps (B,K,h,w)"
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise PoseCliError(f"the exported ONNX model does not pass onnx.checker: {str(exc).splitlines()[0]}") from None
    return proto.SerializeToString()


def check_against_torch(
    onnx_bytes: bytes, model: torch.nn.Module, input_wh: Sequence[int], batches: Sequence[int] = (1, 3), seed: int = 0
) -> float:
    """Max |ONNX Runtime - PyTorch| of the heatmaps on seeded normal inputs of each batch size (CPU, float32)."""
    _, ort = require_onnx("ONNX export")
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    w, h = int(input_wh[0]), int(input_wh[1])
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    model = model.eval().cpu()
    with torch.inference_mode():
        for b in batches:
            x = torch.randn(b, 3, h, w, generator=gen)
            ref = model(x).numpy()
            got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
            if got.shape != ref.shape:
                raise PoseCliError(f"ONNX Runtime gives heatmaps of shape {got.shape}, PyTorch {ref.shape}")
            diff = float(np.max(np.abs(got.astype(np.float64) - ref))) if ref.size else 0.0
            worst = max(worst, diff if np.isfinite(diff) else float("inf"))
    return worst


# ------------------------------------------------------------------------------------------------ running
def _providers(ort: Any, device: torch.device) -> list[str]:
    available = ort.get_available_providers()
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxModel:
    """An exported posecli model run by ONNX Runtime, with the torch model's interface.

    ``model(images)`` maps (B, 3, H, W) float32 tensors to heatmaps (B, K, h, w) on the images' device;
    ``forward_flip_test`` runs the images and their mirrors in one call of 2B, as TopDown does.
    """

    def __init__(self, path: Path, device: torch.device | str = "cpu") -> None:
        """Open ``path`` and check its graph against its posecli metadata."""
        onnx, ort = require_onnx("running an ONNX model")
        self.path = Path(path)
        if not self.path.is_file():
            raise PoseCliError("ONNX model not found" if not self.path.exists() else "not a file", self.path)
        try:
            proto = onnx.load(str(self.path), load_external_data=False)
        except Exception:
            raise PoseCliError("not an ONNX model (cannot be parsed)", self.path) from None
        props = {p.key: p.value for p in proto.metadata_props}
        if META_KEY not in props:
            raise PoseCliError(
                "this ONNX file has no posecli metadata (make it with `posecli export`): keypoints, input size and "
                "normalisation are unknown",
                self.path,
            )
        try:
            info = json.loads(props[META_KEY])
            self.input_wh = (int(info["input_size"][0]), int(info["input_size"][1]))
            self.heatmap_wh = (int(info["heatmap_size"][0]), int(info["heatmap_size"][1]))
            self.meta = DatasetMeta.from_dict(info["dataset_meta"], source=str(self.path))
            self.test_defaults: dict[str, Any] = dict(info.get("test") or {})
        except PoseCliError:
            raise
        except (ValueError, KeyError, TypeError, IndexError):
            raise PoseCliError("malformed posecli metadata in the ONNX file", self.path) from None
        self.info = info
        self._check_graph(proto)
        self.device = torch.device(device)
        self.providers = _providers(ort, self.device)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the CPU threads PyTorch uses (OMP_NUM_THREADS)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as exc:
            raise PoseCliError(
                f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0][:200]}", self.path
            ) from None
        self.providers = list(self.session.get_providers())
        self.training = False

    def _check_graph(self, proto: Any) -> None:
        """The graph's input/output names and static sizes must agree with the metadata."""
        inputs = {i.name: i for i in proto.graph.input}
        outputs = {o.name: o for o in proto.graph.output}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise PoseCliError(f"expected an input '{INPUT_NAME}' and an output '{OUTPUT_NAME}'", self.path)

        def dims(value: Any) -> list[int | None]:
            return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]

        w, h = self.input_wh
        got = dims(inputs[INPUT_NAME])
        if len(got) != 4 or got[1:] != [3, h, w]:
            shown = "x".join("?" if d is None else str(d) for d in got)
            raise PoseCliError(
                f"the model's input is {shown} but its metadata says Bx3x{h}x{w} (height x width); the file was "
                "changed after `posecli export` or was not made by it",
                self.path,
            )
        k = self.meta.num_keypoints
        hw, hh = self.heatmap_wh
        out = dims(outputs[OUTPUT_NAME])  # the exporter may leave the sizes symbolic: check the known ones
        if len(out) != 4 or any(d is not None and d != want for d, want in zip(out[1:], (k, hh, hw), strict=True)):
            shown = "x".join("?" if d is None else str(d) for d in out)
            raise PoseCliError(
                f"the model's output is {shown} but its metadata says Bx{k}x{hh}x{hw} ({k} keypoints)", self.path
            )

    @property
    def num_keypoints(self) -> int:
        """K, the number of heatmaps."""
        return self.meta.num_keypoints

    def eval(self) -> OnnxModel:
        """No-op (an ONNX model is always in inference mode); returns self like nn.Module.eval."""
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised RGB -> heatmaps (B, K, h, w) float32 on the images' device."""
        x = np.ascontiguousarray(images.detach().float().cpu().numpy())
        heatmaps = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        return torch.from_numpy(heatmaps).to(images.device)

    def forward_flip_test(
        self, images: torch.Tensor, flip_index: Sequence[int], shift_heatmap: bool = True
    ) -> torch.Tensor:
        """Average of the heatmaps of the images and (flipped back) of their mirrors; one run of batch 2B."""
        batch = images.shape[0]
        heatmaps = self(torch.cat([images, images.flip(3)]))  # (2B, K, h, w)
        flipped = flip_back(heatmaps[batch:], flip_index, shift_heatmap)
        return (heatmaps[:batch] + flipped) * 0.5
