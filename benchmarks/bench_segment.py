"""segment.py's targets/s: references encoded once (VRPPredictor) vs a full forward per target, and
SAM's embedding cache off / warm.

    python benchmarks/bench_segment.py                         # tiny config on the CPU
    python benchmarks/bench_segment.py --real --sam vit_b --targets 2 --batch-sizes 1   # ResNet-50 + ViT-B, 512²
    python benchmarks/bench_segment.py --real --sam vit_h      # on a GPU

Random weights (the numbers are about speed, not accuracy); targets are synthetic scenes given as
arrays at `--target-size` (so reading files is not timed, but resizing in and out is).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_pipeline import benchmark_model  # noqa: E402  (this folder: the shared model setup)
import data  # noqa: E402
from model import autocast  # noqa: E402
from model import SAM_TYPES, EmbeddingCache, upsample_logits  # noqa: E402
from segment import VRPPredictor  # noqa: E402
from synthetic import synthetic_scene  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", action="store_true", help="ResNet-50 + a real-size SAM at 512² (random weights)")
    parser.add_argument("--sam", default="vit_b", choices=SAM_TYPES, help="with --real: any SAM of model.SAM_SPECS")
    parser.add_argument("--targets", type=int, default=32, help="targets timed per setting")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--target-size", default="640x480", help="WxH of the target images")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    width, height = (int(v) for v in args.target_size.split("x"))

    model, image_size = benchmark_model(args.real, args.sam, seed=0)
    model = model.to(device).eval()
    rng = np.random.default_rng(0)
    scenes = [synthetic_scene(rng, classes=[1, 7], size=128) for _ in range(args.targets + 1)]
    images = [np.array(Image.fromarray(s.image).resize((width, height), Image.BILINEAR)) for s in scenes]
    reference = (images[0], {"mask": np.array(Image.fromarray(scenes[0].label == 1).resize((width, height)))})
    targets = images[1:]

    def run(predictor: VRPPredictor, batch_size: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        for i in range(0, len(targets), batch_size):
            predictor.predict_batch(targets[i:i + batch_size])
        synchronize(device)
        return len(targets) / (time.perf_counter() - start)

    @torch.no_grad()
    def full_forward(predictor: VRPPredictor, batch_size: int) -> float:
        """What evaluate.py does per episode: the reference through the backbone again for every target."""
        ref = predictor.references[0]
        ref_image = torch.from_numpy(data.image_array(ref.image, image_size))[None, None].to(device)
        ref_label = torch.from_numpy(ref.network_label(image_size))[None, None].to(device)
        synchronize(device)
        start = time.perf_counter()
        for i in range(0, len(targets), batch_size):
            chunk = torch.stack(
                [torch.from_numpy(data.image_array(t, image_size)) for t in targets[i : i + batch_size]]
            ).to(device)
            b = len(chunk)
            with autocast(device):
                logits = (
                    model(chunk, ref_image.expand(b, -1, -1, -1, -1), ref_label.expand(b, -1, -1, -1)).float().cpu()
                )
            for row in logits:  # back to the target's size, as the predictor does
                upsample_logits(row[None, None], (height, width)) > 0
        synchronize(device)
        return len(targets) / (time.perf_counter() - start)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            plain = VRPPredictor(model, image_size=image_size)
            plain.set_references([reference])
            cached = VRPPredictor(model, image_size=image_size, cache=EmbeddingCache(tmp, model.sam, image_size))
            cached.set_references([reference])
            run(cached, batch_size)  # fills the cache
            rows.append((batch_size, full_forward(plain, batch_size), run(plain, batch_size), run(cached, batch_size)))

    print(
        f"{model.config.backbone} + SAM {model.config.sam} at {image_size}², {len(targets)} targets of {width}x{height}, "
        f"{device}, {torch.get_num_threads()} threads"
    )
    print(f"{'batch':>5}{'forward per target':>20}{'predictor':>11}{'predictor, cache warm':>23}   (targets/s)")
    for batch_size, forward, plain, warm in rows:
        print(f"{batch_size:>5}{forward:20.2f}{plain:11.2f}{warm:23.2f}")


if __name__ == "__main__":
    main()
