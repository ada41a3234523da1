"""Every frozen SAM side by side: its image features per 1024² image, and segment.py's targets/s
with ResNet-50 in front of it, all rows from one run so that their ratios hold.

    python benchmarks/bench_sams.py --repeats 1 --targets 2     # ViT-H, ViT-B, MobileSAM, SAM 2.1 T / B+ (CPU: ~5 min)
    python benchmarks/bench_sams.py --all --device cuda         # every SAM of model.SAM_SPECS but the tiny ones
    python benchmarks/bench_sams.py --sams vit_t,sam2.1_hiera_t

Random weights (the numbers are about speed, not accuracy), built one SAM at a time. "image
features" is model.sam_image_embeddings on one 1024² image (SAM 2: its encoder and the two
high-resolution levels); "targets/s" is VRPPredictor.predict_batch, one 640×480 target at a time
after the reference was encoded, at the paper's 512² network size: resizing, the backbone, SAM's
features, the prompt encoder and the decoder, with no embedding cache.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import SAM_SPECS, VRPConfig, autocast, build_vrp_sam, sam_image_embeddings  # noqa: E402
from segment import VRPPredictor  # noqa: E402
from synthetic import synthetic_scene  # noqa: E402

DEFAULT_SAMS = ("vit_h", "vit_b", "vit_t", "sam2.1_hiera_t", "sam2.1_hiera_b+")
TINY_SAMS = ("tiny", "tiny_distilled", "sam2_tiny")  # the synthetic benchmark's: bench_model.py times those
IMAGE_SIZE = 512  # the paper's network input (§5.1)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sams", default=",".join(DEFAULT_SAMS), help="comma list of --sam names")
    parser.add_argument("--all", action="store_true", help="every real-size SAM of model.SAM_SPECS (overrides --sams)")
    parser.add_argument("--repeats", type=int, default=3, help="image-feature passes timed per SAM (the median)")
    parser.add_argument("--targets", type=int, default=3, help="targets segmented per SAM")
    parser.add_argument("--target-size", default="640x480", help="WxH of the target images")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def sam_names(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    names = [n for n in SAM_SPECS if n not in TINY_SAMS] if args.all else args.sams.split(",")
    unknown = [n for n in names if n not in SAM_SPECS]
    if unknown:
        parser.error(f"--sams: unknown SAM {', '.join(unknown)}; choose from {', '.join(SAM_SPECS)}")
    return names


@torch.no_grad()
def time_sam(name: str, args: argparse.Namespace, reference, targets) -> dict:
    """One SAM's row: encoder parameters, image-feature seconds per 1024² image, targets/s."""
    device = torch.device(args.device)
    model = build_vrp_sam(VRPConfig(backbone="resnet50", sam=name), seed=0).to(device).eval()
    image = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0)).to(device)
    seconds = []
    for _ in range(args.repeats):
        synchronize(device)
        start = time.perf_counter()
        with autocast(device):
            sam_image_embeddings(model.sam, image)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    predictor = VRPPredictor(model, image_size=IMAGE_SIZE)
    predictor.set_references([reference])
    synchronize(device)
    start = time.perf_counter()
    for target in targets:
        predictor.predict_batch([target])
    synchronize(device)
    per_second = len(targets) / (time.perf_counter() - start)
    return {"sam": name, "family": SAM_SPECS[name].family, "seconds": statistics.median(seconds),
            "encoder_m": sum(p.numel() for p in model.sam.image_encoder.parameters()) / 1e6,
            "targets_per_s": per_second}


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = sam_names(args, parser)
    width, height = (int(v) for v in args.target_size.split("x"))
    rng = np.random.default_rng(0)
    scenes = [synthetic_scene(rng, classes=[1, 7], size=128) for _ in range(args.targets + 1)]
    images = [np.array(Image.fromarray(s.image).resize((width, height), Image.BILINEAR)) for s in scenes]
    reference = (images[0], {"mask": np.array(Image.fromarray(scenes[0].label == 1).resize((width, height)))})

    rows = []
    for name in names:
        rows.append(time_sam(name, args, reference, images[1:]))
        print(f"{name}: {rows[-1]['seconds']:.2f} s per image, {rows[-1]['targets_per_s']:.3f} targets/s", flush=True)
        gc.collect()  # one real-size SAM in memory at a time
    print(f"\n{args.device}, {torch.get_num_threads()} threads; image features of one 1024² image (median of "
          f"{args.repeats}), and segment.py's targets/s with ResNet-50 at {IMAGE_SIZE}² ({args.targets} targets of "
          f"{width}x{height}, batch 1, no cache); random weights")
    first = rows[0]
    print(f"{'SAM':<17}{'family':<8}{'encoder':>9}{'s / image':>11}{'targets/s':>11}{'vs ' + first['sam']:>12}")
    for row in rows:
        print(f"{row['sam']:<17}{row['family']:<8}{row['encoder_m']:8.1f}M{row['seconds']:11.2f}"
              f"{row['targets_per_s']:11.3f}{row['targets_per_s'] / first['targets_per_s']:11.1f}x")


if __name__ == "__main__":
    main()
