"""MMPose 0.x configs in and out: `presets import` (never executes the file), `presets show --json`, `export-mmpose`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from posecli.cli import app
from posecli.datasets.meta import load_builtin
from posecli.mmpose_config import load_config
from posecli.mmpose_config.export import _fmt, dataset_info_of
from posecli.settings import list_presets

runner = CliRunner()

# A custom 5-keypoint set, MMPose dataset_info style: int-keyed keypoint_info, swap names, skeleton by names.
MINI5 = '''
"""A made-up 5-keypoint dataset."""
dataset_info = dict(
    dataset_name='mini5',
    paper_info=dict(author='nobody', year='2024'),
    keypoint_info={
        0: dict(name='head', id=0, color=[51, 153, 255], type='upper', swap=''),
        1: dict(name='left_hand', id=1, color=[0, 255, 0], type='upper', swap='right_hand'),
        2: dict(name='right_hand', id=2, color=[255, 128, 0], type='upper', swap='left_hand'),
        3: dict(name='left_foot', id=3, color=[0, 255, 0], type='lower', swap='right_foot'),
        4: dict(name='right_foot', id=4, color=[255, 128, 0], type='lower', swap='left_foot'),
    },
    skeleton_info={
        0: dict(link=('head', 'left_hand'), id=0, color=[0, 255, 0]),
        1: dict(link=('head', 'right_hand'), id=1, color=[255, 128, 0]),
    },
    joint_weights=[1.] * 3 + [1.5, 1.5],
    sigmas=[0.026, 0.025 * 2, 0.05, 0.089, 0.089])
'''

# level 0 of the chain: a ResNet model, SGD, step schedule (the child deletes the backbone)
RUNTIME = """
log_level = 'INFO'
checkpoint_config = dict(interval=10)
optimizer = dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)
optimizer_config = dict(grad_clip=dict(max_norm=35, norm_type=2))
lr_config = dict(policy='step', warmup='linear', warmup_iters=10, warmup_ratio=0.01, step=[5, 8])
total_epochs = 99
model = dict(
    type='TopDown',
    pretrained='torchvision://resnet50',
    backbone=dict(type='ResNet', depth=50),
    keypoint_head=dict(type='TopdownHeatmapSimpleHead', in_channels=2048, out_channels=17),
    train_cfg=dict(),
    test_cfg=dict(flip_test=True, post_process='default', shift_heatmap=True, modulate_kernel=11))
"""

# level 1: HRNet replaces the ResNet (_delete_), merges into head and lr_config, inherits the dataset file
HRNET_BASE = """
_base_ = ['./runtime.py', './datasets/mini5.py']
stage = dict(num_modules=1, num_branches=1, block='BOTTLENECK', num_blocks=(1, ), num_channels=(8, ))
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='HRNet',
        in_channels=3,
        extra=dict(
            stage1=stage,
            stage2=dict(num_modules=1, num_branches=2, block='BASIC', num_blocks=(1, 1), num_channels=(8, 16)),
            stage3=dict(num_modules=1, num_branches=3, block='BASIC', num_blocks=[1] * 3, num_channels=(8, 16, 32)),
            stage4=dict(num_modules=1, num_branches=4, block='BASIC', num_blocks=(1, 1, 1, 1),
                        num_channels=(8, 16, 32, 64)))),
    keypoint_head=dict(num_deconv_layers=0, extra=dict(final_conv_kernel=1, ),
                       loss_keypoint=dict(type='JointsMSELoss', use_target_weight=True)))
lr_config = dict(step=[7, 10])
total_epochs = 12
"""

# level 2: names, tuple targets, subscripts, arithmetic, f-strings, {{_base_.x}}, dict(**...), list(range())
CHILD = """
'''My fine-tune of the mini5 model.'''
_base_ = '../_base_/hrnet_base.py'
base_lr = 2.5e-4
width, height = 96, 128
channel_cfg = dict(num_output_channels=5, dataset_joints=5, dataset_channel=[list(range(5))],
                   inference_channel=list(range(5)))
optimizer = dict(lr=base_lr * 2, weight_decay=0.)
model = dict(
    keypoint_head=dict(in_channels=2**3, out_channels=channel_cfg['num_output_channels']),
    test_cfg=dict(flip_test=False, post_process='unbiased', modulate_kernel=5 + 2))
common = dict(soft_nms=False, nms_thr=1.0, oks_thr=0.8, vis_thr=0.25)
data_cfg = dict(
    image_size=[width, height],
    heatmap_size=[width // 4, height // 4],
    num_output_channels=channel_cfg['num_output_channels'],
    num_joints=channel_cfg['dataset_joints'],
    dataset_channel=channel_cfg['dataset_channel'],
    inference_channel=channel_cfg['inference_channel'],
    use_gt_bbox=False,
    det_bbox_thr=0.1 * 3,
    bbox_file='dets/val_boxes.json',
    **common)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TopDownRandomFlip', flip_prob=0.25),
    dict(type='TopDownGetRandomScaleRotation', rot_factor=30, scale_factor=0.25),
    dict(type='TopDownAffine'),
    dict(type='ToTensor'),
    dict(type='NormalizeTensor', mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    dict(type='TopDownGenerateTarget', sigma=1 + 0.5, unbiased_encoding=True),
    dict(type='PhotometricDistortion'),
    dict(type='Collect', keys=['img', 'target', 'target_weight'], meta_keys=['image_file']),
]
val_pipeline = [dict(type='LoadImageFromFile'), dict(type='TopDownAffine'), dict(type='ToTensor')]
test_pipeline = val_pipeline
data_root = 'data/mini5'
data = dict(
    samples_per_gpu=16,
    workers_per_gpu=-(-3),
    test_dataloader=dict(samples_per_gpu=48),
    train=dict(type='TopDownCocoDataset', ann_file=f'{data_root}/annotations/train.json',
               img_prefix=f'{data_root}/images/', data_cfg=data_cfg, pipeline=train_pipeline,
               dataset_info={{_base_.dataset_info}}),
    val=dict(type='TopDownCocoDataset', ann_file=data_root + '/annotations/val.json',
             img_prefix=f'{data_root}/images/', data_cfg=data_cfg, pipeline=val_pipeline,
             dataset_info={{ _base_.dataset_info }}),
)
"""


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def write_tree(root: Path, child: str = CHILD, hrnet_base: str = HRNET_BASE, runtime: str = RUNTIME) -> Path:
    """The three-level config chain of the tests; returns the child config's path."""
    (root / "_base_" / "datasets").mkdir(parents=True)
    (root / "_base_" / "datasets" / "mini5.py").write_text(MINI5)
    (root / "_base_" / "runtime.py").write_text(runtime)
    (root / "_base_" / "hrnet_base.py").write_text(hrnet_base)
    (root / "configs").mkdir()
    path = root / "configs" / "child.py"
    path.write_text(child)
    return path


def import_and_show(config: Path, out: Path) -> tuple[str, dict]:
    res = invoke("presets", "import", config, "--out", out)
    assert res.exit_code == 0, res.output
    shown = invoke("presets", "show", out, "--json")
    assert shown.exit_code == 0, shown.output
    return res.output, json.loads(shown.output)


def test_import_three_level_chain_values_equal_the_config(tmp_path: Path) -> None:
    config = write_tree(tmp_path)
    out = tmp_path / "presets" / "mini.yaml"
    printed, shown = import_and_show(config, out)
    s, meta = shown["settings"], shown["dataset_meta"]

    # model: HRNet from level 1 (ResNet deleted), head merged over three files, arithmetic in_channels
    backbone = s["model"]["backbone"]
    assert backbone["type"] == "HRNet"
    assert backbone["extra"]["stage1"]["num_channels"] == [8]
    assert backbone["extra"]["stage3"]["num_blocks"] == [1, 1, 1]
    assert backbone["extra"]["stage4"]["num_channels"] == [8, 16, 32, 64]
    head = s["model"]["head"]
    assert (head["in_channels"], head["out_channels"], head["num_deconv_layers"]) == (8, 5, 0)
    assert head["final_conv_kernel"] == 1 and head["loss_keypoint"]["use_target_weight"] is True
    assert "depth" not in printed  # _delete_ dropped the ResNet keys
    # data_cfg with names, tuple targets, floor division, ** unpacking
    d = s["data"]
    assert d["image_size"] == [96, 128] and d["heatmap_size"] == [24, 32]
    assert d["bbox_file"] == "dets/val_boxes.json" and d["det_bbox_thr"] == pytest.approx(0.3)
    assert (s["test"]["oks_thr"], s["test"]["vis_thr"], s["test"]["soft_nms"]) == (0.8, 0.25, False)
    # train pipeline: present transforms mapped, absent ones switched off
    assert (d["sigma"], d["unbiased_encoding"], d["flip_prob"]) == (1.5, True, 0.25)
    assert (d["rot_factor"], d["scale_factor"], d["rot_prob"]) == (30, 0.25, 0.6)
    assert (d["shift_prob"], d["prob_half_body"]) == (0, 0)
    # f-strings and string concatenation
    assert d["train_ann"] == "data/mini5/annotations/train.json" and d["train_img_dir"] == "data/mini5/images/"
    assert d["val_ann"] == "data/mini5/annotations/val.json"
    # schedule: SGD from level 0 with the child's lr, lr_config merged (policy + warmup from 0, step from 1)
    t = s["train"]
    assert t["optimizer"] == {"type": "SGD", "lr": 5e-4, "weight_decay": 0.0, "momentum": 0.9, "betas": [0.9, 0.999]}
    assert t["lr_config"]["policy"] == "step" and t["lr_config"]["step"] == [7, 10]
    assert (t["lr_config"]["warmup"], t["lr_config"]["warmup_iters"], t["lr_config"]["warmup_ratio"]) == (
        "linear",
        10,
        0.01,
    )
    assert (t["total_epochs"], t["grad_clip"], t["batch_size"], t["workers"]) == (12, 35, 16, 3)
    assert t["pretrained"] is None and t["load_from"] is None
    # test_cfg: the child's values; shift_heatmap inherited from level 0
    assert s["test"] == {**s["test"], "flip_test": False, "post_process": "unbiased", "modulate_kernel": 7}
    assert s["test"]["shift_heatmap"] is True and s["test"]["batch_size"] == 48
    # dataset_info through {{_base_.dataset_info}} -> a meta file next to the preset
    assert (out.parent / "mini.meta.yaml").is_file()
    assert meta["name"] == "mini5"
    assert meta["keypoint_names"] == ["head", "left_hand", "right_hand", "left_foot", "right_foot"]
    assert meta["flip_pairs"] == [[1, 2], [3, 4]]
    assert meta["sigmas"] == pytest.approx([0.026, 0.05, 0.05, 0.089, 0.089])
    assert meta["joint_weights"] == [1.0, 1.0, 1.0, 1.5, 1.5]
    assert meta["upper_body_ids"] == [0, 1, 2] and meta["lower_body_ids"] == [3, 4]
    assert meta["skeleton"] == [[0, 1], [0, 2]]
    # the report names what was mapped and every ignored key
    assert "optimizer_config.grad_clip.max_norm -> train.grad_clip" in printed
    for ignored in ("log_level", "checkpoint_config", "data_cfg.nms_thr", "PhotometricDistortion", "data_root"):
        assert ignored in printed


def test_without_delete_the_resnet_keys_survive(tmp_path: Path) -> None:
    config = write_tree(tmp_path, hrnet_base=HRNET_BASE.replace("_delete_=True,", ""))
    res = invoke("presets", "import", config, "--out", tmp_path / "p.yaml")
    assert res.exit_code == 0, res.output
    assert "model.backbone.depth" in res.output  # merged from the ResNet base, ignored and reported


def test_builtin_dataset_info_maps_to_its_name(tmp_path: Path) -> None:
    """A dataset_info equal to COCO's (via {{_base_.x}}) gives `dataset: coco` and no meta file."""
    (tmp_path / "coco.py").write_text("dataset_info = " + _fmt(dataset_info_of(load_builtin("coco")), 0, 15) + "\n")
    child = CHILD.replace("'../_base_/hrnet_base.py'", "['../_base_/hrnet_base.py', '../coco_info.py']")
    child = child.replace("num_output_channels=5, dataset_joints=5", "num_output_channels=17, dataset_joints=17")
    config = write_tree(tmp_path, child=child, hrnet_base=HRNET_BASE.replace(", './datasets/mini5.py'", ""))
    (tmp_path / "coco_info.py").write_text((tmp_path / "coco.py").read_text())
    _, shown = import_and_show(config, tmp_path / "c.yaml")
    assert shown["settings"]["dataset"] == "coco" and shown["settings"]["model"]["head"]["out_channels"] == 17
    assert shown["dataset_meta"]["sigmas"] == load_builtin("coco").sigmas
    assert not (tmp_path / "c.meta.yaml").exists()


MALICIOUS = [
    ("import os; os.system('touch {marker}')", "an import"),
    ("__import__('os').system('touch {marker}')", "a function call"),
    ("x = open('{marker}', 'w')", "a call to `open`"),
    ("x = __import__('os').system('touch {marker}')", "a call to `__import__('os').system`"),
    ("import subprocess\nx = 1", "an import"),
    ("f = lambda: open('{marker}', 'w')", "a lambda"),
    ("x = dict.fromkeys('{marker}')", "a call to `dict.fromkeys`"),
    ("x = [open(p) for p in ['{marker}']]", "a comprehension"),
    ("if True:\n    x = 1", "an if statement"),
    ("def f():\n    pass", "a function definition"),
    ("x = ().__class__", "attribute access"),
    ("x = 10 ** 10 ** 10", "arithmetic"),
    ("x = [0] * 10 ** 9", "a list or string of more than"),
    ("x = undefined_name", "the name 'undefined_name'"),
]


@pytest.mark.parametrize(("line", "what"), MALICIOUS)
def test_code_in_a_config_is_refused_and_never_run(tmp_path: Path, line: str, what: str) -> None:
    marker = tmp_path / "X"
    config = tmp_path / "evil.py"
    config.write_text(f"model = dict(type='TopDown')\n{line.format(marker=marker)}\n")
    out = tmp_path / "evil.yaml"
    res = invoke("presets", "import", config, "--out", out)
    assert res.exit_code == 2, res.output
    message = res.output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert str(config) in message and "line 2" in message and what in message
    assert not marker.exists() and not out.exists()


def test_code_in_a_base_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "base.py").write_text("import os\nos.system('touch X')\n")
    (tmp_path / "child.py").write_text("_base_ = './base.py'\nmodel = dict()\n")
    res = invoke("presets", "import", tmp_path / "child.py", "--out", tmp_path / "p.yaml")
    assert res.exit_code == 2 and "base.py: line 1: an import" in res.output
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize(
    ("file", "old", "new", "part"),
    [
        ("base", "type='HRNet',", "type='ResNet', depth=50,", "model.backbone.type='ResNet'"),
        ("child", "dict(type='TopDownAffine')", "dict(type='TopDownAffine', use_udp=True)", "(TopDownAffine).use_udp"),
        ("child", "unbiased_encoding=True)", "encoding='UDP')", "(TopDownGenerateTarget).encoding='UDP'"),
        ("child", "unbiased_encoding=True)", "target_type='CombinedTarget')", "target_type='CombinedTarget'"),
        ("child", "dict(type='TopDownAffine'), dict(type='ToTensor')]", "dict(type='TopDownAffine', use_udp=True)]",
         "val_pipeline[1](TopDownAffine).use_udp"),
        ("runtime", "type='TopDown',", "type='AssociativeEmbedding',", "model.type='AssociativeEmbedding'"),
        ("runtime", "type='TopdownHeatmapSimpleHead'", "type='DeepposeRegressionHead'", "DeepposeRegressionHead"),
        ("child", "mean=[0.485, 0.456, 0.406]", "mean=[0.5, 0.5, 0.5]", "(NormalizeTensor) mean=[0.5, 0.5, 0.5]"),
        ("runtime", "policy='step'", "policy='poly'", "lr_config.policy='poly'"),
        ("child", "out_channels=channel_cfg['num_output_channels']", "out_channels=7",
         "data_cfg.num_output_channels=5 differs from the head's out_channels=7"),
    ],
)  # fmt: skip
def test_unsupported_parts_are_refused(tmp_path: Path, file: str, old: str, new: str, part: str) -> None:
    texts = {"child": CHILD, "base": HRNET_BASE, "runtime": RUNTIME}
    assert old in texts[file]
    texts[file] = texts[file].replace(old, new, 1)
    config = write_tree(tmp_path, child=texts["child"], hrnet_base=texts["base"], runtime=texts["runtime"])
    out = tmp_path / "one.yaml"
    res = invoke("presets", "import", config, "--out", out)
    assert res.exit_code == 2, res.output
    message = res.output.strip()
    assert part in message and str(config) in message and len(message.splitlines()) == 1
    assert not out.exists() and not (tmp_path / "one.meta.yaml").exists()


# settings MMPose has no word for, which export-mmpose keeps in its `posecli` dict
POSECLI_ONLY = {
    "data": {"synthetic", "allow_outside_img_dir"},
    "train": {
        "seed", "workers", "keypoint_map", "eval_before_train", "freeze_backbone_epochs", "backbone_lr_mult",
        "auto_scale_lr", "amp", "channels_last", "compile", "gpu_decode",
    },
}  # fmt: skip


@pytest.mark.parametrize("preset", list_presets())
def test_export_then_import_round_trip_every_shipped_preset(tmp_path: Path, preset: str) -> None:
    config = tmp_path / f"{preset}.py"
    res = invoke("presets", "export-mmpose", preset, "--out", config)
    assert res.exit_code == 0, res.output
    exported = load_config(config)
    # the MMPose part carries the model, data and test values; only posecli-only settings are kept aside
    for section, keys in exported.get("posecli", {}).items():
        assert set(keys) <= POSECLI_ONLY.get(section, set()), (section, keys)
    assert exported["model"]["keypoint_head"]["out_channels"] == exported["data_cfg"]["num_output_channels"]
    assert len(exported["dataset_info"]["keypoint_info"]) == exported["channel_cfg"]["num_output_channels"]
    _, back = import_and_show(config, tmp_path / "back.yaml")
    original = json.loads(invoke("presets", "show", preset, "--json").output)
    assert back == original


def test_export_from_a_posecli_checkpoint(tmp_path: Path) -> None:
    from importlib import resources

    ckpt = Path(str(resources.files("posecli") / "assets" / "demo_coco17.pth"))
    config = tmp_path / "demo_ckpt.py"
    res = invoke("presets", "export-mmpose", ckpt, "--out", config)
    assert res.exit_code == 0, res.output
    cfg = load_config(config)
    assert cfg["model"]["keypoint_head"]["out_channels"] == 17
    assert cfg["dataset_info"]["dataset_name"] == "coco"
    bad = invoke("presets", "export-mmpose", ckpt, "--out", tmp_path / "x.yaml")
    assert bad.exit_code == 2 and "--out must be a .py file" in bad.output


HAND21 = "\n".join(
    ["dataset_info = dict(dataset_name='hand21', paper_info=dict(), keypoint_info={"]
    + [f"    {i}: dict(name='kp{i}', id={i}, color=[255, 0, 0], type='', swap='')," for i in range(21)]
    + ["}, skeleton_info={}, joint_weights=[1.] * 21, sigmas=[0.02] * 21)"]
)

# MMPose's hrnetv2_w18_onehand10k_256x256_dark.py, as it is written (model and pipelines)
HRNETV2 = """
_base_ = ['./hand21.py']
channel_cfg = dict(num_output_channels=21, dataset_joints=21, dataset_channel=[list(range(21))],
                   inference_channel=list(range(21)))
model = dict(
    type='TopDown',
    pretrained='open-mmlab://msra/hrnetv2_w18',
    backbone=dict(
        type='HRNet',
        in_channels=3,
        extra=dict(
            stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK', num_blocks=(4, ), num_channels=(64, )),
            stage2=dict(num_modules=1, num_branches=2, block='BASIC', num_blocks=(4, 4), num_channels=(18, 36)),
            stage3=dict(num_modules=4, num_branches=3, block='BASIC', num_blocks=(4, 4, 4),
                        num_channels=(18, 36, 72)),
            stage4=dict(num_modules=3, num_branches=4, block='BASIC', num_blocks=(4, 4, 4, 4),
                        num_channels=(18, 36, 72, 144), multiscale_output=True),
            upsample=dict(mode='bilinear', align_corners=False))),
    keypoint_head=dict(
        type='TopdownHeatmapSimpleHead',
        in_channels=[18, 36, 72, 144],
        in_index=(0, 1, 2, 3),
        input_transform='resize_concat',
        out_channels=channel_cfg['num_output_channels'],
        num_deconv_layers=0,
        extra=dict(final_conv_kernel=1, num_conv_layers=1, num_conv_kernels=(1, )),
        loss_keypoint=dict(type='JointsMSELoss', use_target_weight=True)),
    train_cfg=dict(),
    test_cfg=dict(flip_test=True, post_process='unbiased', shift_heatmap=True, modulate_kernel=11))
data_cfg = dict(
    image_size=[256, 256],
    heatmap_size=[64, 64],
    num_output_channels=channel_cfg['num_output_channels'],
    num_joints=channel_cfg['dataset_joints'],
    dataset_channel=channel_cfg['dataset_channel'],
    inference_channel=channel_cfg['inference_channel'])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TopDownRandomFlip', flip_prob=0.5),
    dict(type='TopDownGetRandomScaleRotation', rot_factor=90, scale_factor=0.3),
    dict(type='TopDownAffine'),
    dict(type='ToTensor'),
    dict(type='NormalizeTensor', mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    dict(type='TopDownGenerateTarget', sigma=2, unbiased_encoding=True),
    dict(type='Collect', keys=['img', 'target', 'target_weight'], meta_keys=['image_file']),
]
data = dict(samples_per_gpu=64, workers_per_gpu=2,
            train=dict(type='OneHand10KDataset', ann_file='data/onehand10k/annotations/onehand10k_train.json',
                       img_prefix='data/onehand10k/', data_cfg=data_cfg, pipeline=train_pipeline,
                       dataset_info={{_base_.dataset_info}}))
"""


def test_import_hrnetv2_config(tmp_path: Path) -> None:
    (tmp_path / "hand21.py").write_text(HAND21)
    (tmp_path / "hrnetv2.py").write_text(HRNETV2)
    _, shown = import_and_show(tmp_path / "hrnetv2.py", tmp_path / "hand.yaml")
    model = shown["settings"]["model"]
    assert model["backbone"]["extra"]["stage4"]["multiscale_output"] is True
    assert model["backbone"]["extra"]["upsample"] == {"mode": "bilinear", "align_corners": False}
    head = model["head"]
    assert head["in_channels"] == [18, 36, 72, 144] and head["in_index"] == [0, 1, 2, 3]
    assert (head["input_transform"], head["num_conv_layers"], head["num_conv_kernels"]) == ("resize_concat", 1, [1])
    assert shown["settings"]["train"]["pretrained"] == "open-mmlab://msra/hrnetv2_w18"
    assert shown["dataset_meta"]["num_keypoints"] == 21 and shown["dataset_meta"]["flip_pairs"] == []
    # and back out: the exported config keeps the HRNetV2 parts and re-imports to the same settings
    assert invoke("presets", "export-mmpose", tmp_path / "hand.yaml", "--out", tmp_path / "hand.py").exit_code == 0
    exported = load_config(tmp_path / "hand.py")
    assert exported["model"]["keypoint_head"]["input_transform"] == "resize_concat"
    assert exported["model"]["backbone"]["extra"]["upsample"] == {"mode": "bilinear", "align_corners": False}
    _, back = import_and_show(tmp_path / "hand.py", tmp_path / "back" / "hand.yaml")
    assert back["settings"] == {**shown["settings"], "dataset": back["settings"]["dataset"]}
    assert back["dataset_meta"]["keypoint_names"] == shown["dataset_meta"]["keypoint_names"]


def test_bad_inputs_exit_2(tmp_path: Path) -> None:
    missing = invoke("presets", "import", tmp_path / "nope.py", "--out", tmp_path / "p.yaml")
    assert missing.exit_code == 2 and "config file not found" in missing.output
    (tmp_path / "a.py").write_text("_base_ = './b.py'\nx = 1\n")
    (tmp_path / "b.py").write_text("_base_ = './a.py'\ny = 2\n")
    cycle = invoke("presets", "import", tmp_path / "a.py", "--out", tmp_path / "p.yaml")
    assert cycle.exit_code == 2 and "cycle" in cycle.output
    (tmp_path / "syntax.py").write_text("model = dict(\n")
    syntax = invoke("presets", "import", tmp_path / "syntax.py", "--out", tmp_path / "p.yaml")
    assert syntax.exit_code == 2 and "not valid Python" in syntax.output
    (tmp_path / "nobase.py").write_text("x = {{_base_.y}}\n")
    nobase = invoke("presets", "import", tmp_path / "nobase.py", "--out", tmp_path / "p.yaml")
    assert nobase.exit_code == 2 and "has no _base_" in nobase.output
    config = write_tree(tmp_path / "tree")
    wrong_out = invoke("presets", "import", config, "--out", tmp_path / "p.txt")
    assert wrong_out.exit_code == 2 and "--out must be a .yaml" in wrong_out.output
    assert not (tmp_path / "p.yaml").exists()


def test_show_json_matches_the_yaml_show_and_the_builtin_meta() -> None:
    import yaml

    shown = json.loads(invoke("presets", "show", "hrnet_w48_coco_384x288_dark", "--json").output)
    plain = yaml.safe_load(invoke("presets", "show", "hrnet_w48_coco_384x288_dark").output)
    assert shown["settings"] == plain
    coco = load_builtin("coco")
    meta = shown["dataset_meta"]
    assert (meta["name"], meta["num_keypoints"], meta["keypoint_names"]) == ("coco", 17, coco.keypoint_names)
    assert meta["flip_pairs"] == [list(p) for p in coco.flip_pairs] and meta["sigmas"] == coco.sigmas
    assert meta["joint_weights"][9:11] == [1.5, 1.5]


def test_old_config_without_dataset_info_takes_the_dataset_type(tmp_path: Path) -> None:
    """MMPose configs before 0.21 name the keypoint set only through the dataset class."""
    child = CHILD.replace("dataset_info={{_base_.dataset_info}}", "").replace(
        "dataset_info={{ _base_.dataset_info }}", ""
    )
    child = child.replace("TopDownCocoDataset", "TopDownCocoWholeBodyDataset")
    child = child.replace("num_output_channels=5, dataset_joints=5", "num_output_channels=133, dataset_joints=133")
    config = write_tree(tmp_path, child=child, hrnet_base=HRNET_BASE.replace(", './datasets/mini5.py'", ""))
    _, shown = import_and_show(config, tmp_path / "wb.yaml")
    assert shown["settings"]["dataset"] == "coco_wholebody" and shown["dataset_meta"]["num_keypoints"] == 133
    unknown = child.replace("TopDownCocoWholeBodyDataset", "MyDataset")
    config.write_text(unknown)
    res = invoke("presets", "import", config, "--out", tmp_path / "x.yaml")
    assert res.exit_code == 2 and "dataset type 'MyDataset' is not a built-in keypoint set" in res.output
