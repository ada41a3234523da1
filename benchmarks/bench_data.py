"""Episode items/s on the embedded synthetic benchmark: training and evaluation, 1-shot and 5-shot.

    python benchmarks/bench_data.py                       # 128 px, mask labels
    python benchmarks/bench_data.py --label scribble --image-size 512 --items 100

Also times building the datasets (the class index and the evaluation list). One process, no
DataLoader workers: items/s of one worker; a DataLoader multiplies it by about its worker count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data  # noqa: E402
import prompts  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200, help="items timed per row")
    parser.add_argument("--label", choices=prompts.LABEL_KINDS, default="mask")
    parser.add_argument("--image-size", type=int, default=None, help="S (default: the scenes' 128)")
    parser.add_argument("--fold", type=int, default=0)
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)

    print(f"synthetic fold {args.fold}, label {args.label}, {args.items} items per row, one process")
    print(f"{'split':<6} {'shots':>5} {'build s':>8} {'items/s':>8} {'ms/item':>8}")
    for split in ("train", "test"):
        for shots in (1, 5):
            start = time.perf_counter()
            dataset = data.build_dataset("synthetic", split=split, fold=args.fold, shots=shots, label=args.label,
                                         image_size=args.image_size, num_episodes=args.items)
            built = time.perf_counter() - start
            count = min(args.items, len(dataset))
            dataset[0]  # first-call costs (imports, allocator) are not per-item costs
            start = time.perf_counter()
            for index in range(count):
                dataset[index]
            seconds = time.perf_counter() - start
            print(f"{split:<6} {shots:>5} {built:>8.2f} {count / seconds:>8.1f} {1000 * seconds / count:>8.1f}")


if __name__ == "__main__":
    main()
