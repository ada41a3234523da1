"""Speed of video.py: segmentation seconds per frame, and the J&F metric per 480p object-frame.

    python benchmarks/bench_video.py                  # tiny config on synthetic videos, CPU
    python benchmarks/bench_video.py --real --device cuda   # ResNet-50 + SAM ViT-H at 512², DAVIS-sized frames

Weights are random where no checkpoint is given (speed, not accuracy): the tiny config uses the
shipped tiny SAM; --real builds ResNet-50 + ViT-H from a fixed seed and segments 854x480 frames
of a synthetic video scaled up, 2 objects, as DAVIS 2017 val has on average. The SAM embedding
cache is off, so each frame's embedding is computed once, as on a first run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model  # noqa: E402
import video  # noqa: E402
from synthetic import SyntheticVideos  # noqa: E402


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


def seconds_per_frame(vrp, source, *, image_size: int, propagate: bool, device: torch.device) -> float:
    frames, start = 0, time.perf_counter()
    for sequence in source.sequences:
        truth, _, _ = video.segment_sequence(vrp, source, sequence, propagate=propagate, image_size=image_size)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="ResNet-50 + SAM ViT-H at 512² on 854x480 frames")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    source = SyntheticVideos(classes=[1, 2, 3, 4, 5], seed=0, num_videos=args.videos)
    if args.real:
        vrp = model.build_vrp_sam(model.VRPConfig(backbone="resnet50", sam="vit_h"), seed=0).to(device)
        source, image_size, name = ScaledVideos(source, (854, 480)), 512, "resnet50 + vit_h, 512², 854x480 frames"
    else:
        vrp = model.build_vrp_sam(
            model.VRPConfig(backbone="tiny", sam="tiny"), seed=0,
            sam_checkpoint=Path(__file__).resolve().parents[1] / "checkpoints/sam_tiny_synthetic.pth",
        ).to(device)
        image_size, name = 128, "tiny + tiny SAM, 128², 128x128 frames"
    print(f"{name}, {args.videos} synthetic videos, {device}, {torch.get_num_threads()} threads")
    print(f"{'reference':<28}{'s per frame':>12}")
    for propagate in (False, True):
        label = "first frame + previous" if propagate else "first frame"
        print(
            f"{label:<28}{seconds_per_frame(vrp, source, image_size=image_size, propagate=propagate, device=device):12.3f}"
        )
    j, f = metric_ms()
    print(f"J&F of one 854x480 object-frame: J {j:.1f} ms, F {f:.1f} ms")


if __name__ == "__main__":
    main()
