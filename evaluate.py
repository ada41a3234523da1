"""Evaluate trained VRP encoders on fixed episodes (paper §5.1 "Evaluation", Tables 2, 7, 10, 12).

    python evaluate.py --shots 5                       # every run under runs/, 5-shot
    python evaluate.py --runs runs --shots 1,5 --label all
    python evaluate.py --dataset synthetic --untrained # the same frozen parts with an untrained encoder
    python evaluate.py --dataset davis2017 --checkpoint PATH   # video, Table 16: handed to video.py

Each fold is evaluated on N fixed episodes (default 1000, as in the paper), drawn by data.py from a
seed, so every run, batch size and worker count sees the same pairs; the episode list's hash is
stored with the results. The metric is the few-shot standard of HSNet, which the authors use:
per class, foreground intersection and union are summed over all its episodes, then
mIoU = mean over the fold's classes of their IoU, and FB-IoU = mean of the background and
foreground IoU summed over all episodes. Pixels labelled 255 are ignored.

Exposes `IoUMeter`, `evaluate_episodes` (used by train.py for validation) and `main`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import DataLoader
from tqdm import tqdm

import data
from model import EmbeddingCache, VRPConfig, build_vrp_sam, load_checkpoint, upsample_logits
from prompts import LABEL_KINDS

IGNORE = 255


class IoUMeter:
    """Per-class intersection and union of background (0) and foreground (1), HSNet's convention."""

    def __init__(self, class_ids):
        self.class_ids = list(class_ids)
        self.intersection = {c: np.zeros(2) for c in self.class_ids}
        self.union = {c: np.zeros(2) for c in self.class_ids}

    def update(self, prediction: torch.Tensor, target: torch.Tensor, class_ids) -> None:
        """prediction (B, H, W) bool; target (B, H, W) in {0, 1, 255}; class_ids: B ints."""
        valid = target != IGNORE
        truth = target == 1
        for b, class_id in enumerate(class_ids):
            for value, (p, t) in enumerate(((~prediction[b], ~truth[b]), (prediction[b], truth[b]))):
                self.intersection[int(class_id)][value] += (p & t & valid[b]).sum().item()
                self.union[int(class_id)][value] += ((p | t) & valid[b]).sum().item()

    def class_iou(self) -> dict[int, float]:
        """Foreground IoU (%) of each class that had at least one episode."""
        return {c: 100 * self.intersection[c][1] / max(self.union[c][1], 1) for c in self.class_ids if self.union[c][1] > 0}

    def miou(self) -> float:
        per_class = self.class_iou()
        return float(np.mean(list(per_class.values()))) if per_class else math.nan

    def fbiou(self) -> float:
        intersection = sum(self.intersection.values())
        union = sum(self.union.values())
        return float(np.mean(100 * intersection / np.maximum(union, 1)))


def autocast(device: torch.device):
    """bf16 autocast on CUDA (fp16 where bf16 is unsupported); plain fp32 on the CPU."""
    if device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def predict(model, batch: dict, cache: EmbeddingCache | None, device: torch.device) -> torch.Tensor:
    """Target logits (B, S, S) for a batch of episodes; SAM's target embeddings come from the
    on-disk cache when one is given (computed and stored on a miss), else inside the model."""
    target = batch["target_image"].to(device, non_blocking=True)
    with autocast(device):
        embeddings = None if cache is None else cache.embed(model.sam, target, list(batch["target_id"])).to(device)
        return model(target, batch["reference_images"].to(device, non_blocking=True),
                     batch["reference_labels"].to(device, non_blocking=True), image_embeddings=embeddings)


@torch.no_grad()
def evaluate_episodes(
    model,
    dataset,
    *,
    class_ids,
    batch_size: int = 8,
    workers: int = 0,
    cache: EmbeddingCache | None = None,
    original_size: bool = False,
    save_vis: int = 0,
    vis_dir: Path | None = None,
    desc: str = "evaluate",
) -> dict:
    """Run every episode of `dataset` once; returns {"miou", "fbiou", "class_iou", "episodes"}.

    class_ids: the fold's test classes (data.fold_classes), over which mIoU averages.

    original_size: compare at each target's original resolution (HSNet's option) instead of
    the network's S x S (the authors' protocol, the default).
    """
    device = next(model.learnable_parameters()).device
    model.eval()
    meter = IoUMeter(class_ids)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", collate_fn=data.collate_episodes)
    saved = 0
    for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        logits = predict(model, batch, cache, device).float().cpu()
        if original_size:
            for b, mask in enumerate(batch["target_mask_original"]):
                upsampled = upsample_logits(logits[b][None, None], mask.shape)[0]
                meter.update(upsampled > 0, mask[None], [batch["class_id"][b]])
        else:
            meter.update(logits > 0, batch["target_mask"], batch["class_id"])
        for b in range(min(save_vis - saved, len(logits))):
            save_visualisation(vis_dir / f"episode{int(batch['episode'][b]):05d}.png", batch, b, logits[b] > 0)
            saved += 1
    return {"miou": meter.miou(), "fbiou": meter.fbiou(), "class_iou": meter.class_iou(), "episodes": len(dataset)}


def _overlay(image: np.ndarray, mask: np.ndarray, colour) -> np.ndarray:
    """Tint `mask` and outline it in `colour`; the outline stays readable on objects of any colour."""
    out = image.astype(np.float32)
    out[mask] = 0.55 * out[mask] + 0.45 * np.asarray(colour, np.float32)
    outline = ndimage.binary_dilation(mask, iterations=2) & ~mask
    out[outline] = colour
    return out.astype(np.uint8)


def save_visualisation(path: Path, batch: dict, b: int, prediction: torch.Tensor) -> None:
    """Like Figs. 4-5: each reference with its annotation (green) | the target with the prediction
    (magenta) | the target with the ground truth (cyan). Panels are enlarged to at least 256 px."""
    annotation_colour, prediction_colour, truth_colour = (60, 255, 60), (255, 0, 255), (0, 230, 255)
    panels = []
    for reference, label in zip(batch["reference_images"][b], batch["reference_labels"][b]):
        # grown by a pixel so that single annotated points show
        panels.append(_overlay(data.denormalize(reference), ndimage.binary_dilation(label.numpy() > 0), annotation_colour))
    target = data.denormalize(batch["target_image"][b])
    panels.append(_overlay(target, prediction.numpy(), prediction_colour))
    panels.append(_overlay(target, batch["target_mask"][b].numpy() == 1, truth_colour))
    strip = Image.fromarray(np.concatenate(panels, axis=1))
    scale = max(1, -(-256 // target.shape[0]))
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.resize((strip.width * scale, strip.height * scale), Image.NEAREST).save(path)


def write_json(path: Path, obj) -> None:
    """Results are written atomically: never left half-written."""
    data.write_atomic(path, json.dumps(obj, indent=2).encode())


# ---------------------------------------------------------------------------------------------
# Command line: find the runs, evaluate each (label, shots, fold), print a table like the paper's.
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate VRP-SAM runs on fixed few-shot episodes.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    group = parser.add_argument_group("what to evaluate")
    group.add_argument("--runs", type=Path, default=Path("runs"), help="folder searched for run folders (train.py --out)")
    group.add_argument("--checkpoint", action="append", default=[], metavar="FOLD=PATH",
                       help="use this checkpoint for a fold instead of searching --runs (repeatable)")
    group.add_argument("--dataset", choices=data.DATASETS, default=None,
                       help="default: the dataset of the runs found (davis2017 and synthetic-video: see video.py, Table 16)")
    group.add_argument("--label", default="mask", help="label kind(s) of the references: one, a comma list, or 'all' (Table 12)")
    group.add_argument("--shots", default="1", help="shots, e.g. '1' or '1,5' (Table 7); k-shot reuses the 1-shot model")
    group.add_argument("--folds", default="0,1,2,3")
    group.add_argument("--backbone", default=None, help="only runs with this backbone")
    group.add_argument("--untrained", action="store_true",
                       help="evaluate a freshly initialised encoder with the runs' frozen parts (a baseline)")
    group = parser.add_argument_group("protocol")
    group.add_argument("--episodes", type=int, default=1000, help="fixed episodes per fold (paper: 1000)")
    group.add_argument("--seed", type=int, default=0, help="seed of the episode list (train.py validates on the same)")
    group.add_argument("--original-size", action="store_true",
                       help="score at each image's original resolution instead of the network's input size")
    group.add_argument("--data-root", type=Path, default=None, help="default: the run's")
    group.add_argument("--sam-checkpoint", type=Path, default=None, help="default: the run's")
    group.add_argument("--batch-size", type=int, default=8)
    group.add_argument("--workers", type=int, default=min(4, torch.get_num_threads()))
    group.add_argument("--cache-dir", type=Path, default=Path("cache"), help="on-disk cache of SAM image embeddings")
    group.add_argument("--no-cache", action="store_true")
    group.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    group = parser.add_argument_group("output")
    group.add_argument("--save-vis", type=int, default=0, metavar="K", help="write K overlay images per fold (Figs. 4-5)")
    return parser


def find_runs(runs: Path) -> list[tuple[Path, dict]]:
    """(run folder, its train.py arguments) for every folder under `runs` holding config.json."""
    found = []
    for config_path in sorted(runs.rglob("config.json")):
        config = json.loads(config_path.read_text())
        if "dataset" in config and "fold" in config:
            found.append((config_path.parent, config))
    return found


def run_checkpoint(run: Path) -> Path:
    for name in ("best.pt", "last.pt"):
        if (run / name).exists():
            return run / name
    raise FileNotFoundError(f"{run} holds no best.pt or last.pt; train it with train.py (or --resume it)")


def select_checkpoints(args: argparse.Namespace, labels: list[str], folds: list[int]) -> dict[tuple[str, int], Path]:
    """{(label, fold): checkpoint path}. Explicit --checkpoint FOLD=PATH wins over runs found under --runs."""
    chosen: dict[tuple[str, int], Path] = {}
    explicit = {}
    for item in args.checkpoint:
        fold, _, path = item.partition("=")
        if not fold.isdigit() or not path:
            raise ValueError(f"--checkpoint {item!r}: expected FOLD=PATH, e.g. --checkpoint 1=runs/pascal-fold1-mask-resnet50/best.pt")
        if not Path(path).exists():
            raise FileNotFoundError(f"--checkpoint {item}: {path} not found")
        explicit[int(fold)] = Path(path)
    runs = find_runs(args.runs) if args.runs.exists() else []
    if not explicit and not runs:
        raise FileNotFoundError(f"no runs under {args.runs}: train one (python train.py --dataset synthetic) "
                                f"or pass --runs DIR / --checkpoint FOLD=PATH")
    if args.dataset is None:
        datasets = sorted({config["dataset"] for _, config in runs}) or ["pascal"]
        if len(datasets) > 1:
            raise ValueError(f"{args.runs} holds runs of several datasets ({', '.join(datasets)}); choose one with --dataset")
        args.dataset = datasets[0]
    for label in labels:
        for fold in folds:
            if fold in explicit:
                chosen[(label, fold)] = explicit[fold]
                continue
            matches = [run for run, config in runs if config["dataset"] == args.dataset and config["fold"] == fold
                       and config["label"] == label and args.backbone in (None, config["backbone"])]
            if matches:  # several runs of one setting: the most recently trained
                chosen[(label, fold)] = run_checkpoint(max(matches, key=lambda run: run.stat().st_mtime))
    return chosen


def check_checkpoint(path: Path, state: dict, *, dataset: str, fold: int, label: str, backbone: str | None) -> dict:
    """The run's train.py arguments; refuses a checkpoint trained for another dataset, fold, label or backbone."""
    run = state.get("args", {})
    wanted = {"dataset": dataset, "fold": fold, "label": label}
    if backbone is not None:
        wanted["backbone"] = backbone
    wrong = [f"{k} {run.get(k)!r} (wanted {v!r})" for k, v in wanted.items() if run.get(k) != v]
    if wrong:
        raise ValueError(f"{path} was trained for {', '.join(wrong)}; pass the checkpoint of that setting")
    return run


def format_table(dataset: str, rows: dict, folds: list[int], episodes: int) -> str:
    """Rows keyed by (label, shots) -> {fold: result}; the layout of the paper's result tables (per-fold mIoU, mean, FB-IoU)."""
    lines = [f"VRP-SAM on {dataset}: mIoU (%) on novel classes, {episodes} episodes per fold",
             f"{'label':<9}{'shots':>5}" + "".join(f"{'fold' + str(f):>8}" for f in folds) + f"{'mean':>8}{'FB-IoU':>8}"]
    for (label, shots), results in rows.items():
        cells = "".join(f"{results[f]['miou']:8.1f}" if f in results else f"{'-':>8}" for f in folds)
        done = [results[f] for f in folds if f in results]
        mean = f"{np.mean([r['miou'] for r in done]):8.1f}" if done else f"{'-':>8}"
        fb = f"{np.mean([r['fbiou'] for r in done]):8.1f}" if done else f"{'-':>8}"
        lines.append(f"{label:<9}{shots:>5}{cells}{mean}{fb}")
    if any(len(results) < len(folds) for results in rows.values()):
        lines.append("mean and FB-IoU are over the folds evaluated only")
    return "\n".join(lines)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    import video  # Table 16: video datasets have their own protocol and flags, in video.py

    if any(value in video.VIDEO_DATASETS for value in _dataset_values(argv)):
        return video.main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return evaluate(args)
    except (OSError, ImportError, ValueError) as error:  # OSError: missing or unreadable files
        sys.exit(f"evaluate.py: error: {error}")


def _dataset_values(argv: list[str]) -> list[str]:
    """The values given to --dataset in argv (as `--dataset X` or `--dataset=X`)."""
    return [arg.partition("=")[2] if arg.startswith("--dataset=") else argv[i + 1]
            for i, arg in enumerate(argv) if arg.startswith("--dataset=") or (arg == "--dataset" and i + 1 < len(argv))]


def evaluate(args: argparse.Namespace) -> dict:
    labels = list(LABEL_KINDS) if args.label == "all" else args.label.split(",")
    unknown = [label for label in labels if label not in LABEL_KINDS]
    if unknown:
        raise ValueError(f"--label {args.label}: unknown kind {unknown[0]!r}; use one of {', '.join(LABEL_KINDS)}, a comma list, or all")
    shots_list = [int(s) for s in args.shots.split(",")]
    folds = [int(f) for f in args.folds.split(",")]
    device = torch.device(args.device)
    chosen = select_checkpoints(args, labels, folds)
    missing = [f"{label} fold {fold}" for label in labels for fold in folds if (label, fold) not in chosen]
    if missing:
        print(f"no checkpoint under {args.runs} for: {', '.join(missing)} (skipped)")

    models: dict[VRPConfig, object] = {}  # one frozen SAM per configuration, shared by the folds
    rows: dict[tuple[str, int], dict[int, dict]] = {}
    for label in labels:
        for shots in shots_list:
            rows[(label, shots)] = {}
            for fold in folds:
                if (label, fold) not in chosen:
                    continue
                path = chosen[(label, fold)]
                state = load_checkpoint(path)
                run = check_checkpoint(path, state, dataset=args.dataset, fold=fold, label=label, backbone=args.backbone)
                config = VRPConfig(**state["config"])
                if config not in models:
                    models.clear()  # keep one SAM in memory at a time
                    models[config] = build_vrp_sam(config, sam_checkpoint=args.sam_checkpoint or Path(run["sam_checkpoint"]),
                                                   backbone_weights=run.get("backbone_weights")).to(device)
                model = models[config]
                if args.untrained:
                    model.reset_learnable_parameters(seed=run.get("seed", 0))  # as train.py initialised it
                else:
                    model.load_learnable_state_dict(state["model"])
                dataset = data.build_dataset(args.dataset, split="test", fold=fold, shots=shots, label=label,
                                             data_root=args.data_root or Path(run.get("data_root", "data")),
                                             image_size=run.get("image_size"), num_episodes=args.episodes,
                                             seed=args.seed, original_size=args.original_size,
                                             cache_dir=args.cache_dir, progress=True)
                cache = None if args.no_cache else EmbeddingCache(args.cache_dir, config.sam, run.get("image_size"))
                tag = f"{label}-{shots}shot{'-untrained' if args.untrained else ''}{'-original' if args.original_size else ''}"
                result = evaluate_episodes(model, dataset, class_ids=data.fold_classes(args.dataset, fold, "test"),
                                           batch_size=args.batch_size, workers=args.workers, cache=cache,
                                           original_size=args.original_size, save_vis=args.save_vis,
                                           vis_dir=path.parent / f"vis-{tag}", desc=f"{label} {shots}-shot fold {fold}")
                result.update(checkpoint=str(path), episodes_hash=data.episodes_hash(dataset), seed=args.seed,
                              untrained=args.untrained, original_size=args.original_size,
                              class_names={c: data.class_names(args.dataset)[c - 1] for c in result["class_iou"]})
                write_json(path.parent / f"eval-{tag}.json", result)
                rows[(label, shots)][fold] = result
    title = args.dataset + (" (untrained encoder)" if args.untrained else "")
    print(format_table(title, rows, folds, args.episodes))
    return {f"{label}/{shots}": results for (label, shots), results in rows.items()}


if __name__ == "__main__":
    main()
