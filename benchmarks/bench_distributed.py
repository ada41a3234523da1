"""One process vs torchrun with N processes: training steps/s and validation episodes/s at one total batch.

    python benchmarks/bench_distributed.py                      # tiny config on the CPU (gloo), 1 vs 2 processes
    python benchmarks/bench_distributed.py --device cuda --nproc 4 --args "--dataset pascal --data-root data"

Each setting is a real `train.py` run (one epoch, `--steps-per-epoch` steps, then validation); the
rates come from its metrics.jsonl, so process start-up is not counted. A first run fills SAM's
embedding cache, so every timed run reads it warm. torchrun gives each process one CPU thread
(OMP_NUM_THREADS=1); the single process is timed with the default thread count and with one.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], out: Path, env: dict) -> dict:
    subprocess.run(command + ["--out", str(out)], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2, help="processes of the torchrun setting")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8, help="total batch")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--val-episodes", type=int, default=160)
    parser.add_argument("--args", default="--dataset synthetic", help="further train.py arguments")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train = ["train.py", *shlex.split(args.args), "--epochs", "1", "--steps-per-epoch", str(args.steps),
                 "--batch-size", str(args.batch_size), "--val-episodes", str(args.val_episodes), "--workers", "0",
                 "--device", args.device, "--cache-dir", str(tmp / "cache")]
        env = dict(os.environ)
        one_thread = dict(env, OMP_NUM_THREADS="1")
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}"]
        run([sys.executable, *train], tmp / "warm-up", env)
        settings = [("1 process", [sys.executable, *train], env)]
        if args.device == "cpu":
            settings.append(("1 process, 1 thread", [sys.executable, *train], one_thread))
        settings.append((f"torchrun, {args.nproc} processes", torchrun + train, env))
        print(f"train.py {args.args} on {args.device}: total batch {args.batch_size}, {args.steps} steps, "
              f"{args.val_episodes} validation episodes, warm embedding cache")
        print(
            f"{'setting':<26}{'batch/process':>14}{'steps/s':>9}{'images/s':>10}{'val episodes/s':>16}{'val mIoU':>10}"
        )
        for n, (name, command, settings_env) in enumerate(settings):
            line = run(command, tmp / f"run{n}", settings_env)
            processes = args.nproc if name.startswith("torchrun") else 1
            val_s = line["time_s"] - line["train_s"]
            print(
                f"{name:<26}{args.batch_size // processes:>14}{line['steps_per_s']:>9.2f}"
                f"{line['steps_per_s'] * args.batch_size:>10.1f}{args.val_episodes / val_s:>16.1f}{line['miou']:>10.1f}"
            )


if __name__ == "__main__":
    main()
