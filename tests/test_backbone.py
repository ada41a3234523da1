"""The pre-trained tiny backbone that the synthetic benchmark freezes (pretrain_tiny_backbone.py)."""

import numpy as np
import pytest
import torch

import pretrain_tiny_backbone as pretrain
import train
from model import build_backbone


@pytest.mark.parametrize("path, floor, margin", [
    (pretrain.DEFAULT_CHECKPOINT, 0.35, 0.15),  # image-level labels, the default: measured 0.44 vs 0.21
    (pretrain.PIXEL_CHECKPOINT, 0.6, 0.3),  # per-pixel labels: measured 0.75 vs 0.21
])
def test_shipped_backbones_separate_the_classes_better_than_a_random_one(path, floor, margin):
    pretrained = build_backbone("tiny", weights=path)  # the loader train.py uses
    assert not any(p.requires_grad for p in pretrained.parameters())
    # seed 1: held-out scenes that neither the pre-training nor its own final measurement drew
    trained = pretrain.prototype_accuracy(pretrained, num_scenes=64, seed=1)
    random = pretrain.prototype_accuracy(build_backbone("tiny"), num_scenes=64, seed=1)
    assert trained >= floor and trained >= random + margin, (trained, random)


@pytest.mark.parametrize("task", pretrain.TASKS)
def test_pretraining_step_reduces_loss_on_a_fixed_batch(task):
    torch.manual_seed(0)
    model = pretrain.Pretrainer(task).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = pretrain.sample_scenes(np.random.default_rng(0), 4)
    losses = [pretrain.train_step(model, optimizer, batch) for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_sampled_labels_name_every_shape_and_appearance_present():
    images, labels, present = pretrain.sample_scenes(np.random.default_rng(5), 6)
    assert images.shape == (6, 3, 128, 128) and labels.shape == (6, 128, 128) and present.shape == (6, 9)
    for label, target in zip(labels, present):
        classes = [c for c in label.unique().tolist() if c not in (0, 255)]
        shapes = {pretrain.synthetic.synthetic_class(c)[0] for c in classes}
        appearances = {pretrain.synthetic.synthetic_class(c)[1] for c in classes}
        assert {pretrain.synthetic.SYNTHETIC_SHAPES[i] for i in range(5) if target[i]} == shapes
        assert {name for name, i in pretrain.APPEARANCE_INDEX.items() if target[5 + i]} == appearances


def test_script_writes_a_loadable_fp16_checkpoint(tmp_path, capsys):
    out = tmp_path / "backbone.pth"
    pretrain.main(["--steps", "2", "--batch-size", "2", "--eval-scenes", "4", "--out", str(out)])
    state = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    loaded = build_backbone("tiny", weights=out)
    assert loaded.blocks[0][0][0].weight.dtype == torch.float32
    assert torch.equal(loaded.blocks[4][0].weight.half(), state["blocks.4.0.weight"])
    assert "held-out nearest-prototype accuracy" in capsys.readouterr().out


def test_missing_or_corrupt_checkpoint_says_how_to_remake_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain_tiny_backbone.py"):
        build_backbone("tiny", weights=tmp_path / "tiny_backbone_synthetic.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(pretrain.DEFAULT_CHECKPOINT.read_bytes()[:1000])
    with pytest.raises(ValueError, match="pretrain_tiny_backbone.py"):
        build_backbone("tiny", weights=corrupt)


def test_synthetic_runs_default_to_the_pretrained_backbone_and_can_ask_for_a_random_one():
    args = train.resolve_args(train.build_parser().parse_args(["--dataset", "synthetic"]))
    assert args.backbone_weights == str(pretrain.DEFAULT_CHECKPOINT)
    args = train.resolve_args(
        train.build_parser().parse_args(["--dataset", "synthetic", "--backbone-weights", "random"])
    )
    random = build_backbone("tiny", weights=args.backbone_weights)
    assert torch.equal(random.blocks[4][0].weight, build_backbone("tiny").blocks[4][0].weight)
    # the synthetic weights belong to the tiny backbone only
    args = train.resolve_args(train.build_parser().parse_args(["--dataset", "synthetic", "--backbone", "resnet50"]))
    assert args.backbone_weights == "imagenet"


def test_bad_step_count_is_one_line(capsys):
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--steps", "0"])
    assert "argument --steps: expected a positive integer, got 0" in capsys.readouterr().err
