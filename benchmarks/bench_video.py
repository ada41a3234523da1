"""Speed and memory of video.py: seconds per frame of each way to follow objects, the peak memory of
a long video through SAM 2's memory, and the J&F metric per 480p object-frame.

    python benchmarks/bench_video.py                        # tiny configs on synthetic videos, CPU
    python benchmarks/bench_video.py --long 1000            # + one 1000-frame video: memory stays bounded
    python benchmarks/bench_video.py --long 1000 --official # + SAM2VideoPredictor on it, which keeps every frame
    python benchmarks/bench_video.py --real --sam sam2.1_hiera_t,sam2.1_hiera_b+ --frames 4   # real sizes

Weights are random where no checkpoint is given (speed and memory, not accuracy): the tiny configs
use the shipped tiny SAM and the tiny SAM 2 (checkpoints/sam2_tiny_synthetic.pth if it exists);
--real builds ResNet-50 + each --sam from a fixed seed (SAM 2 at its 1024² input) and segments
854x480 frames of synthetic videos scaled up, 2 objects, as DAVIS 2017 val has on average. The SAM
embedding cache is off, so each frame's embedding is computed once, as on a first run.

--long N streams one N-frame synthetic video through VRPPredictor.predict_video(memory="first"),
the own-video path (nothing per frame is kept), and reports the process's resident memory along
the way and at its peak (ru_maxrss), with the most memories and pointers SAM 2's state held.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import model  # noqa: E402
import segment  # noqa: E402
import video  # noqa: E402
from synthetic import SyntheticVideos, synthetic_scene  # noqa: E402

TINY_SAM2_NAME = "sam2_tiny"
TINY_CHECKPOINTS = {"tiny": ROOT / "checkpoints/sam_tiny_synthetic.pth",
                    TINY_SAM2_NAME: ROOT / "checkpoints/sam2_tiny_synthetic.pth"}
# (label, propagate, memory) of each row; memory rows run on SAM 2 only
WAYS = {"frame": ("VRP per frame", False, None), "propagate": ("VRP + previous frame", True, None),
        "first": ("SAM 2 memory, VRP seeds", False, "first"), "every": ("memory + VRP every frame", False, "every"),
        "gt": ("SAM 2 memory, truth seeds", False, "gt")}


class ScaledVideos:
    """A synthetic video source with its frames resized to (width, height): DAVIS-sized inputs."""

    def __init__(self, source: SyntheticVideos, size: tuple[int, int]):
        self.source, self.size, self.sequences = source, size, source.sequences

    def frame_ids(self, sequence):
        return self.source.frame_ids(sequence)

    def image_id(self, sequence, index):
        return f"{self.source.image_id(sequence, index)}-{self.size[0]}x{self.size[1]}"

    def load_frame(self, sequence, index):
        image, annotation = self.source.load_frame(sequence, index)
        return (np.asarray(Image.fromarray(image).resize(self.size, Image.BILINEAR)),
                np.asarray(Image.fromarray(annotation).resize(self.size, Image.NEAREST)))


def seconds_per_frame(vrp, source, *, image_size: int, propagate: bool, memory: str | None,
                      device: torch.device) -> float:
    frames, start = 0, time.perf_counter()
    for sequence in source.sequences:
        truth, _, _ = video.segment_sequence(vrp, source, sequence, propagate=propagate, memory=memory,
                                             image_size=image_size)
        frames += len(truth) - 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / frames


def metric_ms(repeats: int = 20) -> tuple[float, float]:
    """Milliseconds for J and for F of one 854x480 object-frame (two overlapping discs)."""
    yy, xx = np.mgrid[:480, :854]
    truth = (yy - 240) ** 2 + (xx - 400) ** 2 < 150 ** 2
    prediction = (yy - 246) ** 2 + (xx - 410) ** 2 < 140 ** 2
    start = time.perf_counter()
    for _ in range(repeats):
        video.region_similarity(truth, prediction)
    j = (time.perf_counter() - start) / repeats * 1000
    start = time.perf_counter()
    for _ in range(repeats):
        video.boundary_f_measure(truth, prediction)
    return j, (time.perf_counter() - start) / repeats * 1000


def resident_mb() -> float:
    """The process's resident memory now (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    """The process's peak resident memory so far (ru_maxrss, KB on Linux), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def long_video(frames: int, device: torch.device, official: bool) -> None:
    """One `frames`-frame synthetic video streamed through predict_video(memory="first")."""
    vrp = build(TINY_SAM2_NAME, device)
    predictor = segment.VRPPredictor(vrp, image_size=128)
    source = SyntheticVideos(classes=[1, 2, 3, 4, 5], seed=0, num_videos=1, num_frames=(frames, frames))
    layout = source.layout("video000")
    class_id = next(o.class_id for o in layout.objects if o.object_id == 1)
    reference = synthetic_scene(np.random.default_rng(1), classes=[class_id], num_distractors=1)
    predictor.set_references([(reference.image, {"mask": reference.label == class_id})])
    kept = []
    real_step = video.MemorySegmenter.step

    def step(self, image):  # counts what SAM 2's state holds after each frame
        out = real_step(self, image)
        kept.append((self.tracker.kept_memories, self.tracker.kept_pointers))
        return out

    video.MemorySegmenter.step = step
    rendering = [0.0]

    def stream():  # renders each frame when asked: a long video is never held whole; its time is left out
        for t in range(frames):
            began = time.perf_counter()
            frame = source.load_frame("video000", t)[0]
            rendering[0] += time.perf_counter() - began
            yield frame

    marks, start = {}, time.perf_counter()
    print(f"\nlong video: {frames} frames of 128 px, 1 object, VRP (tiny) seeds SAM 2's memory (tiny SAM 2), "
          f"streamed through VRPPredictor.predict_video; resident memory at start {resident_mb():.0f} MB")
    for t, _ in enumerate(predictor.predict_video(stream(), memory="first", num_frames=frames), 1):
        if t in (10, frames // 10, frames // 2, frames):
            marks[t] = resident_mb()
    seconds = (time.perf_counter() - start - rendering[0]) / frames
    video.MemorySegmenter.step = real_step
    print("resident MB after frame " + ", ".join(f"{t}: {mb:.0f}" for t, mb in sorted(marks.items())))
    print(f"peak resident {peak_mb():.0f} MB; {seconds:.3f} s per frame (rendering the frames left out); SAM 2's "
          f"state held at most "
          f"{max(m for m, _ in kept)} memories and {max(p for _, p in kept)} pointers")
    if official:
        official_video(vrp.sam, source, frames)


def official_video(sam, source: SyntheticVideos, frames: int) -> None:
    """SAM2VideoPredictor (same weights) on the same frames, as JPEGs: its state keeps every frame."""
    from sam2_backend import build_sam2_model, TINY_SAM2

    predictor = build_sam2_model(TINY_SAM2[0], TINY_SAM2[1] + (
        "++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor",))
    predictor.load_state_dict(sam.state_dict())
    with tempfile.TemporaryDirectory() as folder:
        for t in range(frames):
            Image.fromarray(source.load_frame("video000", t)[0]).save(f"{folder}/{t:05d}.jpg", quality=95)
        before, start = resident_mb(), time.perf_counter()
        with torch.inference_mode():
            state = predictor.init_state(folder)
            predictor.add_new_mask(state, 0, 1, source.load_frame("video000", 0)[1] == 1)
            marks = {}
            for t, _ in enumerate(predictor.propagate_in_video(state), 1):
                if t in (frames // 10, frames // 2, frames):
                    marks[t] = resident_mb()
        seconds = (time.perf_counter() - start) / frames
    print(f"SAM2VideoPredictor on the same {frames} frames: resident MB {before:.0f} before init_state, then after "
          "frame " + ", ".join(f"{t}: {mb:.0f}" for t, mb in sorted(marks.items()))
          + f"; peak {peak_mb():.0f} MB; {seconds:.3f} s per frame (JPEG reading included)")


def build(sam: str, device: torch.device, backbone: str = "tiny") -> model.VRPSAM:
    checkpoint = TINY_CHECKPOINTS.get(sam)
    return model.build_vrp_sam(model.VRPConfig(backbone=backbone, sam=sam), seed=0,
                               sam_checkpoint=checkpoint if checkpoint and checkpoint.is_file() else None).to(device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="ResNet-50 + each --sam at its real size, 854x480 frames")
    parser.add_argument("--sam", default=None,
                        help="comma list of SAM types (default: tiny,sam2_tiny; --real: vit_h)")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default: 10-20; --real: 4)")
    parser.add_argument("--ways", default=",".join(WAYS), help=f"comma list of rows, of {', '.join(WAYS)}")
    parser.add_argument("--long", type=int, default=0, help="also one video of this many frames (memory)")
    parser.add_argument("--official", action="store_true", help="with --long: SAM2VideoPredictor on it too")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if set(args.ways.split(",")) - set(WAYS):
        parser.error(f"argument --ways: choose among {', '.join(WAYS)}, got {args.ways!r}")
    device = torch.device(args.device)
    frames = (args.frames, args.frames) if args.frames else ((4, 4) if args.real else (10, 20))
    source = SyntheticVideos(classes=[1, 2, 3, 4, 5], seed=0, num_videos=args.videos, num_frames=frames)
    sams = (args.sam or ("vit_h" if args.real else f"tiny,{TINY_SAM2_NAME}")).split(",")
    if args.real:
        source, image_size, name = ScaledVideos(source, (854, 480)), 512, "ResNet-50, 512², 854x480 frames"
    else:
        image_size, name = 128, "tiny backbone, 128², 128x128 frames"
    print(f"{name}, {args.videos} synthetic videos of {frames[0]}-{frames[1]} frames, {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'SAM':<18}{'way':<28}{'s per frame':>12}")
    for sam in sams:
        vrp = build(sam, device, backbone="resnet50" if args.real else "tiny")
        for label, propagate, memory in (WAYS[way] for way in args.ways.split(",")):
            if memory is not None and not video.is_sam2(sam):
                continue
            seconds = seconds_per_frame(vrp, source, image_size=image_size, propagate=propagate, memory=memory,
                                        device=device)
            print(f"{sam:<18}{label:<28}{seconds:12.3f}", flush=True)
    if args.long:
        long_video(args.long, device, args.official)
    j, f = metric_ms()
    print(f"J&F of one 854x480 object-frame: J {j:.1f} ms, F {f:.1f} ms")


if __name__ == "__main__":
    main()
