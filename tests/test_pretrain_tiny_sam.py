"""The pre-trained tiny SAM that the synthetic benchmark freezes (pretrain_tiny_sam.py)."""

import numpy as np
import pytest
import torch

import pretrain_tiny_sam as pretrain
from model import build_sam


def test_shipped_checkpoint_segments_held_out_scenes_from_one_point():
    sam = build_sam("tiny", pretrain.DEFAULT_CHECKPOINT)  # the same loader as the official checkpoints
    assert not any(p.requires_grad for p in sam.parameters())
    # seed 1: scenes neither the pre-training nor its own final evaluation (seed 0) drew
    assert pretrain.held_out_point_iou(sam, num_scenes=32, seed=1) >= 0.75


def test_a_random_tiny_sam_does_not_segment_from_a_point():
    # why the checkpoint exists at all (docs/synthetic.md)
    assert pretrain.held_out_point_iou(build_sam("tiny", None), num_scenes=16, seed=1) < 0.3


@pytest.mark.parametrize("corrections", [0, 4])
def test_training_step_reduces_loss_on_a_fixed_batch(corrections):
    torch.manual_seed(0)
    sam = build_sam("tiny", None).requires_grad_(True).train()
    optimizer = torch.optim.AdamW(sam.parameters(), lr=1e-3)
    batch = pretrain.sample_scenes(np.random.default_rng(0), 4)
    rng = np.random.default_rng(1)
    losses = [pretrain.train_step(sam, optimizer, batch, rng=rng, max_corrections=corrections) for _ in range(10)]
    assert losses[-1] < 0.6 * losses[0]


def test_correction_points_lie_in_the_error_region_labelled_by_the_object():
    masks = torch.zeros(2, 12, 12, dtype=torch.int64)
    masks[:, 2:6, 2:6] = 1
    logits = torch.full((2, 12, 12), -1.0)
    logits[0, 4:8, 4:8] = 1.0  # image 0: half the object missed, a false region beside it
    logits[1] = torch.where(masks[1] == 1, 1.0, -1.0)  # image 1: exact
    error = (logits[0] > 0) ^ masks[0].bool()
    labels_seen = set()
    for seed in range(40):
        points, labels = pretrain.correction_points(np.random.default_rng(seed), logits, masks)
        assert points.shape == (2, 1, 2) and labels.shape == (2, 1)
        (x, y), label = points[0, 0].long(), int(labels[0, 0])
        assert error[y, x] and label == int(masks[0, y, x])  # missed pixel: positive; false pixel: negative
        labels_seen.add(label)
        (x, y), label = points[1, 0].long(), int(labels[1, 0])
        assert masks[1, y, x] == 1 and label == 1  # nothing to correct: a positive point on the object
    assert labels_seen == {0, 1}


def test_sampled_prompts_lie_on_their_object():
    images, masks, points, boxes = pretrain.sample_scenes(np.random.default_rng(3), 8)
    assert images.shape == (8, 3, 128, 128) and masks.shape == (8, 128, 128)
    for mask, (x, y), (x0, y0, x1, y1) in zip(masks, points[:, 0].long(), boxes.long()):
        assert mask[y, x] == 1
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == (x0, y0, x1, y1)


def test_script_writes_a_loadable_fp16_checkpoint(tmp_path, capsys):
    out = tmp_path / "sam_tiny.pth"
    pretrain.main(["--steps", "2", "--batch-size", "2", "--eval-scenes", "2", "--out", str(out)])
    state = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    build_sam("tiny", out)
    assert "held-out point-prompt IoU" in capsys.readouterr().out


def test_missing_or_corrupt_checkpoint_says_how_to_remake_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain_tiny_sam.py"):
        build_sam("tiny", tmp_path / "sam_tiny_synthetic.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(pretrain.DEFAULT_CHECKPOINT.read_bytes()[:1000])  # a truncated download / copy
    with pytest.raises(ValueError, match="pretrain_tiny_sam.py"):
        build_sam("tiny", corrupt)
