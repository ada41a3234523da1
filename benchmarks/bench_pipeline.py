"""Training steps/s and evaluation episodes/s, with SAM's embedding cache cold, warm, and off.

Both are timed on batches loaded beforehand, so they measure the model; the last column times
evaluation through a loader with 0 workers as well, which adds the rendering of the episodes
(at 512² about 27 episodes/s on one CPU core: what bounded the 28 episodes/s first measured on an
H200; evaluate.py loads with --workers processes, default min(4, CPU threads)).

    python benchmarks/bench_pipeline.py                 # tiny config on the CPU (synthetic benchmark)
    python benchmarks/bench_pipeline.py --real --sam vit_h   # ResNet-50 + SAM at 512² on a GPU

The real configuration uses random weights (the numbers are about speed, not accuracy) on
synthetic scenes rendered at 512², so it needs neither checkpoints nor datasets.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data  # noqa: E402
import evaluate  # noqa: E402
import train  # noqa: E402
from model import SAM_TYPES, VRPSAM, EmbeddingCache, VRPConfig, build_vrp_sam  # noqa: E402


def timed(fn, n: int, device: torch.device) -> float:
    """Seconds per call of fn() over n calls."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def benchmark_model(real: bool, sam: str, *, seed: int | None = None) -> tuple[VRPSAM, int]:
    """(model on the CPU, network image size): ResNet-50 + a real-size SAM at 512² with random
    weights, or the tiny config at 128² with the shipped tiny SAM where it exists."""
    if real:
        config, image_size, checkpoint = VRPConfig(backbone="resnet50", sam=sam), 512, None
    else:
        config, image_size = VRPConfig(backbone="tiny", sam="tiny"), 128
        checkpoint = train.default_sam_checkpoint("tiny")
        checkpoint = checkpoint if checkpoint.exists() else None
    return build_vrp_sam(config, sam_checkpoint=checkpoint, seed=seed), image_size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", action="store_true", help="ResNet-50 + a real-size SAM at 512² (random weights)")
    parser.add_argument("--sam", default="vit_h", choices=SAM_TYPES, help="with --real: any SAM of model.SAM_SPECS")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=5, help="batches timed per setting")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    model, image_size = benchmark_model(args.real, args.sam)
    model = model.to(device)
    train_set = data.build_dataset("synthetic", split="train", fold=0, image_size=image_size)
    test_set = data.build_dataset("synthetic", split="test", fold=0, image_size=image_size,
                                  num_episodes=args.batch_size * args.batches)
    loader = DataLoader(train_set, batch_size=args.batch_size, collate_fn=data.collate_episodes)
    batches = [batch for _, batch in zip(range(args.batches), loader)]
    eval_batches = list(evaluate.episode_loader(test_set, batch_size=args.batch_size, workers=0, device=device))
    optimizer = torch.optim.AdamW(model.learnable_parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=1000)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    class_ids = data.fold_classes("synthetic", 0, "test")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # "cold" computes and stores every embedding; "warm" (the same folder) only reads them back.
        for setting, cache in (("off", None), ("cold", EmbeddingCache(tmp, model.sam, image_size)),
                               ("warm", EmbeddingCache(tmp, model.sam, image_size))):
            model.train()
            batch_iter = iter(batches)
            step = timed(lambda: train.train_step(model, next(batch_iter), optimizer=optimizer, scheduler=scheduler,
                                                  scaler=scaler, cache=cache, device=device), len(batches), device)
            episode = timed(lambda: evaluate.evaluate_episodes(model, test_set, class_ids=class_ids, cache=cache,
                                                               desc="bench", loader=eval_batches), 1, device)
            if setting == "cold":  # the run above filled the cache: start this one from an empty one
                cache = EmbeddingCache(Path(tmp) / "cold-again", model.sam, image_size)
            loaded = timed(
                lambda: evaluate.evaluate_episodes(
                    model, test_set, class_ids=class_ids, batch_size=args.batch_size, cache=cache, desc="bench"
                ),
                1,
                device,
            )
            rows.append((setting, 1 / step, len(test_set) / episode, len(test_set) / loaded))

    print(f"{model.config.backbone} + SAM {model.config.sam} at {image_size}², batch {args.batch_size}, {device}")
    print(f"{'embedding cache':<16}{'train steps/s':>14}{'eval episodes/s':>17}{'with 0-worker loading':>23}")
    for setting, steps, episodes, loaded in rows:
        print(f"{setting:<16}{steps:14.2f}{episodes:17.1f}{loaded:23.1f}")


if __name__ == "__main__":
    main()
