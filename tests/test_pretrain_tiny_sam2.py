"""The pre-trained tiny SAM 2 that the synthetic benchmark freezes with SAM 2 (pretrain_tiny_sam2.py)."""

import numpy as np
import pytest
import torch

import pretrain_tiny_sam
import pretrain_tiny_sam2 as pretrain
from sam2_backend import TINY_SAM2, build_sam2_model, decode_masks, image_features


@pytest.fixture(scope="module")
def shipped():
    return pretrain.load_tiny_sam2(pretrain.DEFAULT_CHECKPOINT)


def test_shipped_checkpoint_loads_strictly_and_segments_held_out_scenes_from_one_point(shipped):
    state = torch.load(pretrain.DEFAULT_CHECKPOINT, weights_only=True)
    assert state.keys() == build_sam2_model(*TINY_SAM2).state_dict().keys()  # SAM2Base's own keys
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert not any(p.requires_grad for p in shipped.parameters())
    # seed 1: scenes neither the pre-training nor its own final evaluation (seed 0) drew
    iou = pretrain_tiny_sam.held_out_point_iou(shipped, num_scenes=32, seed=1, predict=pretrain.predict)
    assert iou >= 0.75  # 0.83 (the tiny SAM: 0.834 on these scenes)


def test_a_random_tiny_sam2_does_not_segment_from_a_point():
    # why the checkpoint exists at all (docs/synthetic.md)
    sam = build_sam2_model(*TINY_SAM2)
    assert pretrain_tiny_sam.held_out_point_iou(sam, num_scenes=8, seed=1, predict=pretrain.predict) < 0.3


def test_the_image_losses_reach_exactly_stage_1s_parameters_and_tracking_reaches_the_memory():
    sam = build_sam2_model(*TINY_SAM2).requires_grad_(True).train()
    names = [name for name, _ in sam.named_parameters()]
    memory = {name for name in names if pretrain.memory_parameter(name)}
    assert all(any(name.startswith(prefix) for name in memory) for prefix in pretrain.MEMORY_PREFIXES)
    sum(pretrain.image_losses(sam, pretrain.sample_scene_objects(np.random.default_rng(0), 2)).values()).backward()
    reached = {name for name, p in sam.named_parameters() if p.grad is not None}
    assert reached == set(names) - memory  # stage 1 trains every parameter its path reaches, and only those
    sam.zero_grad(set_to_none=True)
    frames, masks = pretrain.sample_videos(np.random.default_rng(0), 1, 3)
    pretrain.track(sam, frames, masks[:, 0]).sum().backward()
    reached = {name for name, p in sam.named_parameters() if p.grad is not None}
    assert {"memory_attention.layers.0.cross_attn_image.q_proj.weight", "memory_encoder.fuser.layers.0.dwconv.weight",
            "maskmem_tpos_enc", "obj_ptr_proj.layers.0.weight", "mask_downsample.weight"} <= reached


def test_stage_1_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    sam = build_sam2_model(*TINY_SAM2).train()
    trained = [p.requires_grad_(True) for name, p in sam.named_parameters() if not pretrain.memory_parameter(name)]
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    batch = pretrain.sample_scene_objects(np.random.default_rng(0), 2, max_objects=2)
    losses = [pretrain.image_train_step(sam, optimizer, batch) for _ in range(6)]
    assert losses[-1] < 0.7 * losses[0]


def test_the_single_mask_loss_is_on_vrp_sams_path_and_every_object_is_prompted(shipped):
    images, scene_index, masks, points, boxes, is_box = pretrain.sample_scene_objects(np.random.default_rng(2), 3)
    assert len(images) == 3 and set(scene_index.tolist()) == {0, 1, 2} and is_box.any() and not is_box.all()
    for i, mask, (x, y), (x0, y0, x1, y1) in zip(scene_index, masks, points[:, 0].long(), boxes.long()):
        assert mask[y, x] == 1  # the point lies on its object, the box is tight
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == (x0, y0, x1, y1)
    with torch.no_grad():
        features = image_features(shipped, images)[scene_index]
        sparse, dense = pretrain.prompt_embeddings(shipped, 128, points=points)
        every_output = pretrain.decoder_outputs(shipped, features, sparse, dense)[0]
        assert torch.equal(every_output[:, :1], decode_masks(shipped, features, sparse, dense))


def test_sampled_videos_follow_one_object_fully_visible_in_frame_0():
    frames, masks = pretrain.sample_videos(np.random.default_rng(3), 3, 4)
    assert frames.shape == (3, 4, 3, 128, 128) and masks.shape == (3, 4, 128, 128)
    assert set(masks.unique().tolist()) <= {0, 1} and (masks[:, 0].sum((1, 2)) > 100).all()
    assert not torch.equal(masks[:, 0], masks[:, 3])  # it moves
    ys, xs = np.nonzero(masks[0, 0].numpy())
    assert pretrain.mask_boxes(masks[:, 0])[0].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]


def test_stage_2_lowers_the_loss_and_leaves_every_stage_1_tensor_bit_identical(tmp_path, capsys):
    out = tmp_path / "sam2_tiny.pth"
    out.write_bytes(pretrain.DEFAULT_CHECKPOINT.read_bytes())
    pretrain.main(["--stage", "memory", "--memory-steps", "3", "--videos", "1", "--clip-frames", "3",
                   "--eval-videos", "1", "--eval-frames", "3", "--out", str(out)])
    assert "held-out J" in capsys.readouterr().out
    before = torch.load(pretrain.DEFAULT_CHECKPOINT, weights_only=True)
    after = torch.load(out, weights_only=True)
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(pretrain.memory_parameter(name) for name in changed)


def test_memory_steps_lower_the_tracking_loss_on_a_fixed_clip(shipped):
    torch.manual_seed(0)
    sam = pretrain.load_tiny_sam2(pretrain.DEFAULT_CHECKPOINT).train()
    fresh = build_sam2_model(*TINY_SAM2, seed=0).state_dict()  # where stage 2 starts: stage 1's untrained memory
    sam.load_state_dict({name: fresh[name] if pretrain.memory_parameter(name) else value
                         for name, value in sam.state_dict().items()})
    optimizer = torch.optim.AdamW(
        [p.requires_grad_(True) for name, p in sam.named_parameters() if pretrain.memory_parameter(name)], lr=1e-3)
    clip = pretrain.sample_videos(np.random.default_rng(5), 2, 3)
    losses = [pretrain.memory_train_step(sam, optimizer, clip) for _ in range(6)]
    assert losses[-1] < 0.8 * losses[0]


def test_stage_1_writes_a_strictly_loadable_fp16_checkpoint(tmp_path, capsys):
    out = tmp_path / "sam2_tiny.pth"
    pretrain.main(["--stage", "image", "--steps", "1", "--batch-size", "1", "--eval-scenes", "2", "--out", str(out)])
    assert "held-out point-prompt IoU" in capsys.readouterr().out
    pretrain.load_tiny_sam2(out)


def test_missing_or_corrupt_checkpoint_says_how_to_remake_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain_tiny_sam2.py"):
        pretrain.load_tiny_sam2(tmp_path / "sam2_tiny.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(pretrain.DEFAULT_CHECKPOINT.read_bytes()[:1000])
    with pytest.raises(ValueError, match="pretrain_tiny_sam2.py"):
        pretrain.load_tiny_sam2(corrupt)
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--stage", "memory", "--out", str(tmp_path / "none.pth")])


@pytest.mark.parametrize("argv, words", [
    (["--steps", "0"], "argument --steps: expected a positive integer, got 0"),
    (["--stage", "memory", "--out", "{tmp}/none.pth"], "--stage memory reads stage 1's checkpoint"),
    (["--out", "{tmp}"], "argument --out: cannot write"),
])
def test_bad_flags_are_one_line(argv, words, tmp_path, capsys):
    with pytest.raises(SystemExit):
        pretrain.parse_args([arg.format(tmp=tmp_path) for arg in argv])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pretrain_tiny_sam2.py: error: ") and words in err, err
