"""SAM 2's video memory (sam2_backend.MemoryTracker): the masks of SAM2VideoPredictor, in bounded memory.

The reference is the official predictor itself: init_state on a folder of JPEG frames, add_new_mask
on frame 0 for each object, propagate_in_video. Both models are the random tiny SAM 2 (TINY_SAM2)
with the same weights; the tracker is fed the predictor's own pixels (state["images"]), so any
difference comes from the tracking alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import sam2_backend
from sam2_backend import TINY_SAM2, MemoryTracker, build_sam2_model, frame_features

VIDEO_PREDICTOR = "++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor"
# Windows shrunk so that a few frames already drop memories (after 3 frames) and pointers (after 4).
SMALL_WINDOWS = ("++model.num_maskmem=3", "++model.max_obj_ptrs_in_encoder=4")


def moving_squares(frames: int, height: int = 48, width: int = 64) -> tuple[list[np.ndarray], np.ndarray]:
    """RGB frames (H, W, 3) of two coloured squares moving over a fixed noise background, and the
    squares' masks in frame 0, (2, H, W) bool."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    images, first = [], None
    for t in range(frames):
        image, masks = background.copy(), np.zeros((2, height, width), bool)
        masks[0, 8:24, 4 + 2 * t:20 + 2 * t] = True
        masks[1, 28:44, 44 - t:60 - t] = True
        image[masks[0]], image[masks[1]] = (240, 40, 40), (40, 40, 240)
        images.append(image)
        first = masks if first is None else first
    return images, first


@pytest.fixture(scope="module")
def tiny_sam2():
    return build_sam2_model(*TINY_SAM2)


def test_memory_tracking_equals_sam2_video_predictor(tmp_path):
    config, overrides = TINY_SAM2
    sam = build_sam2_model(config, overrides + SMALL_WINDOWS, seed=1)
    official = build_sam2_model(config, overrides + SMALL_WINDOWS + (VIDEO_PREDICTOR,), seed=2)
    official.load_state_dict(sam.state_dict())
    images, first = moving_squares(8)
    for t, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{t:05d}.jpg", quality=95)
    with torch.inference_mode():
        state = official.init_state(str(tmp_path))
        for k, mask in enumerate(first):
            official.add_new_mask(state, 0, k + 1, mask)
        expected = {frame: logits for frame, _, logits in official.propagate_in_video(state)}  # (2, 1, H, W)

        tracker = MemoryTracker(sam, num_frames=len(images))
        for t in range(len(images)):
            features = frame_features(sam, state["images"][t][None].float(), 2)
            low_res = tracker.start(features, torch.from_numpy(first)) if t == 0 else tracker.step(features)
            # at the video's size, as SAM2VideoPredictor returns its masks
            logits = F.interpolate(low_res, size=first.shape[-2:], mode="bilinear", align_corners=False)
            # Batching the objects moves the logits by ~2e-7 (the predictor runs them one by one);
            # keeping memories in float32 instead of SAM 2's bfloat16 would move them by ~3e-6.
            torch.testing.assert_close(logits, expected[t], atol=1e-6, rtol=0)
            assert torch.equal(logits > 0, expected[t] > 0)
            assert tracker.kept_memories <= sam.num_maskmem and tracker.kept_pointers <= sam.max_obj_ptrs_in_encoder - 1
    assert len(expected) == len(images) and (expected[len(images) - 1] > 0).any()
    assert (tracker.kept_memories, tracker.kept_pointers) == (3, 3)  # the windows were full, and kept bounded


def test_memory_stays_bounded_on_a_20_frame_video(tiny_sam2):
    sam = tiny_sam2
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 20:40, 16:36] = True
    tracker = MemoryTracker(sam, num_frames=20)
    counts = []
    for t in range(20):
        features = frame_features(sam, torch.randn(1, 3, 256, 256, generator=generator), 1)
        tracker.start(features, mask) if t == 0 else tracker.step(features)
        counts.append((tracker.kept_memories, tracker.kept_pointers))
        held = tracker.outputs["non_cond_frame_outputs"]
        # what is kept is what the next frame reads: the last num_maskmem - 1 memories, 15 pointers
        assert {f for f, out in held.items() if "maskmem_features" in out} == set(range(max(1, t - 5), t + 1))
        assert set(held) == set(range(max(1, t - 14), t + 1))
    assert max(m for m, _ in counts) == sam.num_maskmem == 7
    assert max(p for _, p in counts) == sam.max_obj_ptrs_in_encoder - 1 == 15
    assert counts[-1] == (7, 15)


def test_prompt_tokens_are_decoded_on_the_memory_conditioned_features():
    """step(prompt_tokens=...) decodes the given tokens with one mask output; given the very tokens
    SAM 2 makes of "no prompt" (and one mask output, as this config asks), it is SAM 2's own step."""
    config, overrides = TINY_SAM2
    sam = build_sam2_model(config, overrides + ("++model.multimask_output_in_sam=false",))
    generator = torch.Generator().manual_seed(0)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 8:24, 8:24], masks[1, 36:56, 28:48] = True, True
    no_prompt, _ = sam.sam_prompt_encoder(points=(torch.zeros(2, 1, 2), -torch.ones(2, 1, dtype=torch.int32)),
                                          boxes=None, masks=None)  # (2, 2, 256)
    plain, prompted = MemoryTracker(sam, num_frames=4), MemoryTracker(sam, num_frames=4)
    with torch.no_grad():
        for t in range(4):
            features = frame_features(sam, torch.randn(1, 3, 256, 256, generator=generator), 2)
            if t == 0:
                assert torch.equal(plain.start(features, masks), prompted.start(features, masks))
            else:
                assert torch.equal(plain.step(features), prompted.step(features, prompt_tokens=no_prompt))
        other = torch.randn(2, 50, 256, generator=generator)
        features = frame_features(sam, torch.randn(1, 3, 256, 256, generator=generator), 2)
        assert not torch.equal(plain.step(features), prompted.step(features, prompt_tokens=other))
    assert not sam.sam_prompt_encoder._forward_hooks  # the hook that passed the tokens is gone


def test_a_tracker_is_started_once_then_stepped(tiny_sam2):
    tracker = MemoryTracker(tiny_sam2, num_frames=3)
    features = frame_features(tiny_sam2, torch.zeros(1, 3, 64, 64), 1)  # resized to SAM 2's input
    with pytest.raises(RuntimeError, match="call start"):
        tracker.step(features)
    tracker.start(features, torch.ones(1, 64, 64, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="start\\(\\) is for frame 0"):
        tracker.start(features, torch.ones(1, 64, 64, dtype=torch.bool))
    assert sam2_backend.MemoryTracker(tiny_sam2, num_frames=3).kept_memories == 0
