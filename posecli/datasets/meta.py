"""Dataset metadata: keypoint names, flip pairs, OKS sigmas, joint weights, skeleton, named parts."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from posecli.datasets.coco_format import MAX_KEYPOINTS, skeleton_links, skeleton_warning
from posecli.errors import PoseCliError
from posecli.files import check_document_size, is_finite_number, load_json_file

BUILTIN = ("coco", "coco_wholebody", "body_foot", "onehand10k")
DEFAULT_SIGMA = 0.05  # OKS sigma for keypoints of a dataset that gives none (mid-range of COCO's 0.025-0.107)
MAX_META_BYTES = 16 * 1024**2  # a meta file is a few KB; refuse to parse anything absurdly large


@dataclass
class DatasetMeta:
    """Everything posecli needs to know about a keypoint set. Indices are 0-based."""

    name: str
    keypoint_names: list[str]
    flip_pairs: list[tuple[int, int]] = field(default_factory=list)
    sigmas: list[float] = field(default_factory=list)
    joint_weights: list[float] = field(default_factory=list)
    skeleton: list[tuple[int, int]] = field(default_factory=list)
    upper_body_ids: list[int] = field(default_factory=list)
    lower_body_ids: list[int] = field(default_factory=list)
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> [start, end)
    keypoint_color: list[list[int]] = field(default_factory=list)
    skeleton_color: list[list[int]] = field(default_factory=list)
    default_sigmas: bool = False  # the sigmas are DEFAULT_SIGMA because none were given (kept in checkpoints)
    notes: list[str] = field(default_factory=list)  # what was inferred or defaulted, shown to the user

    def __post_init__(self) -> None:
        k = len(self.keypoint_names)
        if k > MAX_KEYPOINTS:  # before any per-keypoint work
            raise PoseCliError(
                f"dataset meta '{self.name}': {k:,} keypoints, more than the {MAX_KEYPOINTS:,} posecli accepts"
            )
        self.flip_pairs = [tuple(int(i) for i in p) for p in self.flip_pairs]  # type: ignore[misc]
        self.skeleton = [tuple(int(i) for i in p) for p in self.skeleton]  # type: ignore[misc]
        self.parts = {str(n): (int(r[0]), int(r[1])) for n, r in self.parts.items()}
        if not self.sigmas:
            self.sigmas = [DEFAULT_SIGMA] * k
            self.default_sigmas = True
            self.notes.append(f"no OKS sigmas given: using {DEFAULT_SIGMA} for every keypoint")
        elif self.default_sigmas:  # e.g. read back from a checkpoint trained with `dataset: null`
            self.notes.append(f"the OKS sigmas are posecli's defaults ({DEFAULT_SIGMA} for every keypoint), not given")
        if not self.joint_weights:
            self.joint_weights = [1.0] * k
        if not self.parts:
            self.parts = {"body": (0, k)}
        if not self.upper_body_ids and not self.lower_body_ids:
            self.upper_body_ids, self.lower_body_ids = _split_upper_lower(self.keypoint_names)
        self.validate()

    @property
    def num_keypoints(self) -> int:
        """Number of keypoints K."""
        return len(self.keypoint_names)

    @property
    def flip_index(self) -> list[int]:
        """Permutation mapping each keypoint to its mirror (identity for unpaired keypoints)."""
        index = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            index[a], index[b] = b, a
        return index

    def validate(self) -> None:
        """Reject inconsistent metadata (lengths, duplicate names, flip pairs that are not an involution)."""
        k = self.num_keypoints
        where = f"dataset meta '{self.name}'"
        if k == 0:
            raise PoseCliError(f"{where}: no keypoint names")
        if k > MAX_KEYPOINTS:
            raise PoseCliError(f"{where}: {k:,} keypoints, more than the {MAX_KEYPOINTS:,} posecli accepts")
        if not all(isinstance(n, str) for n in self.keypoint_names):
            raise PoseCliError(f"{where}: keypoint names must be strings")
        if len(set(self.keypoint_names)) != k:
            dup = sorted({n for n in self.keypoint_names if self.keypoint_names.count(n) > 1})
            raise PoseCliError(f"{where}: duplicate keypoint names {dup}")
        for label, values in (("sigmas", self.sigmas), ("joint_weights", self.joint_weights)):
            if len(values) != k:
                raise PoseCliError(f"{where}: {label} has {len(values)} values for {k} keypoints")
            if not all(is_finite_number(v) and v >= 0 for v in values):
                raise PoseCliError(f"{where}: {label} must be finite numbers >= 0")
        if not all(v > 0 for v in self.sigmas):
            raise PoseCliError(f"{where}: OKS sigmas must be positive (a zero sigma makes OKS undefined)")
        seen: set[int] = set()
        for a, b in self.flip_pairs:
            if not (0 <= a < k and 0 <= b < k) or a == b:
                raise PoseCliError(f"{where}: flip pair ({a}, {b}) is out of range or pairs a keypoint with itself")
            if a in seen or b in seen:
                raise PoseCliError(f"{where}: keypoint {a if a in seen else b} appears in two flip pairs")
            seen.update((a, b))
        for a, b in self.skeleton:
            if not (0 <= a < k and 0 <= b < k):
                raise PoseCliError(f"{where}: skeleton link ({a}, {b}) is out of range")
        for part, (start, end) in self.parts.items():
            if not 0 <= start < end <= k:
                raise PoseCliError(f"{where}: part '{part}' range [{start}, {end}) is outside 0..{k}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the meta file format), used in checkpoints and results."""
        d = asdict(self)
        d["flip_pairs"] = [list(p) for p in self.flip_pairs]
        d["skeleton"] = [list(p) for p in self.skeleton]
        d["parts"] = {n: list(r) for n, r in self.parts.items()}
        d.pop("notes")
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "meta") -> DatasetMeta:
        """Build from the meta file format; unknown keys are an error."""
        known = set(cls.__dataclass_fields__) - {"notes"}
        if not all(isinstance(key, str) for key in data):
            raise PoseCliError("dataset meta keys must be strings", source)
        unknown = set(data) - known - {"num_keypoints", "dataset_name"}
        if unknown:
            raise PoseCliError(f"unknown keys {sorted(unknown)} in dataset meta (known: {sorted(known)})", source)
        if "keypoint_names" not in data:
            raise PoseCliError("dataset meta has no keypoint_names", source)
        for key in ("keypoint_names", "flip_pairs", "sigmas", "joint_weights", "skeleton"):
            if key in data and not isinstance(data[key], list):
                raise PoseCliError(f"dataset meta: '{key}' must be a list", source)
        fields = {k: v for k, v in data.items() if k in known}
        fields.setdefault("name", data.get("dataset_name", Path(source).stem))
        try:
            return cls(**fields)
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            raise PoseCliError(f"malformed dataset meta ({exc})", source) from None
        except PoseCliError as exc:
            if exc.path is None:  # name the file the inconsistent metadata came from
                raise PoseCliError(exc.message, source) from None
            raise


def _split_upper_lower(names: list[str]) -> tuple[list[int], list[int]]:
    lower_words = ("hip", "knee", "ankle", "foot", "toe", "heel", "leg", "paw_b", "hind")
    lower = [i for i, n in enumerate(names) if any(w in n.lower() for w in lower_words)]
    upper = [i for i in range(len(names)) if i not in lower]
    return upper, lower


_SIDE_SWAP = {"left": "right", "right": "left", "l": "r", "r": "l"}


def _swap_side(token: str) -> str:
    other = _SIDE_SWAP[token.lower()]
    if token.isupper():
        return other.upper()
    return other.capitalize() if token[:1].isupper() else other


def _mirror_name(name: str) -> str | None:
    """The other side's name (left_eye -> right_eye, L_knee -> R_knee, paw_left -> paw_right), or None."""
    parts = re.split(r"([_\-\s.])", name)  # separators kept at odd indices
    if len(parts) > 1:
        for idx in (0, len(parts) - 1):
            if parts[idx].lower() in _SIDE_SWAP:
                return "".join(parts[:idx] + [_swap_side(parts[idx])] + parts[idx + 1 :])
    m = re.match(r"^(Left|Right|left|right)(?=[A-Z])(.+)$", name)  # CamelCase: LeftEye
    if m:
        return _swap_side(m.group(1)) + m.group(2)
    return None


def infer_flip_pairs(names: list[str]) -> list[tuple[int, int]]:
    """Pairs of keypoints whose names differ only by side (left_/right_, l_/r_, Left/Right, ..._left)."""
    index = {n: i for i, n in enumerate(names)}
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()
    for i, name in enumerate(names):
        mirror = _mirror_name(name)
        j = index.get(mirror) if mirror else None
        if j is not None and j != i and i not in used and j not in used:
            pairs.append((min(i, j), max(i, j)))
            used.update((i, j))
    return sorted(pairs)


def _builtin_path(name: str) -> Path:
    return Path(str(resources.files("posecli.datasets") / "metadata" / f"{name}.json"))


def load_builtin(name: str) -> DatasetMeta:
    """One of the built-in keypoint sets: coco (17), coco_wholebody (133), body_foot (23), onehand10k (21)."""
    if name not in BUILTIN:
        raise PoseCliError(f"unknown dataset '{name}' (built-in: {', '.join(BUILTIN)}, or a meta file path)")
    return DatasetMeta.from_dict(json.loads(_builtin_path(name).read_text()), source=name)


def builtin_num_keypoints(name: str) -> int | None:
    """Keypoint count of a built-in or file meta, or None when it cannot be known yet."""
    if name in BUILTIN:
        return load_builtin(name).num_keypoints
    if Path(name).is_file():
        return load_meta_file(name).num_keypoints
    return None


def load_meta_file(path: str | Path) -> DatasetMeta:
    """Read a YAML or JSON meta file in the DatasetMeta format."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_META_BYTES:
            raise PoseCliError(f"dataset meta is larger than {MAX_META_BYTES // 1024**2} MB (not a meta file?)", path)
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PoseCliError(f"cannot read dataset meta ({getattr(exc, 'strerror', None) or exc})", path) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PoseCliError(
            f"dataset meta is not valid {path.suffix.lstrip('.').upper() or 'YAML'} ({first})", path
        ) from None
    if not isinstance(data, dict):
        raise PoseCliError("dataset meta must be a mapping", path)
    check_document_size(data, path)
    return DatasetMeta.from_dict(data, source=str(path))


def meta_from_category(category: dict[str, Any], source: str = "annotations") -> DatasetMeta:
    """Metadata from a COCO ``categories`` entry: names and skeleton from it, flip pairs inferred."""
    if not isinstance(category, dict):
        raise PoseCliError("categories[0] is not an object", source)
    names = category.get("keypoints")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise PoseCliError("categories[0] has no 'keypoints' name list", source)
    if len(names) > MAX_KEYPOINTS:
        raise PoseCliError(f"categories[0] lists {len(names):,} keypoints, more than {MAX_KEYPOINTS:,}", source)
    # COCO files store the skeleton 1-based; links outside the keypoints (CrowdPose ships COCO's 17-point skeleton
    # with 14 keypoints) are dropped with a warning: a skeleton only draws pictures, training does not need it.
    skeleton, bad = skeleton_links(category, len(names))
    pairs = infer_flip_pairs(names)
    meta = DatasetMeta(
        name=str(category.get("name", "custom")),
        keypoint_names=list(names),
        flip_pairs=pairs,
        skeleton=skeleton,
    )
    meta.notes.insert(0, f"keypoint names and skeleton from the 'categories' entry of {source}")
    if bad:
        meta.notes.append(f"{source}: {skeleton_warning(category, bad, len(names))}")
    meta.notes.append(f"flip pairs inferred from left/right names: {len(pairs)} pairs")
    return meta


def resolve_meta(dataset: str | None, ann_file: str | Path | None = None) -> DatasetMeta:
    """Meta for a preset's ``dataset`` field: a built-in name, a meta file, or (None) the annotations' category."""
    if dataset in BUILTIN:
        return load_builtin(dataset)
    if dataset is not None:
        return load_meta_file(dataset)
    if ann_file is None:
        raise PoseCliError("no dataset meta: set `dataset:` in the preset or give an annotation file to infer it from")
    path = Path(ann_file)
    data = load_json_file(path, "annotation file")
    cats = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(cats, list) or not cats:
        raise PoseCliError("no 'categories' entry to take keypoint names from", path)
    meta = meta_from_category(cats[0], source=str(path))
    if len(cats) > 1:  # e.g. AP-10K's 54 species share one keypoint set: not all of them are "antelope"
        meta.name = path.stem
        meta.notes.append(f"{len(cats)} categories share the keypoint set; results keep each box's category_id")
    return meta
