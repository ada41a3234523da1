"""Mean ± std over seeds of results evaluate.py already wrote: one row per experiment, where an
experiment is a run folder PREFIX (seed 0) and its reruns beside it: PREFIX-seed1, PREFIX-seed2, ...
(train.py --seed N's default run folder) or PREFIX-s1, PREFIX-s2, ... (an --out named so).

    python benchmarks/seed_spread.py runs-ablation/e3-baseline runs-ablation/e3-loss-bce runs-ablation/e3-loss-dice

Reads eval-<result>.json in each folder (default `mask-1shot-1000ep-seed0`: seed 0's 1000 test
episodes, whichever seed trained the run) and, where present, the `-base` result of Table 13. The
std is the sample standard deviation (n - 1), the spread a reader should expect from one more seed.
Nothing is evaluated here: run evaluate.py on each folder first.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np


def runs_of(prefix: Path) -> dict[int, Path]:
    """{seed: folder} for PREFIX (seed 0) and PREFIX-seed<N> / PREFIX-s<N> beside it."""
    found = {0: prefix} if prefix.is_dir() else {}
    for folder in prefix.parent.glob(f"{prefix.name}-s*"):
        match = re.fullmatch(re.escape(prefix.name) + r"-s(?:eed)?(\d+)", folder.name)
        if match and folder.is_dir():
            found[int(match.group(1))] = folder
    return dict(sorted(found.items()))


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefixes", nargs="+", type=Path,
                        help="run folders of seed 0; PREFIX-seedN or PREFIX-sN are found beside them")
    parser.add_argument("--result", default="mask-1shot-1000ep-seed0",
                        help="which eval-<result>.json to read (evaluate.result_name)")
    return parser


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    table, missing = {}, []
    for prefix in args.prefixes:
        runs = runs_of(prefix)
        if not runs:
            parser.error(f"{prefix}: no such run folder (nor {prefix.name}-seedN or -sN beside it)")
        row = {"seeds": [], "miou": [], "fbiou": [], "base": []}
        for seed, folder in runs.items():
            path = folder / f"eval-{args.result}.json"
            if not path.exists():
                missing.append(str(path))
                continue
            result = json.loads(path.read_text())
            row["seeds"].append(seed)
            row["miou"].append(result["miou"])
            row["fbiou"].append(result["fbiou"])
            base = folder / f"eval-{args.result}-base.json"
            if base.exists():
                row["base"].append(json.loads(base.read_text())["miou"])
        if row["seeds"]:
            table[str(prefix)] = row
    width = max([len("experiment"), *map(len, table)])
    print(f"{'experiment':<{width}} {'seeds':<8} {'mIoU per seed':<22} {'mIoU':<12} {'FB-IoU':<12} base mIoU")
    for name, row in table.items():
        per_seed = ", ".join(f"{v:.1f}" for v in row["miou"])
        base = spread(row["base"]) if row["base"] else "-"
        print(f"{name:<{width}} {','.join(map(str, row['seeds'])):<8} {per_seed:<22} {spread(row['miou']):<12} "
              f"{spread(row['fbiou']):<12} {base}")
    if missing:
        print(f"not evaluated yet (skipped): {', '.join(missing)}")
    return table


if __name__ == "__main__":
    main()
