"""segment.py --video: one's own video segmented from a reference photo that need not come from it.

The video is fabricated from a synthetic one (a folder of PNG frames, an animated GIF and an mp4
written with PyAV); the reference is another synthetic scene holding an object of the same class.
The model is a tiny VRP-SAM on the shipped tiny SAM with an untrained encoder: these tests are about
what is read and written, not about accuracy.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

import conftest
import model
import segment
from synthetic import SyntheticVideos, synthetic_scene

SAM = model.default_sam_checkpoint("tiny")
FRAMES = 5


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(root, class id): best.pt (a tiny SAM run), ref.png / ref_mask.png (another image),
    frames/ (PNGs), clip.gif and clip.mp4 of one synthetic video."""
    root = tmp_path_factory.mktemp("own_video")
    vrp = model.build_vrp_sam(model.VRPConfig(backbone="tiny", sam="tiny"), sam_checkpoint=SAM, seed=0)
    model.save_checkpoint(root / "best.pt", vrp, args={"dataset": "synthetic", "fold": 0, "label": "mask",
                                                       "image_size": 96, "sam_checkpoint": str(SAM)})
    videos = SyntheticVideos(classes=[1, 2, 3], seed=0, num_videos=1, num_frames=(FRAMES, FRAMES))
    class_id = next(o.class_id for o in videos.layout("video000").objects if o.object_id == 1)
    frames = [videos.load_frame("video000", t)[0] for t in range(FRAMES)]
    (root / "frames").mkdir()
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(root / "frames" / f"f{t:03d}.png")
    pictures = [Image.fromarray(f) for f in frames]
    pictures[0].save(root / "clip.gif", save_all=True, append_images=pictures[1:], duration=100, loop=0)
    write_mp4(root / "clip.mp4", frames)
    reference = synthetic_scene(np.random.default_rng(7), classes=[class_id], num_distractors=1)
    Image.fromarray(reference.image).save(root / "ref.png")
    Image.fromarray((reference.label == class_id).astype(np.uint8) * 255).save(root / "ref_mask.png")
    return root, class_id


def write_mp4(path, frames: list[np.ndarray]) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def argv(files, video, out, *extra) -> list[str]:
    root, _ = files
    return ["--checkpoint", str(root / "best.pt"), "--reference", str(root / "ref.png"),
            "--mask", str(root / "ref_mask.png"), "--video", str(video), "--out", str(out), "--device", "cpu", *extra]


def tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(argv) -> str:
    return conftest.error_line(segment.main, argv)


@pytest.mark.parametrize("video, names", [("frames", [f"f{t:03d}" for t in range(FRAMES)]),
                                          ("clip.gif", [f"{t:05d}" for t in range(FRAMES)]),
                                          ("clip.mp4", [f"{t:05d}" for t in range(FRAMES)])])
def test_a_video_gets_a_mask_per_frame_and_an_overlay_gif(files, tmp_path, video, names):
    root, _ = files
    out = tmp_path / "out"
    lines = segment.main(argv(files, root / video, out, "--propagate"))
    assert sorted(p.name for p in out.iterdir()) == ["masks", "overlay.gif", "results.jsonl"]
    assert sorted(p.stem for p in (out / "masks").iterdir()) == names == [line["frame"] for line in lines]
    for line in lines:
        mask = np.array(Image.open(line["mask"]))
        assert mask.shape == (128, 128) and set(np.unique(mask)) <= {0, 255}
        assert line["area"] == pytest.approx((mask > 0).mean(), abs=1e-6)
    with Image.open(out / "overlay.gif") as gif:  # the reference beside each frame, one GIF frame per frame
        assert gif.n_frames == FRAMES and gif.size[0] > 2 * gif.size[1] - 10
    assert [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] == lines


def test_the_masks_are_the_predictors_per_frame(files, tmp_path):
    """--video without --memory is VRPPredictor.predict on each frame (the PNG frames: lossless)."""
    root, _ = files
    out = tmp_path / "out"
    segment.main(argv(files, root / "frames", out))
    predictor = segment.VRPPredictor.from_checkpoint(root / "best.pt", device="cpu")
    predictor.set_references([(root / "ref.png", {"mask": root / "ref_mask.png"})])
    for t, frame in enumerate(sorted((root / "frames").iterdir())):
        expected = predictor.predict(frame).mask
        assert np.array_equal(np.array(Image.open(out / "masks" / f"f{t:03d}.png")) > 0, expected)


def test_bad_videos_are_one_line_naming_video(files, tmp_path):
    root, _ = files
    out = tmp_path / "out"
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    assert f"--video {tmp_path / 'broken.mp4'} could not be decoded" in error_line(argv(files, tmp_path / "broken.mp4",
                                                                                       out))
    (tmp_path / "broken.gif").write_bytes(b"GIF89a" + bytes(40))
    assert "could not be decoded" in error_line(argv(files, tmp_path / "broken.gif", out))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (64, 48)).save(mixed / "a.png")
    Image.new("RGB", (64, 50)).save(mixed / "b.png")
    assert "--video " + str(mixed) + ": b.png is 64x50 but a.png is 64x48" in error_line(argv(files, mixed, out))
    (tmp_path / "empty").mkdir()
    assert "the folder holds no image" in error_line(argv(files, tmp_path / "empty", out))
    assert "no such file or folder" in error_line(argv(files, tmp_path / "missing.mp4", out))
    assert not out.exists()


def test_bad_flags_and_annotations_are_one_line_before_anything_is_written(files, tmp_path):
    root, _ = files
    out = tmp_path / "out"
    video = root / "frames"
    assert "--memory first: " in error_line(argv(files, video, out, "--memory", "first"))  # a SAM 1 run
    assert "has no memory" in error_line(argv(files, video, out, "--memory", "every"))
    assert "choose one" in error_line(argv(files, video, out, "--memory", "first", "--propagate"))
    assert "--video and --targets" in error_line(argv(files, video, out, "--targets", str(video)))
    args = argv(files, video, out, "--memory", "first")
    args[args.index("--video"):args.index("--video") + 2] = ["--targets", str(video)]
    assert "give --video instead of --targets" in error_line(args)
    blank = tmp_path / "blank.png"
    Image.new("L", (128, 128)).save(blank)
    args = argv(files, video, out)
    args[args.index("--mask") + 1] = str(blank)
    assert "--mask " + str(blank) + " has no object pixel" in error_line(args)
    assert not out.exists()


def test_a_rerun_needs_overwrite_and_a_failed_one_leaves_the_earlier_result_whole(files, tmp_path, monkeypatch):
    root, _ = files
    out = tmp_path / "out"
    segment.main(argv(files, root / "frames", out))
    before = tree(out)
    assert "pass --overwrite" in error_line(argv(files, root / "clip.gif", out))
    real = segment.overlay_frame
    calls = []

    def overlay_then_fail(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(segment, "overlay_frame", overlay_then_fail)
    with pytest.raises(KeyboardInterrupt):
        segment.main(argv(files, root / "clip.gif", out, "--overwrite"))
    assert tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    monkeypatch.undo()
    segment.main(argv(files, root / "clip.gif", out, "--overwrite"))
    assert sorted(p.stem for p in (out / "masks").iterdir()) == [f"{t:05d}" for t in range(FRAMES)]  # no f000 left
    (out / "notes.txt").write_text("mine")
    assert "not results of segment.py --video" in error_line(argv(files, root / "frames", out, "--overwrite"))


def _killed(args: list[str]) -> None:
    """segment.main in a forked child that SIGKILLs itself after its 3rd mask, as kill -9 would."""
    torch.set_num_threads(1)  # a forked child must not wait on the parent's OpenMP threads
    real, count = segment.png_bytes, []

    def png_then_die(*a, **k):
        count.append(1)
        if len(count) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)
    segment.png_bytes = png_then_die
    segment.main(args)


def test_a_killed_run_leaves_the_earlier_result_and_the_next_run_tidies_up(files, tmp_path):
    root, _ = files
    out = tmp_path / "out"
    segment.main(argv(files, root / "frames", out))
    before = tree(out)
    child = multiprocessing.get_context("fork").Process(target=_killed,
                                                        args=(argv(files, root / "clip.gif", out, "--overwrite"),))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        child.join()
    assert child.exitcode == -signal.SIGKILL
    assert tree(out) == before and (tmp_path / f".out.partial-{child.pid}").is_dir()
    segment.main(argv(files, root / "clip.gif", out, "--overwrite"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert len(list((out / "masks").iterdir())) == FRAMES
