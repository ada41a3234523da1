"""Evaluate trained VRP encoders on fixed episodes (paper §5.1 "Evaluation", Tables 2, 7, 10, 12).

    python evaluate.py --shots 5                       # every run under runs/, 5-shot
    python evaluate.py --runs runs --shots 1,5 --label all
    python evaluate.py --dataset synthetic --untrained # the same frozen parts with an untrained encoder
    python evaluate.py --dataset davis2017 --checkpoint PATH   # video, Table 16: handed to video.py
    python evaluate.py --dataset synthetic --method gp-sam            # Table 3's GP-SAM, no training
    python evaluate.py --dataset synthetic --method every-class-object  # a reference-free yardstick
    python evaluate.py --label all --trained-label any # one encoder (train.py --label any) on every kind
    python evaluate.py --dataset synthetic --split base # Table 13: base classes on training images, and novel

Without --checkpoint, every run under --runs is scored: one table per dataset, and per setting where
a dataset's runs differ in one (the backbone or another of cli.RUN_SETTINGS, read from each run's
config.json: --loss bce, --num-queries 10, ...), each titled with what sets it apart and, when there
are several, followed by the run folder of each of its cells. --dataset, --backbone, --label and
--folds narrow the selection; a fold without a run is named only when --folds asked for it (or
another label kind has a run of it).

Each fold is evaluated on N fixed episodes (default 1000, as in the paper), drawn by data.py from a
seed, so every run, batch size and worker count sees the same pairs; the episode list's hash is
stored with the results. The metric is the few-shot standard of HSNet, which the authors use:
per class, foreground intersection and union are summed over all its episodes, then
mIoU = mean over the fold's classes of their IoU, and FB-IoU = mean of the background and
foreground IoU summed over all episodes. Pixels labelled 255 are ignored.

Exposes `IoUMeter`, `evaluate_episodes`, `episode_loader`, `predict`, `check_prerequisites` and
`no_episode_warning` (train.py validates with them), `result_name` (the results' file names),
`select_tables` and `select_checkpoints` (which runs are scored), `label_list`, `build_parser` and `main`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import DataLoader
from tqdm import tqdm

import cli
import data
import distributed
import pascal_part
import prompts
from baselines import (GP_NUM_POINTS, GP_PROMPTS, GP_THRESHOLD, METHODS, WrongReferenceEpisodes, gp_sam_predictor,
                       oracle_predictor)
from model import (BACKBONES, SAM_SPECS, SAM_TYPES, VRPSAM, EmbeddingCache, VRPConfig, autocast, build_vrp_sam,
                   check_sam_switch, embed_targets, imagenet_weights_file, load_checkpoint, run_backbone_weights,
                   run_sam_checkpoint, upsample_logits, warn_if_other_backbone)
from prompts import IGNORE, LABEL_KINDS



class IoUMeter:
    """Per-class intersection and union of background (0) and foreground (1), HSNet's convention."""

    def __init__(self, class_ids):
        self.class_ids = list(class_ids)
        self.intersection = {c: np.zeros(2) for c in self.class_ids}
        self.union = {c: np.zeros(2) for c in self.class_ids}
        self.episodes = {c: 0 for c in self.class_ids}

    def update(self, prediction: torch.Tensor, target: torch.Tensor, class_ids) -> None:
        """prediction (B, H, W) bool; target (B, H, W) in {0, 1, 255}, on prediction's device;
        class_ids: B ints. The pixel counts are taken on that device, and only 4 x B numbers come back."""
        valid = target != IGNORE
        truth = target == 1
        counts = torch.stack([(~prediction & ~truth & valid).flatten(1).sum(1),  # background intersection
                              ((~prediction | ~truth) & valid).flatten(1).sum(1),  # background union
                              (prediction & truth & valid).flatten(1).sum(1),  # foreground intersection
                              ((prediction | truth) & valid).flatten(1).sum(1)], dim=1).tolist()
        for class_id, (bg_intersection, bg_union, fg_intersection, fg_union) in zip(class_ids, counts):
            self.episodes[int(class_id)] += 1
            self.intersection[int(class_id)] += (bg_intersection, fg_intersection)
            self.union[int(class_id)] += (bg_union, fg_union)

    def class_iou(self) -> dict[int, float]:
        """Foreground IoU (%) of each class; 0 for a class that had no episode (see miou)."""
        return {c: 100 * self.intersection[c][1] / max(self.union[c][1], 1) for c in self.class_ids}

    def classes_without_episodes(self) -> list[int]:
        return [c for c in self.class_ids if self.episodes[c] == 0]

    def miou(self) -> float:
        """Mean foreground IoU over ALL the fold's classes: one without an episode counts as 0, as in
        HSNet's and the authors' code (with 1000 episodes every class has some)."""
        return float(np.mean(list(self.class_iou().values()))) if self.class_ids else math.nan

    def fbiou(self) -> float:
        intersection = sum(self.intersection.values())
        union = sum(self.union.values())
        return float(np.mean(100 * intersection / np.maximum(union, 1)))


def check_prerequisites(*runs: argparse.Namespace) -> None:
    """Refuse to start, in one message listing EVERY missing file or folder with where to get it,
    when something a run needs is absent: backbone weights, the SAM checkpoint, the dataset.

    Each namespace needs backbone, backbone_weights, sam, sam_checkpoint, dataset, data_root and
    optionally splits (default both; evaluate.py checks "test" only). Weights torchvision or
    torch.hub would download are listed only next to something else missing (they may be fetched).
    """
    missing, downloadable = [], []
    for args in runs:
        weights = args.backbone_weights
        if weights == "imagenet":
            cached = imagenet_weights_file(args.backbone)
            if cached is not None and not cached.is_file():
                downloadable.append(f"{cached}: {args.backbone} ImageNet weights; downloaded on first use when online, "
                                    f"else copy the file there or pass a state-dict file with --backbone-weights")
        elif weights not in (None, "random") and not Path(weights).is_file():
            how = (
                "make it with `python pretrain_tiny_backbone.py` (docs/synthetic.md), or point --backbone-weights at it"
                if args.backbone == "tiny"
                else "point --backbone-weights at an existing state-dict file"
            )
            missing.append(f"{weights}: --backbone-weights file for {args.backbone}; {how}")
        checkpoint = Path(args.sam_checkpoint)
        if not checkpoint.is_file():  # where to get it: the registry's word for each SAM (model.SAM_SPECS)
            missing.append(f"{checkpoint}: SAM {args.sam} checkpoint; {SAM_SPECS[args.sam].source}, "
                           "or pass --sam-checkpoint")
        if args.dataset == pascal_part.DATASET:
            missing += pascal_part.missing_files(args.data_root)
        else:
            missing += data.missing_data(args.dataset, args.data_root, splits=getattr(args, "splits", data.SPLITS))
    missing = list(dict.fromkeys(missing))
    if missing:
        lines = list(dict.fromkeys(downloadable)) + missing
        raise FileNotFoundError(f"{len(lines)} prerequisite(s) missing:\n" + "\n".join(f"  - {line}" for line in lines))


def predict(model, batch: dict, cache: EmbeddingCache | None, device: torch.device) -> torch.Tensor:
    """Target logits (B, S, S) for a batch of episodes; SAM's target embeddings come from the
    on-disk cache when one is given (computed and stored on a miss), else computed (embed_targets)."""
    target = batch["target_image"].to(device, non_blocking=True)
    with autocast(device):
        sam = getattr(model, "module", model).sam  # model may be train.py's DistributedDataParallel wrapper
        embeddings = embed_targets(sam, target, list(batch["target_id"]), cache)
        return model(target, batch["reference_images"].to(device, non_blocking=True),
                     batch["reference_labels"].to(device, non_blocking=True), image_embeddings=embeddings)


def episode_loader(dataset, *, batch_size: int, workers: int, device: torch.device,
                   world: distributed.World = distributed.World(), persistent: bool = False) -> DataLoader:
    """This rank's block of `dataset`'s fixed episodes, in order, batch_size being the total over ranks."""
    return DataLoader(distributed.shard(dataset, world), batch_size=max(1, batch_size // world.size), shuffle=False,
                      num_workers=workers, persistent_workers=persistent and workers > 0,
                      pin_memory=device.type == "cuda", collate_fn=data.collate_episodes)


@torch.no_grad()
def evaluate_episodes(
    model, dataset, *, class_ids, batch_size: int = 8, workers: int = 0, cache: EmbeddingCache | None = None,
    original_size: bool = False, save_vis: int = 0, vis_dir: Path | None = None, desc: str = "evaluate",
    world: distributed.World = distributed.World(), predictor=None, loader: DataLoader | None = None,
) -> dict:
    """Run every episode of `dataset` once; returns {"miou", "fbiou", "class_iou", "episodes",
    "classes_without_episodes"} (mIoU counts those as 0, see IoUMeter.miou).

    class_ids: the fold's test classes (data.fold_classes), over which mIoU averages.

    original_size: compare at each target's original resolution (HSNet's option) instead of
    the network's S x S (the authors' protocol, the default).

    world: under torchrun, each rank scores its block of the episodes (batch_size is the total over
    the ranks) and the per-class counts are added up, so every rank returns the whole metric.
    Visualisations come from rank 0's episodes only.

    predictor: batch -> target logits (B, S, S); default: the VRP-SAM model (`predict`). The
    baselines and yardsticks below (`method_predictor`) plug in here, on the same episodes.

    loader: an `episode_loader` of `dataset` to reuse (train.py validates with one persistent
    loader, so its workers keep the scenes they rendered); default: a fresh one.
    """
    device = next(model.learnable_parameters()).device
    model.eval()
    predictor = predictor or (lambda batch: predict(model, batch, cache, device))
    meter = IoUMeter(class_ids)
    loader = loader or episode_loader(dataset, batch_size=batch_size, workers=workers, device=device, world=world)
    saved = 0 if world.is_main else save_vis
    for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=not world.is_main):
        logits = predictor(batch).float()  # scored where it was computed: only the counts leave the GPU
        if original_size:
            for b, mask in enumerate(batch["target_mask_original"]):
                upsampled = upsample_logits(logits[b][None, None], mask.shape)[0]
                meter.update(upsampled > 0, mask[None].to(logits.device), [batch["class_id"][b]])
        else:
            meter.update(logits > 0, batch["target_mask"].to(logits.device), batch["class_id"])
        for b in range(min(save_vis - saved, len(logits))):
            save_visualisation(vis_dir / f"episode{int(batch['episode'][b]):05d}.png", batch, b, logits[b].cpu() > 0)
            saved += 1
    distributed.sum_meter(meter, world)
    return {"miou": meter.miou(), "fbiou": meter.fbiou(), "class_iou": meter.class_iou(), "episodes": len(dataset),
            "classes_without_episodes": meter.classes_without_episodes()}


def save_visualisation(path: Path, batch: dict, b: int, prediction: torch.Tensor) -> None:
    """Like Figs. 4-5: each reference with its annotation (green) | the target with the prediction
    (magenta) | the target with the ground truth (cyan). Panels are enlarged to at least 256 px."""
    panels = []
    for reference, label in zip(batch["reference_images"][b], batch["reference_labels"][b]):
        # grown by a pixel so that single annotated points show
        annotation = ndimage.binary_dilation(label.numpy() > 0)
        panels.append(prompts.tint_mask(data.denormalize(reference), annotation, prompts.ANNOTATION_COLOUR))
    target = data.denormalize(batch["target_image"][b])
    panels.append(prompts.tint_mask(target, prediction.numpy(), prompts.PREDICTION_COLOUR))
    panels.append(prompts.tint_mask(target, batch["target_mask"][b].numpy() == 1, prompts.TRUTH_COLOUR))
    strip = np.concatenate(panels, axis=1)
    scale = max(1, -(-256 // target.shape[0]))
    cli.write_atomic(path, prompts.png_bytes(strip.repeat(scale, axis=0).repeat(scale, axis=1)))


def set_aside_other_episodes(path: Path, result: dict) -> Path | None:
    """Move an earlier result at `path` out of the way when it was scored on other episodes than
    `result` (same name, so same protocol, but the data under it changed: relabelled images, an
    edited renderer). It becomes eval-<name>.episodes-<its hash>.json, so a rerun never loses it.
    Returns where it went, or None when there was nothing to keep."""
    try:
        earlier = json.loads(path.read_text()).get("episodes_hash")
    except (OSError, ValueError, AttributeError):
        return None  # nothing there, or nothing readable worth keeping
    if earlier is None or earlier == result.get("episodes_hash"):
        return None
    kept = path.with_name(f"{path.stem}.episodes-{earlier}.json")
    os.replace(path, kept)
    return kept


# ---------------------------------------------------------------------------------------------
# Command line: find the runs, evaluate each (label, shots, fold), print a table like the paper's.
# ---------------------------------------------------------------------------------------------


_label_kinds = cli.choice_list(data.LABEL_CHOICES, all_word=None)


def label_list(text: str) -> list[str]:
    """--label: a kind, a comma list of kinds ('any': a kind drawn per episode), or 'all': the four kinds (Table 12)."""
    return list(LABEL_KINDS) if text == "all" else _label_kinds(text)


def build_parser() -> argparse.ArgumentParser:
    """Every value is checked here, at parse time (cli.py's types), before anything is built or written."""
    parser = cli.ArgumentParser(
        prog="evaluate.py", description="Evaluate VRP-SAM runs on fixed few-shot episodes.",
        formatter_class=cli.HelpFormatter,
    )
    group = parser.add_argument_group("what to evaluate")
    group.add_argument(
        "--runs", type=Path, default=cli.RUNS, help="folder searched for run folders (train.py --out)"
    )
    group.add_argument("--checkpoint", type=fold_checkpoint, action="append", default=[], metavar="[FOLD=]PATH",
                       help="use this checkpoint for a fold (FOLD=PATH) or for every fold (PATH) instead of searching "
                            "--runs (repeatable; default: none)")
    group.add_argument("--dataset", choices=(*data.DATASETS, pascal_part.DATASET), default=None,
                       help="benchmark (default: the dataset of the runs found); pascal-part: Table 15, any checkpoint "
                            "on the part folds; davis2017 and synthetic-video: video.py, Table 16")
    group.add_argument("--label", type=label_list, default=["mask"],
                       help="label kind(s) of the references: one, a comma list, or 'all' (Table 12); 'any' draws a "
                            "kind per episode (default: mask)")
    group.add_argument("--trained-label", choices=data.LABEL_CHOICES, default=None,
                       help="evaluate the encoders trained with this label kind on every --label kind (Table 12's "
                            "cross-kind cells) (default: each kind's own runs, else a fold's --label any run)")
    group.add_argument("--shots", type=cli.int_list(low=1), default=[1],
                       help="shots, e.g. '1' or '1,5' (Table 7); k-shot reuses the 1-shot model (default: 1)")
    group.add_argument("--folds", type=cli.int_list(range(data.NUM_FOLDS)), default=None,
                       help="folds to evaluate, a comma list; a fold asked for here and without a run is named "
                            "(default: 0,1,2,3, naming only the folds without a run that hold another label's)")
    group.add_argument(
        "--backbone", choices=BACKBONES, default=None, help="only runs with this backbone (default: any)"
    )
    group.add_argument("--untrained", action="store_true",
                       help="evaluate a freshly initialised encoder with the runs' frozen parts (a baseline)")
    group.add_argument(
        "--method",
        choices=METHODS,
        default="vrp-sam",
        help="vrp-sam: the runs' encoders; gp-sam: Table 3's training-free geometric prompts from the "
        "pseudo mask; every-class-object / every-object: reference-free yardsticks from the target's "
        "ground truth; wrong-reference: the trained encoder given a reference of another class",
    )
    group.add_argument(
        "--gp-prompt", type=cli.choice_list(GP_PROMPTS, all_word=None), default=None,
        help=f"gp-sam prompts: one of {', '.join(GP_PROMPTS)} or a comma list (default: all three, Table 3's rows)",
    )
    group.add_argument(
        "--gp-threshold", type=cli.unit_float, default=None,
        help=f"gp-sam: binarise the min-max normalised pseudo mask at this value (default {GP_THRESHOLD})",
    )
    group = parser.add_argument_group("protocol")
    group.add_argument("--episodes", type=cli.positive_int, default=None,
                       help="fixed episodes per fold (default: 1000 as in the paper; pascal-part: Matcher's count, "
                            "at most 2500)")
    group.add_argument(
        "--seed", type=cli.nonnegative_int, default=0, help="seed of the episode list (train.py validates on the same)"
    )
    group.add_argument("--split", choices=("test", "base"), default="test",
                       help="'test': novel classes on the test images; 'base' (Table 13): also the fold's training "
                            "classes on fixed episodes from the training images, printed beside the novel mean")
    group.add_argument("--original-size", action="store_true",
                       help="score at each image's original resolution instead of the network's input size")
    group.add_argument("--data-root", type=Path, default=None, help="dataset folder (default: the run's)")
    group.add_argument("--sam", choices=SAM_TYPES, default=None, metavar="SAM",
                       help="score with this frozen SAM: the runs trained on it, else those trained on a SAM with the "
                            "same prompt encoder and mask decoder (a vit_h run on MobileSAM's vit_t; said in a line); "
                            "GP-SAM and the yardsticks take any run's backbone (default: each run's own; choices as "
                            "train.py --sam)")
    group.add_argument("--sam-checkpoint", type=Path, default=None,
                       help="SAM weights (default: the run's; another --sam: checkpoints/<its official file name>)")
    group.add_argument("--backbone-weights", default=None,
                       help="backbone weights: a state_dict file, if not where the run had them (default: the run's)")
    group.add_argument(
        "--batch-size", type=cli.positive_int, default=8, help="episodes per forward pass (results do not depend on it)"
    )
    cli.add_runtime_args(group)
    group = parser.add_argument_group("output")
    group.add_argument(
        "--save-vis", type=cli.nonnegative_int, default=0, metavar="K",
        help="write K overlay images per fold (Figs. 4-5)",
    )
    return parser


def fold_checkpoint(text: str) -> tuple[int | None, Path]:
    """argparse type of --checkpoint: FOLD=PATH -> (fold, path), or a bare PATH -> (None, path): that
    checkpoint for every fold (pascal-part scores one model on all four). The file is checked when used."""
    fold, _, path = text.partition("=")
    if not path and not text.startswith("="):
        return None, Path(text)
    if not fold.isdigit() or int(fold) >= data.NUM_FOLDS or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PATH (every fold) or FOLD=PATH with FOLD in "
                                         f"0..{data.NUM_FOLDS - 1}, e.g. --checkpoint 1=runs/pascal-fold1/best.pt")
    return int(fold), Path(path)


def result_name(*, label: str, shots: int, episodes: int | None, seed: int, untrained: bool = False,
                original_size: bool = False, sam: str | None = None, method: str | None = None,
                split: str = "test", benchmark: str | None = None) -> str:
    """The stem of a result's files beside its checkpoint (eval-<stem>.json, vis-<stem>/): everything
    that defines the result is in it, so a result of another protocol is never replaced. Extend
    it (keyword arguments, appended parts) when a new flag changes what is measured.

    sam: the SAM checkpoint's file stem when it is not the one the run was trained with.
    method: evaluate.py --method (and GP-SAM's prompt kind) when it is not the run's own encoder.
    split: "base" for Table 13's base-class episodes; the default test (novel) split adds nothing.
    episodes None: pascal-part's default count (Matcher's, pascal_part.episode_count).
    benchmark: what the checkpoint is scored on when it is not its own benchmark and fold
    (pascal-part's folds, e.g. "pascal-part-animals": one checkpoint serves all four).
    """
    parts = [label, f"{shots}shot", "matcher-count" if episodes is None else f"{episodes}ep", f"seed{seed}"]
    if split != "test":
        parts.append(split)
    if untrained:
        parts.append("untrained")
    if original_size:
        parts.append("original")
    if sam is not None:
        parts.append(f"sam-{sam}")
    if method is not None:
        parts.append(method)
    if benchmark is not None:
        parts.append(benchmark)
    return "-".join(parts)


RUN_KEYS = {"dataset", "fold", "label", "backbone"}  # in every train.py config.json; what selects a run


def find_runs(runs: Path) -> list[tuple[Path, dict]]:
    """(run folder, its train.py arguments) for every folder under `runs` holding train.py's config.json."""
    found = []
    for config_path in sorted(runs.rglob("config.json")):
        try:
            config = json.loads(config_path.read_text())
        except ValueError as error:
            raise ValueError(f"{config_path} is not valid JSON ({error}); a run's config.json is written by train.py: "
                             "fix or remove it, or point --runs elsewhere") from error
        if isinstance(config, dict) and RUN_KEYS <= config.keys():  # else another tool's config.json
            found.append((config_path.parent, config))
    return found


CHECKPOINT_NAMES = ("best.pt", "last.pt")  # what a run folder offers, in order of preference


def run_checkpoint(run: Path) -> Path:
    for name in CHECKPOINT_NAMES:
        if (run / name).exists():
            return run / name
    raise FileNotFoundError(f"{run} holds no best.pt or last.pt; train it with train.py (or --resume it)")


def select_checkpoints(args: argparse.Namespace, labels: list[str], folds: list[int]) -> dict[tuple[str, int], Path]:
    """{(label, fold): checkpoint path} for one table of args.dataset (settled here when None: the
    dataset of the runs found). Explicit --checkpoint FOLD=PATH wins over runs found under --runs."""
    explicit = explicit_checkpoints(args)
    runs = find_runs(args.runs) if args.runs.exists() else []
    if not explicit and not runs:
        raise FileNotFoundError(f"no runs under {args.runs}: train one (python train.py --dataset synthetic) "
                                f"or pass --runs DIR / --checkpoint FOLD=PATH")
    if args.dataset is None:
        datasets = sorted({config["dataset"] for _, config in runs}) or ["pascal"]
        if len(datasets) > 1:
            raise ValueError(f"{args.runs} holds runs of several datasets ({', '.join(datasets)}); say which one "
                             f"--checkpoint is scored on with --dataset")
        args.dataset = datasets[0]
    chosen = choose_checkpoints(args, runs, args.dataset, labels, folds, explicit)
    if not chosen:  # a table of dashes would read as a result
        raise no_run_error(args, labels, folds, runs, explicit)
    return chosen


def explicit_checkpoints(args: argparse.Namespace) -> dict[int, Path]:
    """{fold: path} of --checkpoint (FOLD=PATH, or PATH for every fold), each file checked to exist."""
    explicit = {}
    for fold, path in args.checkpoint:  # (fold, path) pairs from fold_checkpoint; fold None: every fold
        if not path.exists():  # a folder or another kind of file: said by model.load_checkpoint
            raise FileNotFoundError(f"--checkpoint {path if fold is None else f'{fold}={path}'}: {path} not found")
        explicit.update({f: path for f in (range(data.NUM_FOLDS) if fold is None else [fold])})
    return explicit


def choose_checkpoints(args: argparse.Namespace, runs: list[tuple[Path, dict]], dataset: str, labels: list[str],
                       folds: list[int], explicit: dict[int, Path] | None = None) -> dict[tuple[str, int], Path]:
    """{(label, fold): checkpoint} among `runs` of `dataset` (an explicit checkpoint first): per
    cell, a run trained on the label kind (trained_labels), the most recently trained of several
    that holds a checkpoint."""
    explicit = explicit or {}
    chosen: dict[tuple[str, int], Path] = {}
    for label in labels:
        for fold in folds:
            if fold in explicit:
                chosen[(label, fold)] = explicit[fold]
                continue
            for trained in trained_labels(args, label):
                candidates = [(run, config) for run, config in runs if config["dataset"] == dataset
                              and config["fold"] == fold and config["label"] == trained
                              and args.backbone in (None, config["backbone"]) and sam_fits(args, config)]
                # --sam: its own runs first, else runs of a SAM with its decoder (scored on --sam)
                own = [run for run, config in candidates if config.get("sam") == args.sam]
                matches = own or [run for run, _ in candidates]
                if matches:  # several runs of one setting: the most recently trained that holds a checkpoint
                    finished = [run for run in matches if any((run / name).exists() for name in CHECKPOINT_NAMES)]
                    newest = max(finished or matches, key=lambda run: run.stat().st_mtime)
                    chosen[(label, fold)] = run_checkpoint(newest)  # none has one: says so, naming the newest
                    if trained != label and args.trained_label is None:
                        print(f"{label} fold {fold}: no run trained on {label} labels; evaluating the --label any "
                              f"run {chosen[(label, fold)]}")
                    break
    return chosen


def no_run_error(args: argparse.Namespace, labels: list[str], folds: list[int], runs: list[tuple[Path, dict]],
                 explicit: dict[int, Path]) -> FileNotFoundError:
    """Nothing matches the selection: what was asked, what there is, and how to train what was asked."""
    dataset = args.dataset or next(iter(dataset_order({config["dataset"] for _, config in runs})), "pascal")
    how = (f"train one (python train.py --dataset {dataset} --label {args.trained_label or labels[0]} "
           f"--fold {folds[0]})" if dataset in data.DATASETS else "pass --checkpoint")
    return FileNotFoundError(f"no run under {args.runs} for {selection_flags(args, labels, folds)}; "
                             f"{runs_found(args.runs, runs, explicit, sams=args.sam is not None)}: choose among "
                             f"them, or {how}")


# What sets the runs of one dataset apart, one table each: the backbone (in every run folder's name)
# and the settings train.py names in a run folder.
TABLE_SETTINGS = (cli.RunSetting("backbone", "{}"), *cli.RUN_SETTINGS)


@dataclass(eq=False)
class Table:
    """One printed table: the checkpoint of each (label kind, fold) chosen among the runs of one
    dataset and one setting. setting: what sets these runs apart from the dataset's other tables,
    as train.py's flags ("--loss bce"); empty for the only table of a dataset, or its runs of the
    defaults."""

    dataset: str
    setting: str
    chosen: dict[tuple[str, int], Path]

    @property
    def name(self) -> str:
        return self.dataset + (f", {self.setting}" if self.setting else "")


def select_tables(args: argparse.Namespace, labels: list[str], folds: list[int]) -> list[Table]:
    """The tables to print: with --checkpoint, one (select_checkpoints); else one per dataset and
    setting among the runs found (--dataset and --backbone narrow them), datasets in data.DATASETS'
    order, each dataset's runs of the defaults first."""
    if args.checkpoint:
        chosen = select_checkpoints(args, labels, folds)  # also settles args.dataset
        return [Table(args.dataset, "", chosen)]
    runs = find_runs(args.runs) if args.runs.exists() else []
    if not runs:
        raise FileNotFoundError(f"no runs under {args.runs}: train one (python train.py --dataset synthetic) "
                                f"or pass --runs DIR / --checkpoint FOLD=PATH")
    wanted = [(run, config) for run, config in runs if args.dataset in (None, config["dataset"])]
    tables = []
    for dataset in dataset_order({config["dataset"] for _, config in wanted}):
        groups: dict[tuple, list[tuple[Path, dict]]] = {}
        for run, config in wanted:
            if config["dataset"] == dataset:
                groups.setdefault(run_setting(config), []).append((run, config))
        chosen = {key: choose_checkpoints(args, members, dataset, labels, folds) for key, members in groups.items()}
        kept = {key: groups[key] for key in groups if chosen[key]}
        names = setting_names(kept)
        tables += sorted((Table(dataset, names[key], chosen[key]) for key in kept), key=lambda t: natural(t.setting))
    if not tables:  # a table of dashes would read as a result
        if args.dataset is None and len({config["dataset"] for _, config in runs}) == 1:
            args.dataset = runs[0][1]["dataset"]  # named in the message
        raise no_run_error(args, labels, folds, runs, {})
    return tables


def dataset_order(datasets: set[str]) -> list[str]:
    """The benchmarks in data.DATASETS' order, pascal-part after them, any other name last."""
    known = (*data.DATASETS, pascal_part.DATASET)
    return sorted(datasets, key=lambda name: (known.index(name) if name in known else len(known), name))


def natural(text: str) -> list:
    """A sort key that orders the numbers in `text` by value ("--num-queries 10" before "... 100")."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def run_setting(config: dict) -> tuple:
    """A run's value of each TABLE_SETTINGS as shown in a title (a file by its name, a number as
    typed); None where its config.json has no such key (a run saved before the flag existed)."""
    return tuple(setting.show(config[setting.key]) if setting.key in config else None for setting in TABLE_SETTINGS)


_UNKNOWN = object()  # no single default value: the default-named runs disagree, or there are none


def setting_names(groups: dict[tuple, list[tuple[Path, dict]]]) -> dict[tuple, str]:
    """{run_setting: what sets its runs apart} for the runs of one dataset, grouped by setting: each
    setting that varies among the groups, as a train.py flag ("--loss bce"), when it differs from
    the value of the runs in folders train.py named without a suffix (cli.run_folder: the dataset's
    defaults) or when those runs do not settle it. A dataset's only group, and its defaults, get ""."""
    if len(groups) <= 1:
        return {key: "" for key in groups}
    default_named = [key for key, members in groups.items() for run, config in members
                     if run.name == cli.run_folder(config["dataset"], config["fold"], config["label"],
                                                   config["backbone"]).name]
    names = {}
    for key in groups:
        shown = []
        for i, setting in enumerate(TABLE_SETTINGS):
            if len({other[i] for other in groups}) == 1:
                continue  # the same in every table: nothing to tell them apart by
            defaults = {other[i] for other in default_named}
            default = defaults.pop() if len(defaults) == 1 else _UNKNOWN
            if default is _UNKNOWN or key[i] != default:
                shown.append(f"{setting.flag} {key[i]}")
        names[key] = " ".join(shown)
    return names


# The methods that score a run's trained encoder; the others (GP-SAM, the yardsticks) take only its
# frozen parts from a run, so they may score any --sam.
ENCODER_METHODS = ("vrp-sam", "wrong-reference")


def sam_fits(args: argparse.Namespace, config: dict) -> bool:
    """Whether a run (its train.py config) can be scored with --sam: any run without --sam or for a
    method that uses no trained encoder; else one trained on --sam or on a SAM of its decoder group
    (model.SamSpec.decoder), whose prompts --sam's decoder reads alike."""
    if args.sam is None or args.method not in ENCODER_METHODS:
        return True
    trained = SAM_SPECS.get(config.get("sam"))
    return trained is not None and trained.decoder == SAM_SPECS[args.sam].decoder


def selection_flags(args: argparse.Namespace, labels: list[str], folds: list[int]) -> str:
    """What select_checkpoints was asked for, as the flags that say it."""
    flags = ([f"--dataset {args.dataset}"] if args.dataset is not None else []) + [f"--label {','.join(labels)}"]
    if args.trained_label is not None:
        flags.append(f"--trained-label {args.trained_label}")
    flags.append(f"--folds {','.join(map(str, folds))}")
    if args.backbone is not None:
        flags.append(f"--backbone {args.backbone}")
    if args.sam is not None:
        flags.append(f"--sam {args.sam}")
    return " ".join(flags)


def runs_found(root: Path, runs: list[tuple[Path, dict]], explicit: dict[int, Path], *, sams: bool = False) -> str:
    """What there is to evaluate: the runs under `root` by dataset, trained label kind and backbone
    (and SAM, with `sams`), with their folds, and the folds of --checkpoint."""
    folds: dict[str, set] = {}
    for _, config in runs:
        kind = f"{config['dataset']} {config['label']}-trained {config['backbone']}"
        if sams:
            kind += f" on SAM {config.get('sam')}"
        folds.setdefault(kind, set()).add(config["fold"])
    found = [f"{kind} (fold {', '.join(map(str, sorted(f)))})" for kind, f in sorted(folds.items())]
    if explicit:
        found.append(f"--checkpoint for fold {', '.join(map(str, sorted(explicit)))}")
    return f"there are {'; '.join(found)}" if found else f"{root} holds no run"


def trained_labels(args: argparse.Namespace, label: str) -> tuple[str, ...]:
    """Label kinds a checkpoint evaluated with `label` may have been trained on, in order of preference:
    --trained-label when given; else `label` itself, then "any" (one encoder for every kind)."""
    if args.trained_label is not None:
        return (args.trained_label,)
    return (label,) if label == data.ANY_LABEL else (label, data.ANY_LABEL)


def check_checkpoint(path: Path, state: dict, *, dataset: str | None, fold: int | None, label: str | Sequence[str],
                     backbone: str | None) -> dict:
    """The run's train.py arguments; refuses a checkpoint trained for another dataset, fold, label
    (one kind, or any of a sequence of kinds: trained_labels) or backbone. dataset and fold None:
    any (pascal-part evaluates a model trained elsewhere)."""
    run = state.get("args", {})
    labels = (label,) if isinstance(label, str) else tuple(label)
    wanted = {key: value for key, value in (("dataset", dataset), ("fold", fold)) if value is not None}
    if backbone is not None:
        wanted["backbone"] = backbone
    wrong = [f"{k} {run.get(k)!r} (wanted {v!r})" for k, v in wanted.items() if run.get(k) != v]
    if run.get("label") not in labels:
        wrong.append(f"label {run.get('label')!r} (wanted {' or '.join(map(repr, labels))}; --trained-label "
                     f"{run.get('label')} evaluates it with other kinds)")
    if wrong:
        raise ValueError(f"{path} was trained for {', '.join(wrong)}; pass the checkpoint of that setting")
    return run


def partial_means(rows: dict, folds: list[int], folds_asked: bool) -> bool:
    """Whether to say that means are over the folds evaluated only: some row lacks a fold that was
    asked for (--folds), or the rows' means are over different folds."""
    done = [frozenset(f for f in folds if f in results) for results in rows.values()]
    if folds_asked:
        return any(len(evaluated) < len(folds) for evaluated in done)
    return len({evaluated for evaluated in done if evaluated}) > 1


def format_table(dataset: str, rows: dict, folds: list[int], episodes: int, *, folds_asked: bool = True) -> str:
    """Rows keyed by (label, shots) -> {fold: result}; the layout of the paper's result tables
    (per-fold mIoU, mean, FB-IoU). folds_asked: see partial_means."""
    width = max([9] + [len(label) + 1 for label, _ in rows])
    lines = [
        f"VRP-SAM on {dataset}: mIoU (%) on novel classes, {episodes} episodes per fold",
        f"{'label':<{width}}{'shots':>5}"
        + "".join(f"{'fold' + str(f):>8}" for f in folds)
        + f"{'mean':>8}{'FB-IoU':>8}",
    ]
    for (label, shots), results in rows.items():
        cells = "".join(f"{results[f]['miou']:8.1f}" if f in results else f"{'-':>8}" for f in folds)
        done = [results[f] for f in folds if f in results]
        mean = f"{np.mean([r['miou'] for r in done]):8.1f}" if done else f"{'-':>8}"
        fb = f"{np.mean([r['fbiou'] for r in done]):8.1f}" if done else f"{'-':>8}"
        lines.append(f"{label:<{width}}{shots:>5}{cells}{mean}{fb}")
    if partial_means(rows, folds, folds_asked):
        lines.append("mean and FB-IoU are over the folds evaluated only")
    return "\n".join(lines)


def format_base_table(dataset: str, base_rows: dict, novel_rows: dict, folds: list[int], episodes: int, *,
                      folds_asked: bool = True) -> str:
    """Table 13's layout: mIoU on the base classes per fold and their mean, the novel classes' mean
    beside it. folds_asked: see partial_means."""
    lines = [
        f"VRP-SAM on {dataset}: mIoU (%) on base and novel classes (Table 13), {episodes} episodes per fold and split",
        f"{'':<14}{'base classes':^{8 * (len(folds) + 1)}}{'novel':>8}",
        f"{'label':<9}{'shots':>5}" + "".join(f"{'fold' + str(f):>8}" for f in folds) + f"{'mean':>8}{'mean':>8}",
    ]
    for key, results in base_rows.items():
        cells = "".join(f"{results[f]['miou']:8.1f}" if f in results else f"{'-':>8}" for f in folds)
        means = [[rows[key][f]["miou"] for f in folds if f in rows[key]] for rows in (base_rows, novel_rows)]
        lines.append(
            f"{key[0]:<9}{key[1]:>5}{cells}" + "".join(f"{np.mean(m):8.1f}" if m else f"{'-':>8}" for m in means)
        )
    if partial_means(base_rows, folds, folds_asked):
        lines.append("means are over the folds evaluated only")
    return "\n".join(lines)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    import video  # Table 16: video datasets have their own protocol and flags, in video.py

    if any(value in video.VIDEO_DATASETS for value in _dataset_values(argv)):
        return video.main(argv)
    args = build_parser().parse_args(argv)
    world = distributed.setup(args.device, args.batch_size, "evaluate.py")  # torchrun: join the other ranks
    return cli.run_main("evaluate.py", evaluate, args, world)


def _dataset_values(argv: list[str]) -> list[str]:
    """The values given to --dataset in argv (as `--dataset X` or `--dataset=X`)."""
    return [arg.partition("=")[2] if arg.startswith("--dataset=") else argv[i + 1]
            for i, arg in enumerate(argv) if arg.startswith("--dataset=") or (arg == "--dataset" and i + 1 < len(argv))]


@dataclass(eq=False)  # compared and hashed by identity: a key of the result names
class FoldRun:
    """One checkpoint to score: a fold of a label kind. run: its train.py arguments; parts: the
    frozen files it needs (backbone, SAM, data; check_prerequisites' namespace)."""

    label: str
    fold: int
    path: Path
    state: dict
    run: dict
    parts: argparse.Namespace

    @property
    def image_size(self) -> int:
        return self.run.get("image_size")


def load_fold_runs(args: argparse.Namespace, chosen: dict[tuple[str, int], Path], splits: list[str], *,
                   check: bool = True) -> list[FoldRun]:
    """Every chosen checkpoint read and checked, and every file its run needs found, before any
    episode is scored (one message listing all that is missing; check False: the caller checks the
    parts of several tables at once)."""
    fold_runs = []
    for (label, fold), path in chosen.items():
        state = load_checkpoint(path)
        parts_benchmark = args.dataset == pascal_part.DATASET  # any model, trained on another benchmark
        run = check_checkpoint(path, state, dataset=None if parts_benchmark else args.dataset,
                               fold=None if parts_benchmark else fold, label=trained_labels(args, label),
                               backbone=args.backbone)
        own_benchmark = run.get("dataset") == args.dataset  # a pascal-part run knows where its data is
        data_root = args.data_root or (Path(run.get("data_root", "data")) if own_benchmark or not parts_benchmark
                                       else None)
        if args.sam is not None and args.method in ENCODER_METHODS:  # its encoder prompts only its decoder group
            check_sam_switch(state["config"]["sam"], args.sam, source=str(path))
        parts = argparse.Namespace(
            backbone=state["config"]["backbone"], backbone_weights=run_backbone_weights(state, args.backbone_weights),
            sam=args.sam or state["config"]["sam"],
            sam_checkpoint=run_sam_checkpoint(state, args.sam_checkpoint, sam=args.sam),
            dataset=args.dataset, data_root=data_root, splits=tuple(splits))
        fold_runs.append(FoldRun(label, fold, path, state, run, parts))
    if check:
        check_prerequisites(*(r.parts for r in fold_runs))
    return fold_runs


class ModelShelf:
    """The VRP-SAM (and its embedding cache) for a fold run, built when its frozen parts change:
    one SAM in memory at a time, reused across the folds, shots and label kinds that share it."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device, self.key, self.model, self.cache = args, device, None, None, None

    def get(self, fold_run: FoldRun) -> tuple[VRPSAM, EmbeddingCache | None]:
        parts = fold_run.parts
        config = VRPConfig(**{**fold_run.state["config"], "sam": parts.sam})  # --sam: a SAM of the run's decoder
        key = (config, fold_run.image_size, str(parts.sam_checkpoint), parts.backbone_weights)
        if key != self.key:
            self.model = self.cache = None  # free the previous SAM before building the next
            self.model = build_vrp_sam(config, sam_checkpoint=parts.sam_checkpoint,
                                       backbone_weights=parts.backbone_weights).to(self.device)
            if self.args.backbone_weights is not None:
                warn_if_other_backbone(self.model, fold_run.state, parts.backbone_weights, source=str(fold_run.path))
            if not self.args.no_cache:
                self.cache = EmbeddingCache(self.args.cache_dir, self.model.sam, fold_run.image_size)
            self.key = key
        if self.args.untrained:
            self.model.reset_learnable_parameters(seed=fold_run.run.get("seed", 0))  # as train.py initialised it
        else:
            self.model.load_learnable_state_dict(fold_run.state["model"])
        return self.model, self.cache


def score_fold(args: argparse.Namespace, fold_run: FoldRun, shelf: ModelShelf, *, shots: int, split: str,
               variant: str | None, name: str, world: distributed.World) -> dict:
    """One table cell: fold_run's encoder (or --method's baseline) on the fold's fixed episodes."""
    model, cache = shelf.get(fold_run)
    label, fold = fold_run.label, fold_run.fold
    if args.dataset == pascal_part.DATASET:  # Table 15: Matcher's part episodes, cropped to the object
        dataset = pascal_part.build_part_episodes(fold_run.parts.data_root, fold=fold, shots=shots, label=label,
                                                  image_size=fold_run.image_size, seed=args.seed,
                                                  num_episodes=args.episodes, original_size=args.original_size)
        class_ids, class_names, episodes_hash = dataset.class_ids, dataset.class_names, pascal_part.episodes_hash
    else:
        dataset = data.build_dataset(args.dataset, split=split, fold=fold, shots=shots, label=label,
                                     data_root=fold_run.parts.data_root, image_size=fold_run.image_size,
                                     num_episodes=args.episodes, seed=args.seed, original_size=args.original_size,
                                     cache_dir=args.cache_dir, progress=world.is_main)
        class_ids, class_names = data.fold_classes(args.dataset, fold, split), data.class_names(args.dataset, split)
        episodes_hash = data.episodes_hash
    episodes, predictor = dataset, None  # the same fixed episodes and metric for every method
    threshold = gp_threshold(args)
    if args.method == "gp-sam":
        predictor = gp_sam_predictor(model, prompt=variant, seed=args.seed, cache=cache, device=shelf.device,
                                     threshold=threshold)
    elif args.method in ("every-class-object", "every-object"):
        predictor = oracle_predictor(dataset, args.method)
    elif args.method == "wrong-reference":
        episodes = WrongReferenceEpisodes(dataset, seed=args.seed)
    row = label if variant is None else f"{label}/{variant}"
    what = (f"{row} {shots}-shot fold {fold}" + ("" if split == "test" else f" {split}")
            + ("" if args.method == "vrp-sam" else f" {args.method}"))
    result = evaluate_episodes(
        model, episodes, class_ids=class_ids, batch_size=args.batch_size, workers=args.workers, cache=cache,
        original_size=args.original_size, save_vis=args.save_vis, vis_dir=fold_run.path.parent / f"vis-{name}",
        desc=what, predictor=predictor, world=world,
    )
    if result["classes_without_episodes"] and world.is_main:
        print(no_episode_warning(result, args.dataset, what))
    result.update(checkpoint=str(fold_run.path), trained_label=fold_run.run.get("label"), sam=fold_run.parts.sam,
                  episodes_hash=episodes_hash(dataset), seed=args.seed, untrained=args.untrained,
                  original_size=args.original_size, method=args.method, split=split,
                  class_names={c: class_names[c - 1] for c in result["class_iou"]})
    if args.method == "gp-sam":
        result.update(gp_prompt=variant, gp_threshold=threshold, gp_num_points=GP_NUM_POINTS)
    return result


def gp_threshold(args: argparse.Namespace) -> float:
    return GP_THRESHOLD if args.gp_threshold is None else args.gp_threshold


def check_method_flags(args: argparse.Namespace) -> None:
    """Flags that belong to another --method, refused before anything is read."""
    if args.method != "vrp-sam" and args.untrained:
        raise ValueError(f"--untrained applies to trained encoders (--method vrp-sam) only; --method {args.method} "
                         "uses no learnable encoder weights, drop --untrained")
    if args.method != "gp-sam" and (args.gp_prompt is not None or args.gp_threshold is not None):
        raise ValueError(f"--gp-prompt / --gp-threshold apply to --method gp-sam only (got --method {args.method})")
    if args.dataset == pascal_part.DATASET and args.method not in ("vrp-sam", "gp-sam"):
        raise ValueError(f"--method {args.method} reads the class labels of whole scenes; on pascal-part use vrp-sam "
                         "or gp-sam")


def table_title(args: argparse.Namespace, setting: str = "") -> str:
    """The dataset, then what sets the table's runs apart (Table.setting), the method, the trained label kind."""
    title = (
        args.dataset
        + (f", {setting}" if setting else "")
        + {
            "vrp-sam": " (untrained encoder)" if args.untrained else "",
            "gp-sam": f", GP-SAM (Table 3): geometric prompts from the pseudo mask >= {gp_threshold(args)}",
            "every-class-object": ", yardstick: every class object of the target, no reference",
            "every-object": ", yardstick: every object of the target, no reference",
            "wrong-reference": ", the trained encoder given a reference of another class",
        }[args.method]
    )
    if args.trained_label is not None:
        title += f", encoders trained with {args.trained_label} labels"
    if args.sam is not None:
        title += f", on SAM {args.sam}"
    return title


def write_results(outputs: list[tuple[Path, dict]]) -> None:
    """Each result JSON, an earlier one scored on other episodes set aside; every failure reported
    after all were tried (the table is already printed, so nothing is lost)."""
    failed = []
    for json_path, result in outputs:
        try:
            kept = set_aside_other_episodes(json_path, result)
            if kept is not None:
                print(f"{json_path.name} held a result on other episodes (the data changed): kept as {kept.name}")
            cli.write_json(json_path, result)
        except OSError as error:
            failed.append(str(error))
    if failed:
        more = f" (and {len(failed) - 1} more result file(s))" if len(failed) > 1 else ""
        raise OSError(f"{failed[0]}{more}; the table above holds the results")


def evaluate(args: argparse.Namespace, world: distributed.World = distributed.World()) -> dict:
    """Score every chosen (label kind, fold) of every table (select_tables: one per dataset and
    setting of the runs found) for every --shots and --method variant; print each paper-style
    table, then write one eval-*.json per cell beside its checkpoint. Returns the rows
    {"<label>/<shots>[/base]": {fold: result}}, of each table by its name when there are several."""
    check_method_flags(args)
    folds_asked = args.folds is not None  # folds nobody asked for and no run has are not reported missing
    if args.folds is None:
        args.folds = list(range(data.NUM_FOLDS))
    tables = select_tables(args, args.label, args.folds)
    if args.split == "base":
        lacking = [table for table in tables if table.dataset not in data.BASE_SPLIT_DATASETS]
        if len(lacking) == len(tables):
            raise ValueError(f"--split base: {lacking[0].dataset} has no training images, so no base set (Table 13); "
                             "leave --split at test")
        for table in lacking if world.is_main else ():
            print(f"--split base: {table.dataset} has no training images, so no base set (Table 13): skipped")
        tables = [table for table in tables if table not in lacking]
    splits = ["base", "test"] if args.split == "base" else ["test"]  # Table 13 prints the novel mean beside the base
    loaded = []
    for table in tables:  # every checkpoint read and every file found before any episode is scored
        table_args = argparse.Namespace(**vars(args))
        table_args.dataset = table.dataset
        if args.episodes is None and table.dataset != pascal_part.DATASET:
            table_args.episodes = 1000  # the paper's; pascal-part's default is Matcher's count (episode_count)
        check_method_flags(table_args)
        fold_runs = load_fold_runs(table_args, table.chosen, splits, check=False)
        loaded.append((table, table_args, table_cells(table_args, fold_runs, splits)))
    check_prerequisites(*(cell[0].parts for _, _, cells in loaded for cell in cells))
    if args.save_vis:  # a folder that cannot be written fails now, not after the scoring
        for _, _, cells in loaded:
            for (fold_run, *_), name in cells.items():
                (fold_run.path.parent / f"vis-{name}").mkdir(parents=True, exist_ok=True)

    shelf = ModelShelf(args, torch.device(args.device))  # under torchrun: this rank's GPU (distributed.setup)
    outputs: list[tuple[Path, dict]] = []
    results = {}
    for table, table_args, cells in loaded:
        if world.is_main and table is not tables[0]:
            print()
        rows, table_outputs = score_table(table_args, table, cells, shelf, splits, world=world,
                                          folds_asked=folds_asked, several=len(tables) > 1)
        outputs += table_outputs
        by_row = {f"{row}/{shots}": by_fold for (row, shots), by_fold in rows["test"].items()}
        by_row.update({f"{row}/{shots}/base": by_fold for (row, shots), by_fold in rows.get("base", {}).items()})
        results[table.name] = by_row
    write_results(outputs)  # after every table is printed: a failed write cannot lose them
    return next(iter(results.values())) if len(results) == 1 else results


def method_variants(args: argparse.Namespace) -> list[str | None]:
    return (args.gp_prompt or list(GP_PROMPTS)) if args.method == "gp-sam" else [None]  # Table 3's rows


def table_cells(args: argparse.Namespace, fold_runs: list[FoldRun], splits: list[str]) -> dict[tuple, str]:
    """{(fold run, shots, variant, split): result name} of one table, in the order they are scored."""
    by_key = {(r.label, r.fold): r for r in fold_runs}
    cells = [
        (by_key[(label, fold)], shots, variant, split)
        for label, shots, variant, fold, split in itertools.product(
            args.label, args.shots, method_variants(args), args.folds, splits
        )
        if (label, fold) in by_key
    ]
    return {cell: _result_name(args, *cell) for cell in cells}


def score_table(args: argparse.Namespace, table: Table, names: dict[tuple, str], shelf: ModelShelf,
                splits: list[str], *, world: distributed.World, folds_asked: bool,
                several: bool) -> tuple[dict, list[tuple[Path, dict]]]:
    """One table (args.dataset is its dataset): its cells (table_cells) scored and the table printed;
    returns its rows {split: {(row, shots): {fold: result}}} and the result files to write.
    several: the table is one of several, so it names its runs, one line each, under it."""
    in_play = {fold for _, fold in table.chosen}
    missing = [f"{label} fold {fold}" for label in args.label for fold in args.folds
               if (label, fold) not in table.chosen and (folds_asked or fold in in_play)]
    if missing and world.is_main:
        where = f" for {table.name}" if several else ""
        print(f"no checkpoint under {args.runs}{where} for: {', '.join(missing)} (skipped)")
    rows: dict[str, dict[tuple[str, int], dict[int, dict]]] = {split: {} for split in splits}
    for label, shots, variant, split in itertools.product(args.label, args.shots, method_variants(args), splits):
        rows[split][(label if variant is None else f"{label}/{variant}", shots)] = {}
    outputs: list[tuple[Path, dict]] = []
    for cell in names:
        fold_run, shots, variant, split = cell
        result = score_fold(args, fold_run, shelf, shots=shots, split=split, variant=variant, name=names[cell],
                            world=world)
        row = fold_run.label if variant is None else f"{fold_run.label}/{variant}"
        rows[split][(row, shots)][fold_run.fold] = result
        if world.is_main:  # under torchrun, rank 0 alone prints and writes
            outputs.append((fold_run.path.parent / f"eval-{names[cell]}.json", result))
    if world.is_main:  # the results first: a failed write cannot lose them
        title = table_title(args, table.setting)
        if args.dataset == pascal_part.DATASET:
            print(pascal_part.format_part_table(title, rows["test"], args.folds))
        elif args.split == "base":
            print(format_base_table(title, rows["base"], rows["test"], args.folds, args.episodes,
                                    folds_asked=folds_asked))
        else:
            print(format_table(title, rows["test"], args.folds, args.episodes, folds_asked=folds_asked))
        if several:
            print("\n".join(f"  {label} fold {fold}: {path}" for (label, fold), path in table.chosen.items()))
    return rows, outputs


def _result_name(args: argparse.Namespace, fold_run: FoldRun, shots: int, variant: str | None, split: str) -> str:
    other_file = args.sam_checkpoint is not None and str(args.sam_checkpoint) != fold_run.run.get("sam_checkpoint")
    other_sam = other_file or fold_run.parts.sam != fold_run.state["config"]["sam"]
    method = None if args.method == "vrp-sam" else args.method + (f"-{variant}" if variant else "")
    if args.method == "gp-sam" and args.gp_threshold not in (None, GP_THRESHOLD):
        method += f"-t{args.gp_threshold}"  # another binarisation, another result
    benchmark = (f"{pascal_part.DATASET}-{pascal_part.FOLDS[fold_run.fold]}" if args.dataset == pascal_part.DATASET
                 else None)
    return result_name(label=fold_run.label, shots=shots, episodes=args.episodes, seed=args.seed,
                       untrained=args.untrained, original_size=args.original_size,
                       sam=Path(fold_run.parts.sam_checkpoint).stem if other_sam else None, method=method, split=split,
                       benchmark=benchmark)


def no_episode_warning(result: dict, dataset: str, what: str) -> str:
    names = ", ".join(f"{c} ({data.class_names(dataset)[c - 1]})" for c in result["classes_without_episodes"])
    return (f"warning: {what}: no episode of class {names} among {result['episodes']}; counted as IoU 0 in the "
            "mIoU, as HSNet and the authors do: use more episodes (--episodes / --val-episodes)")


if __name__ == "__main__":
    main()
