"""`posecli export`: a checkpoint to an ONNX file that carries its settings, checked against PyTorch first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.text import Text

from posecli.atomic import atomic_write_with, check_writable_dir
from posecli.errors import PoseCliError
from posecli.options import ExportOptions
from posecli.report import download_bar


def run(opts: ExportOptions) -> dict[str, Any]:
    """Export the checkpoint to ONNX at ``opts.out``; written only if ONNX Runtime reproduces PyTorch's heatmaps.

    Returns a summary: path, bytes, opset, max_abs_diff, input_size, keypoints.
    """
    from posecli import onnx_export
    from posecli.checkpoints import sha256_of
    from posecli.engine.predict import load_pytorch_model

    onnx_export.require_onnx("`posecli export --format onnx`")  # before any work
    assert opts.out is not None
    out, opset = Path(opts.out), opts.opset
    if out.is_dir():
        raise PoseCliError("--out is a folder; give a file name such as model.onnx", out)
    check_writable_dir(out.parent if str(out.parent) else Path("."), "--out's folder")

    console = Console()
    loaded = load_pytorch_model(
        opts.checkpoint, opts.preset, opts.overrides, torch.device("cpu"), opts.cache_dir, progress=download_bar
    )
    assert loaded.settings is not None
    model = loaded.model
    raw = onnx_export.export_to_bytes(model, loaded.input_wh, opset)
    source = Path(loaded.source)
    info = onnx_export.onnx_metadata(
        loaded.meta,
        loaded.input_wh,
        loaded.heatmap_wh,
        loaded.test.model_dump(),
        extra={
            "trained_sigma": loaded.trained_sigma,
            "source_checkpoint": source.name,
            "source_sha256": sha256_of(source),
            "opset": opset,
        },
    )
    data = onnx_export.add_metadata(raw, info)
    batches = (1, 3)
    diff = onnx_export.check_against_torch(data, model, loaded.input_wh, batches)
    tol = onnx_export.CHECK_TOLERANCE
    if not diff <= tol:
        raise PoseCliError(
            f"refused: ONNX Runtime's heatmaps differ from PyTorch's by up to {diff:.3g} (limit {tol:g}); "
            "no file written",
            out,
        )
    atomic_write_with(out, lambda fh: fh.write(data))
    w, h = loaded.input_wh
    console.print(
        Text(
            f"checked with ONNX Runtime (batches {', '.join(map(str, batches))}): max |ONNX - PyTorch| heatmap "
            f"difference {diff:.3g} (limit {tol:g})"
        )
    )
    console.print(
        Text(
            f"wrote {out} ({len(data) / 1e6:.1f} MB, opset {opset}): input '{onnx_export.INPUT_NAME}' Bx3x{h}x{w} "
            f"float32 normalised RGB -> '{onnx_export.OUTPUT_NAME}' Bx{loaded.meta.num_keypoints}x"
            f"{loaded.heatmap_wh[1]}x{loaded.heatmap_wh[0]}; settings and {loaded.meta.name} keypoints inside"
        )
    )
    return {
        "path": str(out),
        "bytes": len(data),
        "opset": opset,
        "max_abs_diff": diff,
        "input_size": [w, h],
        "keypoints": loaded.meta.num_keypoints,
    }
