"""Settings for fine-tuning without a preset: the architecture from the checkpoint, the keypoint set from
``--dataset`` / ``--keypoints`` / the annotation file, and the shipped preset that matches them.

Nothing here prints: callers get a :class:`Resolution` (settings, preset name, one line per decision).
"""

from __future__ import annotations

import copy
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from posecli.errors import PoseCliError

if TYPE_CHECKING:
    from posecli.checkpoints import DownloadProgress

Mode = Literal["load_from", "pretrained"]

# model-zoo names: MMPose 0.x "hrnet_w48_coco_384x288_dark-741844ba_20200812.pth" (height x width), MMPose 1.x
# "td-hm_hrnet-w48_dark-8xb32-210e_coco-384x288-39c3c381_20220916.pth", official "pose_hrnet_w32_256x192.pth"
_NAME_SIZE_RE = re.compile(r"(?<![0-9a-z])(\d{2,4})x(\d{2,4})(?![0-9])", re.IGNORECASE)
_NAME_DARK_RE = re.compile(r"(?:^|[_\-.])dark(?:[_\-.]|$)", re.IGNORECASE)
# an MMPose config text stored in a checkpoint's meta
_CONFIG_DARK_RE = re.compile(r"unbiased_encoding\s*=\s*True|post_process\s*=\s*['\"]unbiased['\"]")
_SYNTHETIC_SETS = ("coco", "body_foot")  # keypoint sets the synthetic generator draws
# data paths of the run a posecli checkpoint was trained in: not the paths of the new run
_RUN_DATA_KEYS = ("train_ann", "train_img_dir", "val_ann", "val_img_dir", "bbox_file")


@dataclass
class Resolution:
    """Resolved settings, the shipped preset they are based on (None: the checkpoint's own), and why."""

    settings: Any  # posecli.settings.Settings, validated
    preset: str | None
    reasons: list[str] = field(default_factory=list)
    checkpoint: Path | None = None  # the local file the source resolved to (download cache for URLs)

    @property
    def label(self) -> str:
        """What the settings are based on, for one line of output."""
        if self.preset is not None:
            return self.preset
        return f"the settings recorded in {self.checkpoint.name}" if self.checkpoint else "(none)"


@dataclass(frozen=True)
class NameHints:
    """What a checkpoint's file name says: input (width, height) and DARK."""

    image_wh: tuple[int, int] | None
    dark: bool


# ------------------------------------------------------------------------------------------- keypoint sets
def builtin_datasets_by_count() -> dict[int, str]:
    """Built-in keypoint sets by keypoint count: {17: 'coco', 133: 'coco_wholebody', 23: 'body_foot', 21: ...}."""
    from posecli.datasets.meta import BUILTIN, load_builtin

    return {load_builtin(name).num_keypoints: name for name in BUILTIN}


def dataset_keypoint_count(dataset: str) -> int:
    """Keypoints of a built-in set or a meta file; a PoseCliError when it is neither."""
    from posecli.datasets.meta import BUILTIN, load_builtin, load_meta_file

    if dataset in BUILTIN:
        return load_builtin(dataset).num_keypoints
    if not Path(dataset).expanduser().is_file():
        raise PoseCliError(
            f"--dataset '{dataset}' is neither a built-in dataset ({', '.join(BUILTIN)}) nor a meta file", dataset
        )
    return load_meta_file(Path(dataset).expanduser()).num_keypoints


def _way_out(keypoints: int) -> str:
    """The flag that gives a head of ``keypoints`` outputs a keypoint set."""
    builtin = builtin_datasets_by_count().get(keypoints)
    if builtin is not None:
        return f"add --dataset {builtin} ({keypoints} keypoints)"
    return f"add --dataset META_FILE describing the {keypoints} keypoints (format: `posecli presets show demo --json`)"


def keypoint_dataset_overrides(
    preset_path: str | Path, preset_dataset: str | None, keypoints: int | None, dataset: str | None
) -> dict[str, Any]:
    """Overrides ``{dataset, model.head.out_channels}`` for --keypoints / --dataset given with a preset.

    A keypoint count that contradicts the dataset is a PoseCliError naming the flag that solves it.
    """
    if dataset is not None:
        count = _dataset_count(dataset, keypoints)
        return {"dataset": dataset, "model.head.out_channels": count}
    if keypoints is None:
        return {}
    if preset_dataset is not None:
        count = dataset_keypoint_count(preset_dataset)
        if count != keypoints:
            raise PoseCliError(
                f"the preset is for dataset '{preset_dataset}' ({count} keypoints) but --keypoints {keypoints}: "
                f"{_way_out(keypoints)}, or drop --keypoints",
                preset_path,
            )
    return {"model.head.out_channels": keypoints}


def _dataset_count(dataset: str, keypoints: int | None) -> int:
    """The keypoint count of ``--dataset``; a ``--keypoints`` that contradicts it is a PoseCliError."""
    count = dataset_keypoint_count(dataset)
    if keypoints is not None and keypoints != count:
        raise PoseCliError(
            f"--keypoints {keypoints} but --dataset {dataset} has {count} keypoints: drop --keypoints, or "
            f"{_way_out(keypoints)} instead"
        )
    return count


def choose_dataset(
    keypoints: int | None, dataset: str | None, train_ann: str | Path | None, recorded: str | None = None
) -> tuple[str | None, int, str]:
    """(dataset, keypoint count, why) from --dataset, else --keypoints, else the training annotations' categories.

    ``recorded`` is the dataset a posecli checkpoint was trained on, the last resort.
    """
    if dataset is not None:
        count = _dataset_count(dataset, keypoints)
        return dataset, count, f"dataset {dataset} ({count} keypoints) from --dataset"
    if keypoints is not None:
        builtin = builtin_datasets_by_count().get(keypoints)
        if builtin is not None:
            return builtin, keypoints, f"dataset {builtin} from --keypoints {keypoints}"
    if train_ann is not None:
        from posecli.datasets.meta import resolve_meta

        meta = resolve_meta(None, train_ann)
        if keypoints is not None and keypoints != meta.num_keypoints:
            raise PoseCliError(
                f"--keypoints {keypoints} but the categories of the training annotations name "
                f"{meta.num_keypoints} keypoints: drop --keypoints, or {_way_out(keypoints)}",
                train_ann,
            )
        return (
            None,
            meta.num_keypoints,
            f"keypoint set ({meta.num_keypoints} keypoints) from the categories of {train_ann}",
        )
    if keypoints is not None:
        known = ", ".join(f"{name} {count}" for count, name in sorted(builtin_datasets_by_count().items()))
        raise PoseCliError(
            f"--keypoints {keypoints} matches no built-in dataset ({known}): {_way_out(keypoints)}, or give "
            "--train-ann whose categories name them"
        )
    if recorded is not None:
        return recorded, dataset_keypoint_count(recorded), f"dataset {recorded} as recorded in the checkpoint"
    raise PoseCliError(
        "which keypoints? pass --keypoints N (17 coco, 133 coco_wholebody, 23 body_foot, 21 onehand10k), "
        "--dataset NAME|META_FILE, or --train-ann FILE (its categories name the keypoints)"
    )


# ------------------------------------------------------------------------------------------- the checkpoint
def source_file_name(source: str) -> str:
    """The file name of a checkpoint source (path, file://, http(s):// or builtin:// URL)."""
    if "://" in source:
        return Path(urllib.parse.unquote(urllib.parse.urlparse(source).path)).name or source.split("://", 1)[1]
    return Path(source).name


def name_hints(file_name: str) -> NameHints:
    """Input size (``384x288`` = height x width, as MMPose names its files) and DARK (``_dark``) from a file name."""
    stem = file_name.rsplit(".", 1)[0]
    m = _NAME_SIZE_RE.search(stem)
    size = (int(m.group(2)), int(m.group(1))) if m else None
    return NameHints(image_wh=size, dark=bool(_NAME_DARK_RE.search(stem)))


def _model_shapes(model_settings: Any) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the model a spec builds, except the head's last conv (built on the meta device: free)."""
    import torch

    from posecli.checkpoints.formats import _final_weight_key
    from posecli.models.topdown import build_model

    with torch.device("meta"):
        state = build_model(model_settings).state_dict()
    final = _final_weight_key(state)
    skip = final[: -len("weight")] if final else None
    return {k: tuple(v.shape) for k, v in state.items() if skip is None or not k.startswith(skip)}


def _architecture_key(settings: Any) -> str:
    """The model spec without the keypoint count: presets that differ only in out_channels share it."""
    import json

    model = settings.model.model_dump(mode="json")
    model["head"].pop("out_channels")
    model["head"].pop("loss_keypoint", None)
    return json.dumps(model, sort_keys=True)


def shipped_architectures() -> dict[str, list[str]]:
    """Shipped presets grouped by architecture (model spec apart from the keypoint count)."""
    from posecli.settings import list_presets, load_settings

    groups: dict[str, list[str]] = {}
    for name in list_presets():
        groups.setdefault(_architecture_key(load_settings(name)), []).append(name)
    return groups


def matching_presets(state: dict[str, Any], mode: Mode = "load_from") -> list[str]:
    """Shipped presets whose model has every tensor of the checkpoint's backbone (and head) in the same shape.

    The checkpoint's head is compared only when it has one and ``mode`` is load_from. A checkpoint may hold more
    tensors than the model (an ImageNet HRNet file's classifier and all-branch fusion), never fewer or other shapes.
    """
    from posecli.checkpoints.formats import _final_weight_key
    from posecli.settings import load_settings

    have_head = mode == "load_from" and _final_weight_key(state) is not None
    found: list[str] = []
    for names in shipped_architectures().values():
        shapes = _model_shapes(load_settings(names[0]).model)
        needed = {k: s for k, s in shapes.items() if have_head or k.startswith("backbone.")}
        if all(k in state and tuple(state[k].shape) == s for k, s in needed.items()):
            found.extend(names)
    return found


# -------------------------------------------------------------------------------------------- resolution
def resolve_settings(
    source: str | None = None,
    *,
    mode: Mode = "load_from",
    keypoints: int | None = None,
    dataset: str | None = None,
    train_ann: str | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    progress: DownloadProgress | None = None,
) -> Resolution:
    """Settings for fine-tuning ``source`` (--load-from / --pretrained) with or without a preset; flags win."""
    from posecli.settings import load_preset_dict, validate_settings, with_meta_path

    overrides = dict(overrides or {})
    if source is not None:  # the source given replaces the preset's, never adds to it
        overrides.update({"train.load_from": None, "train.pretrained": None, f"train.{mode}": source})
    if train_ann is not None:
        overrides["data.train_ann"] = train_ann
    if preset is not None:
        data, path = load_preset_dict(preset)
        data = with_meta_path(data, path)
        shipped = _shipped_name(preset, path)
        label = f"preset '{shipped}'" if shipped else f"preset {path}"
        overrides.update(keypoint_dataset_overrides(path, data.get("dataset"), keypoints, dataset))
        reasons = [f"settings from {label}"]
        settings = _apply(copy.deepcopy(data), overrides, str(path), validate_settings, reasons)
        return Resolution(settings, shipped, reasons)
    if source is None:
        raise PoseCliError(
            "no --preset: give --load-from CKPT (or --pretrained CKPT) to take the architecture from, or a --preset "
            "(`posecli presets list` shows them)"
        )

    from posecli.checkpoints import read_checkpoint, resolve_source

    path = resolve_source(source, cache_dir, progress=progress)
    checkpoint = read_checkpoint(path)
    recorded = checkpoint.settings() if checkpoint.format == "posecli" else None
    if recorded is not None:
        data, base, reasons = _from_recorded(recorded, path, keypoints, dataset, train_ann)
    else:
        data, base, reasons = _from_weights(checkpoint, path, source, mode, keypoints, dataset, train_ann)
    where = f"{path} (resolved from {base or 'its recorded settings'})"
    settings = _apply(data, overrides, where, validate_settings, reasons)
    reasons.append(f"train.{mode}: {source}")
    return Resolution(settings, base, reasons, path)


def _shipped_name(preset: str, path: Path) -> str | None:
    from posecli.settings import preset_dir

    return path.stem if path.parent == preset_dir() and path.stem == preset else None


def _apply(data: dict[str, Any], overrides: dict[str, Any], source: str, validate: Any, reasons: list[str]) -> Any:
    """Set the flags' values, fit the synthetic data to the keypoint set, validate."""
    from posecli.settings import set_dotted

    for key, value in overrides.items():
        set_dotted(data, key, value)
    _fit_synthetic(data, reasons)
    return validate(data, source)


def _from_recorded(
    recorded: Any, path: Path, keypoints: int | None, dataset: str | None, train_ann: str | None
) -> tuple[dict[str, Any], str | None, list[str]]:
    """A posecli checkpoint: its recorded settings, with the new run's keypoint set and without its data paths."""
    data = recorded.model_dump(mode="json")
    arch = _architecture_key(recorded)
    same = next((names for key, names in shipped_architectures().items() if key == arch), None)
    shape = f" (the architecture of shipped preset {', '.join(same)})" if same else ""
    reasons = [f"architecture, input size and schedule recorded in the posecli checkpoint {path.name}{shape}"]
    name, count, why = choose_dataset(keypoints, dataset, train_ann, recorded=recorded.dataset)
    reasons.append(why)
    data["dataset"] = name
    data["model"]["head"]["out_channels"] = count
    for key in _RUN_DATA_KEYS:
        data["data"][key] = None
    data["train"]["keypoint_map"] = None  # mapped that run's head; --keypoint-map gives one for this run
    return data, None, reasons


def _from_weights(
    checkpoint: Any,
    path: Path,
    source: str,
    mode: Mode,
    keypoints: int | None,
    dataset: str | None,
    train_ann: str | None,
) -> tuple[dict[str, Any], str, list[str]]:
    """MMPose 0.x / 1.x / official HRNet weights: the shipped architecture they fit, the closest preset of it."""
    from posecli.checkpoints import FORMAT_TITLES, backbone_name, backbone_widths
    from posecli.settings import load_preset_dict, load_settings

    state = checkpoint.state_dict
    widths = backbone_widths(state)
    arch = backbone_name(state)
    title = FORMAT_TITLES[checkpoint.format]
    candidates = matching_presets(state, mode)
    if not candidates:
        groups = [load_settings(names[0]) for names in shipped_architectures().values()]
        known = ", ".join(sorted({_describe(s) for s in groups}))
        what = f"{arch} {widths}" if widths else "no HRNet backbone"
        same_widths = any(s.model.backbone.extra.stage4.num_channels == widths for s in groups)
        if same_widths:  # same branch widths, other stage depths (modules, blocks): say why they differ
            what += ", with other numbers of modules or blocks per stage"
        raise PoseCliError(
            f"the checkpoint's architecture ({title}, {what}) matches no shipped preset ({known}): pass --preset "
            "PRESET.yaml describing it (`posecli presets import CONFIG.py` reads its MMPose config)",
            path,
        )
    described = _describe(load_settings(candidates[0]))
    reasons = [f"architecture {described} from the weights of {path.name} ({title})"]

    hints = name_hints(source_file_name(source))
    size = checkpoint.image_size()
    size_from = "the checkpoint's meta" if size else None
    if size is None and hints.image_wh is not None:
        size, size_from = list(hints.image_wh), f"the file name ({hints.image_wh[1]}x{hints.image_wh[0]} = h x w)"
    config = (checkpoint.meta or {}).get("config")
    dark = hints.dark or (isinstance(config, str) and bool(_CONFIG_DARK_RE.search(config)))

    name, count, why = choose_dataset(keypoints, dataset, train_ann)
    reasons.append(why)

    def score(preset: str) -> tuple[bool, bool]:
        s = load_settings(preset)
        return (s.dataset == name, size is None or list(s.data.image_size) == list(size))

    base = max(candidates, key=score)  # max keeps the first of equals: presets are in name order
    data, _ = load_preset_dict(base)
    data = copy.deepcopy(data)
    preset_settings = load_settings(base)
    changed: list[str] = []
    if preset_settings.dataset != name:
        changed.append(f"dataset {name or '(from the annotations)'}")
    data["dataset"] = name
    data["model"]["head"]["out_channels"] = count
    if size is not None and list(preset_settings.data.image_size) != list(size):
        changed.append(_substitute_size(data, preset_settings, size))
    if dark and not (preset_settings.data.unbiased_encoding and preset_settings.test.post_process == "unbiased"):
        data["data"]["unbiased_encoding"] = True
        data.setdefault("test", {})["post_process"] = "unbiased"
        changed.append("DARK (unbiased encoding and post-processing)")
    if size_from:
        reasons.append(f"input {size[0]}x{size[1]} (w x h) from {size_from}")
    else:
        wh = preset_settings.data.image_size
        reasons.append(f"input {wh[0]}x{wh[1]} (w x h): the preset's (neither the file name nor the meta says)")
    if hints.dark:
        reasons.append("DARK from the file name's 'dark'")
    elif dark:
        reasons.append("DARK from the MMPose config in the checkpoint's meta")
    if changed:
        reasons.append(f"no shipped preset matches exactly: closest {base}, with {'; '.join(changed)} substituted")
    else:
        reasons.append(f"shipped preset {base} matches the architecture, dataset and input size")
    return data, base, reasons


def _describe(settings: Any) -> str:
    """``HRNet-W48``, ``HRNetV2-W18``, ``HRNet-W16 (demo size)``."""
    extra = settings.model.backbone.extra
    width = extra.stage4.num_channels[0]
    name = f"{'HRNetV2' if extra.stage4_multiscale else 'HRNet'}-W{width}"
    return name + (" (demo size)" if extra.stage2.num_blocks[0] == 1 else "")


def _substitute_size(data: dict[str, Any], preset: Any, image_wh: list[int]) -> str:
    """Set image_size and the sizes that follow it (heatmap, sigma, DARK kernel) in proportion; describe it."""
    head = preset.model.head
    stride = 4 * 2 ** head.in_index_list[0] // 2**head.num_deconv_layers  # image pixels per heatmap pixel
    heatmap = [image_wh[0] // stride, image_wh[1] // stride]
    ratio = heatmap[1] / preset.data.heatmap_size[1]
    sigma = round(preset.data.sigma * ratio, 2)  # MMPose: sigma 2 at 64 heatmap rows, 3 at 96
    kernel = 2 * round((preset.test.modulate_kernel * ratio - 1) / 2) + 1  # nearest odd: 11 at sigma 2, 17 at 3
    data["data"]["image_size"] = list(image_wh)
    data["data"]["heatmap_size"] = heatmap
    data["data"]["sigma"] = sigma
    data.setdefault("test", {})["modulate_kernel"] = kernel
    sizes = f"heatmap {heatmap[0]}x{heatmap[1]}, sigma {sigma:g}, modulate_kernel {kernel}"
    return f"input {image_wh[0]}x{image_wh[1]} ({sizes})"


def _fit_synthetic(data: dict[str, Any], reasons: list[str]) -> None:
    """Keep a preset's synthetic data only for a keypoint set the generator draws, switched to that set."""
    synthetic = (data.get("data") or {}).get("synthetic")
    if not synthetic:
        return
    name = data.get("dataset")
    if name in _SYNTHETIC_SETS:
        if synthetic.get("keypoints") != name:
            synthetic["keypoints"] = name
            reasons.append(f"synthetic training data drawn with the {name} keypoints (when no --train-ann is given)")
        return
    data["data"]["synthetic"] = None
    reasons.append(f"synthetic data dropped: it draws only {' or '.join(_SYNTHETIC_SETS)} keypoints")
