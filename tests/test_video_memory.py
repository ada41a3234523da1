"""SAM 2's video memory: sam2_backend.MemoryTracker gives SAM2VideoPredictor's masks in bounded memory,
and video.py --memory / segment.py --video --memory run on it.

The parity reference is the official predictor itself: init_state on a folder of JPEG frames,
add_new_mask on frame 0 for each object, propagate_in_video. Both models are the random tiny SAM 2
(TINY_SAM2) with the same weights; the tracker is fed the predictor's own pixels (state["images"]),
so any difference comes from the tracking alone.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import data
import model
import sam2_backend
import segment
import video
from sam2_backend import TINY_SAM2, TINY_SAM2_NAME, MemoryTracker, build_sam2_model, frame_features
from synthetic import SyntheticVideos, synthetic_scene

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


# --- video.py --memory and segment.py --video --memory, on a VRP-SAM over the random tiny SAM 2 ------------

@pytest.fixture(scope="module")
def sam2_run(tmp_path_factory):
    """A train.py-style checkpoint of a VRP-SAM on the tiny SAM 2 (random SAM 2, untrained encoder)."""
    root = tmp_path_factory.mktemp("sam2_run")
    vrp = model.build_vrp_sam(model.VRPConfig(backbone="tiny", sam=TINY_SAM2_NAME), seed=0)
    torch.save(vrp.sam.state_dict(), root / "sam2_tiny_random.pth")
    model.save_checkpoint(root / "run" / "best.pt", vrp, args={
        "dataset": "synthetic", "fold": 0, "label": "mask", "image_size": 128,
        "sam_checkpoint": str(root / "sam2_tiny_random.pth")})
    return root / "run" / "best.pt"


def video_args(checkpoint, *extra) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--videos", "2", "--frames", "3-4", "--no-cache", *extra]


@pytest.mark.parametrize("mode", video.MEMORY_MODES)
def test_video_py_memory_writes_the_protocols_results(sam2_run, mode, capsys):
    result = video.main(video_args(sam2_run, "--memory", mode))
    out = sam2_run.parent / f"video-synthetic-video-mask-memory-{mode}"
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "video000", "video001"]
    assert json.loads((out / "results.json").read_text())["memory"] == mode == result["memory"]
    assert f"(--memory {mode}" in capsys.readouterr().out
    assert result["target_frames"] == sum(len(list((out / s).glob("*.png"))) - 1 for s in ("video000", "video001"))


def test_memory_gt_follows_sam2_alone_and_first_starts_from_vrp(sam2_run, monkeypatch):
    """gt seeds the tracker with the true masks and never runs the VRP encoder; first runs VRP on frame 0 only."""
    seeds, encoder_calls = [], []
    real_start, real_forward = video.MemorySegmenter.start, model.VRPSAM.forward
    monkeypatch.setattr(video.MemorySegmenter, "start", lambda self, image, masks: seeds.append(masks.clone())
                        or real_start(self, image, masks))
    monkeypatch.setattr(model.VRPSAM, "forward", lambda self, *a, **k: encoder_calls.append(1)
                        or real_forward(self, *a, **k))
    videos = SyntheticVideos(classes=data.fold_classes("synthetic", 0, "test"), seed=0, num_videos=1,
                             num_frames=(4, 4))
    vrp = model.build_from_checkpoint(model.load_checkpoint(sam2_run))
    truth, _, _ = video.segment_sequence(vrp, videos, "video000", memory="gt", image_size=128)
    first = truth[0]
    assert encoder_calls == [] and torch.equal(seeds[0], torch.from_numpy(
        np.stack([first == i for i in range(1, video.count_objects(first) + 1)])))
    video.segment_sequence(vrp, videos, "video000", memory="first", image_size=128)
    assert len(encoder_calls) == 1 and seeds[1].shape[-2:] == (128, 128)  # VRP's frame-0 masks at S x S


def test_bad_memory_flags_are_one_line_before_anything_is_written(sam2_run, tmp_path):
    out = tmp_path / "out"
    for extra, expected in ((["--memory", "first", "--propagate"], "choose one"),
                            (["--memory", "gt", "--label", "point"], "--memory gt seeds SAM 2 with the true"),):
        with pytest.raises(SystemExit) as exit_info:
            video.main(video_args(sam2_run, "--out", str(out), *extra))
        assert expected in str(exit_info.value) and "\n" not in str(exit_info.value)
    sam1 = tmp_path / "sam1" / "best.pt"
    vrp = model.build_vrp_sam(model.VRPConfig(backbone="tiny", sam="tiny"), seed=0)
    model.save_checkpoint(sam1, vrp, args={"dataset": "synthetic", "fold": 0, "label": "mask", "image_size": 128})
    with pytest.raises(SystemExit) as exit_info:
        video.main(video_args(sam1, "--out", str(out), "--memory", "first"))
    assert str(exit_info.value).startswith("video.py: error: --memory first: ") and "has no memory" in \
        str(exit_info.value)
    assert not out.exists()


def test_an_interrupted_memory_run_leaves_the_earlier_result_whole(sam2_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    video.main(video_args(sam2_run, "--out", str(out), "--memory", "first"))
    before = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    real_step = video.MemorySegmenter.step
    steps = []

    def step_then_interrupt(self, image):
        steps.append(1)
        if len(steps) == 4:  # in the second video
            raise KeyboardInterrupt
        return real_step(self, image)

    monkeypatch.setattr(video.MemorySegmenter, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        video.main(video_args(sam2_run, "--out", str(out), "--memory", "every"))
    after = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_own_video_with_memory_from_a_reference_of_another_image(sam2_run, tmp_path):
    videos = SyntheticVideos(classes=[1, 2, 3], seed=0, num_videos=1, num_frames=(5, 5))
    (tmp_path / "frames").mkdir()
    for t in range(5):
        Image.fromarray(videos.load_frame("video000", t)[0]).save(tmp_path / "frames" / f"{t:03d}.png")
    class_id = next(o.class_id for o in videos.layout("video000").objects if o.object_id == 1)
    reference = synthetic_scene(np.random.default_rng(7), classes=[class_id], num_distractors=1)
    Image.fromarray(reference.image).save(tmp_path / "ref.png")
    Image.fromarray((reference.label == class_id).astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    masks = {}
    for mode in segment.SEGMENT_MEMORY_MODES:
        out = tmp_path / mode
        lines = segment.main(["--checkpoint", str(sam2_run), "--reference", str(tmp_path / "ref.png"),
                              "--mask", str(tmp_path / "ref_mask.png"), "--video", str(tmp_path / "frames"),
                              "--out", str(out), "--memory", mode, "--device", "cpu"])
        assert [line["frame"] for line in lines] == [f"{t:03d}" for t in range(5)]
        assert all(line["memory"] == mode for line in lines)
        with Image.open(out / "overlay.gif") as gif:
            assert gif.n_frames == 5
        masks[mode] = [np.array(Image.open(out / "masks" / f"{t:03d}.png")) for t in range(5)]
    # frame 0 is VRP's prediction in both; later frames differ once VRP's prompts join the memory
    assert np.array_equal(masks["first"][0], masks["every"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(masks["first"][1:], masks["every"][1:]))
