"""Speed of model.py alone: one training step (forward + backward + AdamW) and one evaluation episode.

    python benchmarks/bench_model.py                      # tiny/tiny on the CPU; + ResNet-50 with
                                                          # SAM ViT-B and ViT-H when CUDA is there
    python benchmarks/bench_model.py --rows resnet50:vit_h --device cuda --steps 20

Weights are random (the numbers are about speed, not accuracy) and inputs are random tensors of
the real shapes, so nothing needs checkpoints or datasets. On CUDA everything runs under bf16
autocast, as training does. A training step uses cached SAM image embeddings (how train.py runs
after the first epoch); an episode computes the target's SAM embedding (an uncached evaluation).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model  # noqa: E402


def timed(fn: Callable[[], object], steps: int, device: torch.device, warmup: int = 2) -> float:
    """Milliseconds per call of fn(), after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps * 1000


SYNTHETIC_SAMS = ("tiny", "tiny_distilled", "sam2_tiny")  # the synthetic benchmark's, at its 128² images


def bench_row(backbone: str, sam_type: str, *, device: torch.device, image_size: int, batch_size: int,
              steps: int) -> dict:
    config = model.VRPConfig(backbone=backbone, sam=sam_type)
    vrp = model.build_vrp_sam(config, seed=0).to(device)
    autocast = model.autocast(device)  # the scripts' own: bf16 on CUDA (fp16 where bf16 is unsupported)
    g = torch.Generator(device=device).manual_seed(0)
    s = image_size

    def episode_inputs(batch: int, shots: int):
        target = torch.randn(batch, 3, s, s, generator=g, device=device)
        references = torch.randn(batch, shots, 3, s, s, generator=g, device=device)
        labels = (torch.rand(batch, shots, s, s, generator=g, device=device) > 0.5).float()
        return target, references, labels

    target, references, labels = episode_inputs(batch_size, 1)
    mask = (torch.rand(batch_size, s, s, generator=g, device=device) > 0.5).long()
    with torch.no_grad(), autocast:
        embeddings = model.sam_image_embeddings(vrp.sam, target[:1]).float().expand(batch_size, -1, -1, -1).contiguous()
    optimizer = torch.optim.AdamW(vrp.learnable_parameters(), lr=1e-4)

    def train_step() -> None:
        vrp.train()
        with autocast:
            logits = vrp(target, references, labels, embeddings)
        loss = model.vrp_loss(logits.float(), mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def episode(shots: int) -> Callable[[], object]:
        inputs = episode_inputs(1, shots)

        def run() -> None:
            vrp.eval()
            with torch.no_grad(), autocast:
                vrp(*inputs)
        return run

    def sam_encoder() -> None:
        with torch.no_grad(), autocast:
            model.sam_image_embeddings(vrp.sam, target[:1])

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    row = {
        "config": f"{backbone}/{sam_type}",
        "device": device.type + (" bf16" if device.type == "cuda" else f" fp32 ×{torch.get_num_threads()}"), "size": s,
        "learnable": vrp.num_learnable_parameters(),
        f"train step B={batch_size} (ms)": timed(train_step, steps, device),
        "episode 1-shot (ms)": timed(episode(1), steps, device),
        "episode 5-shot (ms)": timed(episode(5), steps, device),
        "SAM encoder (ms/img)": timed(sam_encoder, steps, device),
    }
    if device.type == "cuda":
        row["peak GPU (MiB)"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def print_table(rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    def cell(value: object) -> str:
        return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(r, widths)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=None, metavar="BACKBONE:SAM",
                        help="configurations to time (default: tiny:tiny on the CPU, plus resnet50:vit_b and "
                             "resnet50:vit_h on CUDA when available)")
    parser.add_argument("--device", default=None, help="device for the non-tiny rows (default: cuda when available)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="S (default: 128 for the tiny SAMs, the synthetic benchmark's size; 512 otherwise)")
    parser.add_argument("--batch-size", type=int, default=8, help="training batch (paper: 8)")
    parser.add_argument("--steps", type=int, default=5, help="timed calls per measurement")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads (torch.set_num_threads); 1 is much faster when another process keeps a core busy",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cuda = torch.cuda.is_available()
    rows = args.rows or (["tiny:tiny"] + (["resnet50:vit_b", "resnet50:vit_h"] if cuda else []))
    results = []
    for spec in rows:
        backbone, _, sam_type = spec.partition(":")
        if backbone not in model.BACKBONES or sam_type not in model.SAM_TYPES:
            parser.error(
                f"--rows {spec}: expected BACKBONE:SAM with BACKBONE in {model.BACKBONES} and SAM in {model.SAM_TYPES}"
            )
        device = torch.device(
            "cpu" if spec == "tiny:tiny" and args.device is None else args.device or ("cuda" if cuda else "cpu")
        )
        image_size = args.image_size or (128 if sam_type in SYNTHETIC_SAMS else 512)
        results.append(bench_row(backbone, sam_type, device=device, image_size=image_size,
                                 batch_size=args.batch_size, steps=args.steps))
    print_table(results)


if __name__ == "__main__":
    main()
