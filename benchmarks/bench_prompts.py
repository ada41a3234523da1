"""Time to simulate one user label (prompts.simulate_annotation) on 512x512 object masks.

    python benchmarks/bench_prompts.py [--draws 200]

Prints, per label kind, the mean and 95th-percentile time over all draws and object shapes,
then the scribble time per shape. Runs numpy single-threaded, as a data-loader worker would.
"""

import os

# Before numpy is imported: one BLAS/OpenMP thread, so the numbers are per core.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import prompts  # noqa: E402

SIZE = 512


def object_shapes() -> dict[str, np.ndarray]:
    """A few 512x512 uint8 objects (0/1/255) of very different areas and outlines."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    shapes = {}

    distance = np.hypot(xs - 256, ys - 256)
    disk = np.zeros((SIZE, SIZE), dtype=np.uint8)
    disk[distance <= 155] = 255  # PASCAL-style ignore border
    disk[distance <= 150] = 1
    shapes["disk r=150 (+255 border)"] = disk

    shapes["full image"] = np.ones((SIZE, SIZE), dtype=np.uint8)

    small = np.zeros((SIZE, SIZE), dtype=np.uint8)
    small[300:316, 100:116] = 1
    shapes["16x16 square"] = small

    ring = ((distance >= 180) & (distance <= 200)).astype(np.uint8)
    shapes["thin ring"] = ring

    rng = np.random.default_rng(0)
    blobs = np.zeros((SIZE, SIZE), dtype=bool)
    for cx, cy, r in zip(rng.uniform(60, 450, 12), rng.uniform(60, 450, 12), rng.uniform(15, 60, 12)):
        blobs |= np.hypot(xs - cx, ys - cy) <= r
    shapes["12 random disks"] = blobs.astype(np.uint8)
    return shapes


def time_draws(object_mask: np.ndarray, kind: str, draws: int) -> np.ndarray:
    """(draws,) milliseconds per simulate_annotation call, each with its own episode generator."""
    times = np.empty(draws)
    for i in range(draws):
        rng = prompts.episode_rng(0, i)
        start = time.perf_counter()
        prompts.simulate_annotation(object_mask, kind, rng)
        times[i] = (time.perf_counter() - start) * 1e3
    return times


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200, help="draws per (kind, shape)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)

    shapes = object_shapes()
    per_shape = {kind: {name: time_draws(mask, kind, args.draws) for name, mask in shapes.items()}
                 for kind in prompts.LABEL_KINDS}

    print(f"simulate_annotation on {SIZE}x{SIZE} masks: {len(shapes)} shapes x {args.draws} draws, "
          "one thread")
    print(f"{'kind':<10}{'mean ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for kind, by_shape in per_shape.items():
        times = np.concatenate(list(by_shape.values()))
        print(f"{kind:<10}{times.mean():>10.3f}{np.percentile(times, 95):>10.3f}{times.max():>10.3f}")

    print(f"\n{'scribble, by shape':<28}{'mean ms':>10}{'p95 ms':>10}")
    for name, times in per_shape["scribble"].items():
        print(f"{name:<28}{times.mean():>10.3f}{np.percentile(times, 95):>10.3f}")


if __name__ == "__main__":
    main()
