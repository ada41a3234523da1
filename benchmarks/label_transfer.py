"""Table 12's shape across label kinds: every encoder (trained on one kind, or on `--label any`)
evaluated with every kind, mIoU on a fold's novel classes, through evaluate.py itself.

    python benchmarks/label_transfer.py --runs runs-labels --dataset synthetic --folds 0

Expects under --runs the train.py runs of the fold(s), one per trained kind (point, scribble,
box, mask, any); rows = the kind an encoder was trained on, columns = the kind it is evaluated with.
Extra arguments go to evaluate.py (e.g. --episodes 1000 --workers 2).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data  # noqa: E402
import evaluate  # noqa: E402
from prompts import LABEL_KINDS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--dataset", choices=data.DATASETS, required=True)
    parser.add_argument("--folds", default="0")
    parser.add_argument("--trained", default=",".join(data.LABEL_CHOICES), help="rows: trained label kinds")
    return parser


def main(argv=None) -> dict:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    table = {}
    for trained in args.trained.split(","):
        with contextlib.redirect_stdout(io.StringIO()):  # evaluate.py's own table, one per row
            result = evaluate.main(["--runs", str(args.runs), "--dataset", args.dataset, "--folds", args.folds,
                                    "--label", "all", "--trained-label", trained, *rest])
        table[trained] = {kind: np.mean([r["miou"] for r in result[f"{kind}/1"].values()]) for kind in LABEL_KINDS}
    print(f"{args.dataset}, fold(s) {args.folds}: mIoU (%), rows = trained with, columns = evaluated with")
    print(f"{'trained':<9}" + "".join(f"{kind:>10}" for kind in LABEL_KINDS) + f"{'mean':>10}")
    for trained, row in table.items():
        print(
            f"{trained:<9}"
            + "".join(f"{row[kind]:10.1f}" for kind in LABEL_KINDS)
            + f"{np.mean(list(row.values())):10.1f}"
        )
    return table


if __name__ == "__main__":
    main()
