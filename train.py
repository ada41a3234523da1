"""Meta-train the VRP encoder on a fold's base classes (paper §4.3 and §5.1 "Implementation details").

    python train.py --dataset synthetic                  # embedded benchmark, CPU, minutes
    python train.py --dataset pascal --fold 1 --data-root data --sam-checkpoint checkpoints/sam_vit_h_4b8939.pth
    python train.py --dataset pascal --fold 1 ... --resume    # continue an interrupted run

Only the VRP encoder (~1.6M parameters with ResNet-50) learns; the backbone and SAM stay frozen.
Loss is Eq. 6 (BCE + Dice), optimiser AdamW with cosine decay stepped every iteration, and the
best checkpoint is chosen by mIoU on the fold's fixed test episodes, as the authors do.

A run folder holds `config.json` (every argument, resolved), `metrics.jsonl` (one line per epoch),
`last.pt` and `best.pt` (learnable weights + the config that built them). Training episodes are a
pure function of (seed, epoch, index) and every epoch reseeds dropout and the shuffle order, so a
resumed run continues exactly as an uninterrupted one would. SAM's image embeddings of the targets
are computed once and then served from an on-disk cache (`--cache-dir`).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import cli
import data
import distributed
import pascal_part
from evaluate import check_prerequisites, episode_loader, evaluate_episodes, no_episode_warning, predict
from model import (BACKBONES, LOSSES, QUERY_INITS, SAM_TYPES, VRPSAM, EmbeddingCache, VRPConfig, build_vrp_sam,
                   default_sam_checkpoint, load_checkpoint, module_fingerprint, save_checkpoint, vrp_loss)

ROOT = Path(__file__).resolve().parent
# §5.1: PASCAL 100 epochs at 2e-4, COCO 50 epochs at 1e-4. The synthetic benchmark is sized to train
# on a 2-core CPU in minutes, on the tiny backbone and the pre-trained tiny SAM (pretrain_tiny_sam.py).
DATASET_DEFAULTS = {
    "pascal": dict(epochs=100, lr=2e-4, backbone="resnet50", sam="vit_h", image_size=512, val_episodes=1000),
    "coco": dict(epochs=50, lr=1e-4, backbone="resnet50", sam="vit_h", image_size=512, val_episodes=1000),
    "coco2pascal": dict(epochs=50, lr=1e-4, backbone="resnet50", sam="vit_h", image_size=512, val_episodes=1000),
    # Table 15's part folds, meta-trained on the other three super-categories (not in the paper, which
    # does not say what its Table 15 model was trained on): COCO-20i's recipe.
    "pascal-part": dict(epochs=50, lr=1e-4, backbone="resnet50", sam="vit_h", image_size=512, val_episodes=1000),
    # lr 4e-4 for 8 epochs (about 7.7 min on 2 cores): 1e-3 for 6 scored 13 (per-pixel backbone, 3 seeds)
    # to 15 (image-level, seed 0) mIoU lower, its seeds 5x as spread (docs/results.md)
    "synthetic": dict(epochs=8, lr=4e-4, backbone="tiny", sam="tiny", image_size=128, val_episodes=300,
                      # the tiny backbone pre-trained like an ImageNet one, on image-level labels
                      # (pretrain_tiny_backbone.py --task image)
                      backbone_weights=str(ROOT / "checkpoints" / "tiny_backbone_synthetic.pth")),
}
# Arguments that must not change when a run is resumed: they define its schedule, its training and
# validation episodes (best.pt is chosen across epochs, so all must be scored on the same ones), and
# its frozen parts. The frozen weights and the validation episode list are also compared by
# fingerprint (FROZEN_KEYS), so a file replaced under the same name is caught too.
RESUME_KEYS = ("dataset", "fold", "label", "shots", "image_size", "epochs", "lr", "weight_decay", "batch_size",
               "steps_per_epoch", "seed", "val_episodes", "backbone", "sam", "loss")
# What a run saved before a flag existed used that flag's default.
RESUME_DEFAULTS = {"loss": "bce+dice"}
# Compared after the model and data are built; the weights by content, not by path, so a run can move.
FROZEN_KEYS = ("sam_fingerprint", "backbone_fingerprint", "val_episodes_hash")
METRICS_FILE = "metrics.jsonl"  # one JSON line per epoch: loss, validation mIoU / FB-IoU, lr, timings
MIN_IMAGE_SIZE = 32  # the backbone's output stride 8 leaves a 4x4 feature grid


def build_parser() -> argparse.ArgumentParser:
    """Every value is checked here, at parse time (cli.py's types), before anything is built or written."""
    parser = cli.ArgumentParser(prog="train.py", description="Meta-train the VRP encoder (VRP-SAM, CVPR 2024).",
                                formatter_class=cli.HelpFormatter)
    defaults = lambda key: cli.per_dataset(DATASET_DEFAULTS, key)  # noqa: E731
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", choices=(*data.DATASETS, pascal_part.DATASET), default="pascal",
                       help="benchmark whose base classes train the encoder")
    group.add_argument(
        "--fold", type=int, choices=range(data.NUM_FOLDS), default=0,
        help="fold whose test (novel) classes are held out",
    )
    group.add_argument(
        "--label", choices=data.LABEL_CHOICES, default="mask",
        help="simulated annotation of the references; 'any' draws one kind per episode, so one model serves all four",
    )
    group.add_argument("--shots", type=cli.positive_int, default=1, help="references per training episode")
    group.add_argument(
        "--data-root", type=Path, default=Path("data"), help="folder holding VOC2012/ and/or the COCO 2014 layout"
    )
    group.add_argument("--image-size", type=cli.int_range(MIN_IMAGE_SIZE), default=None,
                       help=f"side of the square network input, at least {MIN_IMAGE_SIZE} ({defaults('image_size')})")
    group = parser.add_argument_group("model")
    group.add_argument(
        "--backbone",
        choices=BACKBONES,
        default=None,
        help=f"frozen semantic-aware encoder ({defaults('backbone')}); *_deepstem: the authors' PSPNet ResNet, "
        "with --backbone-weights resnet50_v2.pth",
    )
    group.add_argument(
        "--backbone-weights",
        default=None,
        help="'imagenet' (torchvision's weights), 'random', or a local state-dict file (default: imagenet; "
        "synthetic: checkpoints/tiny_backbone_synthetic.pth, made by pretrain_tiny_backbone.py)",
    )
    group.add_argument("--sam", choices=SAM_TYPES, default=None, metavar="SAM",
                       help=f"frozen SAM ({defaults('sam')}): SAM vit_h / vit_l / vit_b, MobileSAM vit_t, SAM 2 and "
                            "2.1 sam2_hiera_{t,s,b+,l} / sam2.1_hiera_{t,s,b+,l}, or the synthetic benchmark's tiny, "
                            "tiny_distilled, sam2_tiny (docs/sam2.md)")
    group.add_argument(
        "--sam-checkpoint", type=Path, default=None,
        help="SAM weights (default: checkpoints/<official file name>, e.g. sam_vit_h_4b8939.pth, mobile_sam.pt, "
             "sam2.1_hiera_large.pt; tiny: sam_tiny_synthetic.pth; sam2_tiny: sam2_tiny_synthetic.pth)",
    )
    group.add_argument(
        "--num-queries", type=cli.positive_int, default=50, help="learnable queries per reference (Fig. 6)"
    )
    group.add_argument("--query-init", choices=QUERY_INITS, default="random",
                       help="Table 6: learnable queries alone (random), or plus the reference's foreground (fp) / "
                            "background (bp) prototype, or half each (half); see model.PromptGenerator.initial_queries")
    group.add_argument(
        "--label-downsample",
        choices=("area", "max", "nearest"),
        default="area",
        help="how annotations shrink to feature resolution ('nearest' = authors' code, which drops most points; "
        "docs/differences.md)",
    )
    group.add_argument("--pseudo-mask-norm", choices=("none", "minmax"), default="none",
                       help="pseudo mask normalisation (App. A): 'none' = authors' code, 'minmax' = the paper's text")
    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=cli.positive_int, default=None, help=f"training epochs ({defaults('epochs')})")
    group.add_argument(
        "--lr", type=cli.positive_float, default=None, help=f"AdamW learning rate, cosine-decayed ({defaults('lr')})"
    )
    group.add_argument("--weight-decay", type=cli.nonnegative_float, default=1e-6, help="AdamW weight decay (§5.1)")
    group.add_argument(
        "--loss", choices=LOSSES, default="bce+dice", help="Eq. 6's BCE + Dice, or one term alone (Table 5)"
    )
    group.add_argument("--batch-size", type=cli.positive_int, default=8,
                       help="episodes per iteration (§5.1: 8 in all)")
    group.add_argument("--steps-per-epoch", type=cli.positive_int, default=None,
                       help="cap on iterations per epoch (default: no cap, one pass over the training targets)")
    group.add_argument(
        "--seed", type=cli.nonnegative_int, default=0,
        help="seeds the initialisation, training episodes and validation episodes",
    )
    group = parser.add_argument_group("validation and output")
    group.add_argument("--val-episodes", type=cli.positive_int, default=None,
                       help=f"fixed test episodes scored after each epoch ({defaults('val_episodes')})")
    group.add_argument(
        "--out", type=Path, default=None,
        help="run folder (default: runs/<dataset>-fold<k>-<label>-<backbone>, then a suffix for each setting that "
             "is not the dataset's default, e.g. -loss-bce: cli.RUN_SETTINGS)"
    )
    group.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    cli.add_runtime_args(group)
    return parser


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the per-dataset defaults (§5.1) and the derived paths."""
    defaults = DATASET_DEFAULTS[args.dataset]
    for key, value in defaults.items():
        if key == "backbone_weights" and args.backbone != defaults["backbone"]:
            continue  # the dataset's weights are for its default backbone only
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.backbone_weights is None and args.backbone != "tiny":
        args.backbone_weights = "imagenet"
    if args.sam_checkpoint is None:
        args.sam_checkpoint = default_sam_checkpoint(args.sam)
    if args.out is None:
        args.out = default_out(args)
    return args


def default_out(args: argparse.Namespace) -> Path:
    """The run folder when --out is not given: cli.run_folder, naming each setting (cli.RUN_SETTINGS)
    whose value is not the one the run would have by default, so runs of other settings never share
    a folder. A setting's default follows the settings before it (the SAM file follows --sam, the
    backbone weights follow --backbone), as resolve_args fills it."""
    unset = vars(build_parser().parse_args(["--dataset", args.dataset]))
    given = {"backbone": args.backbone, "out": Path()}  # the backbone is named in the folder already
    differences = {}
    for setting in cli.RUN_SETTINGS:
        default = getattr(resolve_args(argparse.Namespace(**{**unset, **given})), setting.key)
        value = getattr(args, setting.key)
        if not same_setting(value, default, path=setting.path):
            differences[setting.key] = value
        given[setting.key] = value
    return cli.run_folder(args.dataset, args.fold, args.label, args.backbone, differences)


def same_setting(value: object, default: object, *, path: bool) -> bool:
    """Equal values; for a file, the same file however it is written (relative, absolute)."""
    if value == default or not path or None in (value, default):
        return value == default
    return Path(str(value)).resolve() == Path(str(default)).resolve()


def parse_args(argv=None) -> argparse.Namespace:
    """Parsed, resolved and checked arguments; a bad value or combination exits with one line."""
    parser = build_parser()
    args = resolve_args(parser.parse_args(argv))
    if args.backbone == "tiny" and args.backbone_weights == "imagenet":
        parser.error(
            "argument --backbone-weights: the tiny backbone has no ImageNet weights; pass a state-dict file or "
            "leave it unset"
        )
    return args


def model_config(args: argparse.Namespace) -> VRPConfig:
    return VRPConfig(backbone=args.backbone, sam=args.sam, num_queries=args.num_queries,
                     label_downsample=args.label_downsample, pseudo_mask_norm=args.pseudo_mask_norm,
                     query_init=args.query_init)


def jsonable(args: argparse.Namespace) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def load_resume_state(args: argparse.Namespace, config: VRPConfig) -> dict | None:
    """The last checkpoint of the run in args.out when resuming; refuse to overwrite a run otherwise."""
    last = args.out / "last.pt"
    if not args.resume:
        if last.exists():
            raise FileExistsError(
                f"{args.out} already holds a run ({last}); pass --resume to continue it, or --out elsewhere"
            )
        return None
    if not last.exists():
        raise FileNotFoundError(f"--resume: {last} not found; start the run without --resume")
    state = load_checkpoint(last, config=config)
    saved = {**RESUME_DEFAULTS, **state.get("args", {})}
    now = jsonable(args)
    changed = [
        f"--{k.replace('_', '-')}: run {saved.get(k)}, now {now[k]}" for k in RESUME_KEYS if saved.get(k) != now[k]
    ]
    if changed:
        raise ValueError(
            f"--resume: {args.out} was started with other settings ({'; '.join(changed)}); use the run's own settings"
        )
    return state


def check_frozen_parts(args: argparse.Namespace, resume: dict | None) -> None:
    """On resume, refuse other SAM or backbone weights, or another validation episode list, than
    the run's (args holds FROZEN_KEYS; runs saved before these were recorded are not compared)."""
    if resume is None:
        return
    saved = resume.get("args", {})
    what = {"sam_fingerprint": f"SAM weights ({args.sam_checkpoint})",
            "backbone_fingerprint": f"backbone weights ({args.backbone_weights})",
            "val_episodes_hash": "validation episodes (data under --data-root changed?)"}
    changed = [what[k] for k in FROZEN_KEYS if k in saved and saved[k] != getattr(args, k)]
    if changed:
        raise ValueError(f"--resume: {args.out} was trained with other {' and other '.join(changed)}; "
                         "resume with the run's own files, or start a new run with --out elsewhere")


def train_step(model, batch: dict, *, optimizer, scheduler, scaler, cache: EmbeddingCache | None, device: torch.device,
               loss_kind: str = "bce+dice", world: distributed.World = distributed.World()) -> float:
    """One iteration on a batch of episodes (under torchrun: this rank's share of the global batch);
    returns the global batch's loss (Eq. 6, or one of its terms: Table 5)."""
    logits = predict(model, batch, cache, device)
    global_sum = world.sum if world.size > 1 else None  # normalise over the global batch
    loss = vrp_loss(
        logits.float(), batch["target_mask"].to(device, non_blocking=True), loss=loss_kind, global_sum=global_sum
    )
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss * world.size).backward()  # DDP averages the ranks' gradients: their sum is the global batch's
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()  # cosine decay per iteration
    return world.sum(loss.detach()).item()


def main(argv=None) -> dict:
    args = parse_args(argv)
    world = distributed.setup(args.device, args.batch_size, "train.py")  # torchrun: join the other ranks
    return cli.run_main("train.py", train_resumably, args, world)


def train_resumably(args: argparse.Namespace, world: distributed.World) -> dict:
    """train(); under torchrun, another rank lost ends this one in a line naming the last.pt to
    resume from, not in the collective's traceback."""
    with distributed.resumable(world, args.out / "last.pt"):
        return train(args, world)


@dataclass
class Run:
    """What one training run holds: the model (and its DDP wrapper), the data, the optimiser's
    state, and where the epochs start (0, or after the last checkpoint with --resume)."""

    model: VRPSAM
    trained: torch.nn.Module
    train_set: torch.utils.data.Dataset
    val_set: torch.utils.data.Dataset
    cache: EmbeddingCache | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    steps_per_epoch: int
    start_epoch: int = 0
    best_miou: float = -1.0


def build_run(args: argparse.Namespace, world: distributed.World, device: torch.device) -> Run:
    """Everything checked, then built in a fixed order (the seeded parts first), then resumed."""
    config = model_config(args)
    check_prerequisites(args)  # everything missing, in one message, before anything is built
    resume = load_resume_state(args, config)

    # The model first: a bad SAM or backbone file is reported before any dataset indexing.
    model = build_vrp_sam(config, sam_checkpoint=args.sam_checkpoint, backbone_weights=args.backbone_weights,
                          seed=args.seed).to(device)
    trained = distributed.wrap(model, world)  # DDP over the ranks; the model itself in one process
    train_set, val_set = build_episodes(args, world)
    args.sam_fingerprint, args.backbone_fingerprint = module_fingerprint(model.sam), module_fingerprint(model.backbone)
    args.val_episodes_hash = (pascal_part.episodes_hash if args.dataset == pascal_part.DATASET
                              else data.episodes_hash)(val_set)
    check_frozen_parts(args, resume)

    cache = None if args.no_cache else EmbeddingCache(args.cache_dir, model.sam, args.image_size)
    optimizer = torch.optim.AdamW(model.learnable_parameters(), lr=args.lr, betas=(0.9, 0.999),
                                  weight_decay=args.weight_decay)
    steps_per_epoch = len(train_set) // args.batch_size
    if args.steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, args.steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(
            f"--batch-size {args.batch_size} exceeds the {len(train_set)} training images of fold {args.fold}"
        )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * steps_per_epoch)
    # fp16 autocast needs loss scaling; bf16 and fp32 do not (the scaler is then a no-op)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
    run = Run(model, trained, train_set, val_set, cache, optimizer, scheduler, scaler, steps_per_epoch)
    if resume is not None:
        model.load_learnable_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        run.start_epoch, run.best_miou = resume["epoch"] + 1, resume["best_miou"]
    return run


def build_episodes(args: argparse.Namespace, world: distributed.World) -> tuple[Dataset, Dataset]:
    """The fold's training episodes (its base classes) and fixed validation episodes (its novel ones)."""
    common = dict(fold=args.fold, shots=args.shots, label=args.label, image_size=args.image_size, seed=args.seed)
    if args.dataset == pascal_part.DATASET:  # the other three super-categories' parts train, the fold's test
        return (pascal_part.build_part_episodes(args.data_root, split="train", **common),
                pascal_part.build_part_episodes(args.data_root, split="test", num_episodes=args.val_episodes, **common))
    dataset_args = dict(data_root=args.data_root, cache_dir=args.cache_dir, progress=world.is_main, **common)
    return (data.build_dataset(args.dataset, split="train", **dataset_args),
            data.build_dataset(args.dataset, split="test", num_episodes=args.val_episodes, **dataset_args))


def start_output(args: argparse.Namespace, run: Run, device: torch.device, world: distributed.World) -> None:
    """config.json (a resumed run keeps the one it started with), the log trimmed to the epochs
    that are kept, and the run's header."""
    args.out.mkdir(parents=True, exist_ok=True)
    if run.start_epoch == 0:
        cli.write_json(args.out / "config.json", jsonable(args))
    write_log(args.out / METRICS_FILE, read_log(args.out / METRICS_FILE, before=run.start_epoch))
    print(f"VRP-SAM | {args.dataset} fold {args.fold} | label {args.label} | {args.shots}-shot | "
          f"backbone {args.backbone} | SAM {args.sam} | {device}")
    print(f"loss {args.loss} | {args.num_queries} queries, init {args.query_init}")
    print(f"learnable parameters: {run.model.num_learnable_parameters():,} (paper, Table 2: 1.6M with ResNet-50)")
    print(f"{len(run.train_set)} training targets/epoch, {len(run.val_set)} validation episodes, "
          f"epochs {run.start_epoch}..{args.epochs - 1}"
          + (f", {world.size} processes of batch {args.batch_size // world.size}" if world.size > 1 else ""))


def read_log(path: Path, *, before: int) -> list[str]:
    """The log lines of the epochs before `before` (the later ones are about to be redone)."""
    if before == 0 or not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if json.loads(line)["epoch"] < before]


def write_log(path: Path, lines: list[str]) -> None:
    cli.write_atomic(path, "".join(line + "\n" for line in lines).encode())


def train_epoch(args: argparse.Namespace, run: Run, loader: DataLoader, order: data.EpochOrder, epoch: int, *,
                device: torch.device, world: distributed.World) -> list[float]:
    """One epoch of steps_per_epoch global batches, in the epoch's seeded order; its losses."""
    seed = epoch_seed(args.seed, epoch)
    torch.manual_seed(distributed.rank_seed(seed, world))  # dropout: the same masks whether or not the run was resumed
    order.set_epoch(epoch, seed)
    run.model.train()
    losses = []
    bar = tqdm(loader, total=run.steps_per_epoch, desc=f"epoch {epoch}", dynamic_ncols=True, disable=not world.is_main)
    for step, batch in enumerate(bar):
        if step == run.steps_per_epoch:
            break
        losses.append(
            train_step(
                run.trained, batch, optimizer=run.optimizer, scheduler=run.scheduler, scaler=run.scaler,
                cache=run.cache, device=device, loss_kind=args.loss, world=world,
            )
        )
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}")
    return losses


def train(args: argparse.Namespace, world: distributed.World = distributed.World()) -> dict:
    """§5.1: meta-train the VRP encoder on the fold's base classes, validating on fixed episodes of
    its novel classes after every epoch; best.pt keeps the best validation mIoU, last.pt the last."""
    device = torch.device(args.device)  # under torchrun: this rank's GPU (distributed.setup)
    run = build_run(args, world, device)
    if world.is_main:  # under torchrun, rank 0 alone writes and prints
        start_output(args, run, device, world)
    class_ids = (run.val_set.class_ids if args.dataset == pascal_part.DATASET
                 else data.fold_classes(args.dataset, args.fold, "test"))

    # One shuffled order per epoch for all ranks (each reads its chunk of every global batch), as
    # (epoch, index) pairs: one loader serves every epoch and its workers keep what they cached.
    order = data.EpochOrder(len(run.train_set))
    loader = DataLoader(run.train_set, batch_size=args.batch_size // world.size, drop_last=True,
                        sampler=distributed.GlobalBatchShare(order, args.batch_size, world),
                        generator=torch.Generator().manual_seed(args.seed),  # leaves the global RNG to dropout
                        num_workers=args.workers, persistent_workers=args.workers > 0,
                        pin_memory=device.type == "cuda", collate_fn=data.collate_episodes)
    # The same validation episodes every epoch: one loader whose workers keep the scenes they rendered.
    val_loader = episode_loader(run.val_set, batch_size=args.batch_size, workers=args.workers, device=device,
                                world=world, persistent=True)
    log = read_log(args.out / METRICS_FILE, before=run.start_epoch) if world.is_main else []
    for epoch in range(run.start_epoch, args.epochs):
        start = time.time()
        losses = train_epoch(args, run, loader, order, epoch, device=device, world=world)
        train_time = time.time() - start
        result = evaluate_episodes(run.model, run.val_set, class_ids=class_ids, batch_size=args.batch_size,
                                   cache=run.cache, desc=f"validate {epoch}", world=world, loader=val_loader)
        if result["classes_without_episodes"] and epoch == run.start_epoch and world.is_main:
            print(no_episode_warning(result, args.dataset, f"validation of fold {args.fold}"))  # the same every epoch
        is_best = result["miou"] > run.best_miou
        run.best_miou = max(run.best_miou, result["miou"])
        if not world.is_main:
            continue
        state = dict(epoch=epoch, best_miou=run.best_miou, args=jsonable(args), optimizer=run.optimizer.state_dict(),
                     scheduler=run.scheduler.state_dict(), scaler=run.scaler.state_dict(), val_miou=result["miou"],
                     val_fbiou=result["fbiou"])
        line = dict(
            epoch=epoch, loss=float(np.mean(losses)), miou=result["miou"], fbiou=result["fbiou"],
            lr=run.scheduler.get_last_lr()[0], train_s=round(train_time, 1), time_s=round(time.time() - start, 1),
            steps_per_s=round(len(losses) / train_time, 3),
        )
        # The log line first: a run killed before its checkpoint redoes (and re-logs) this epoch.
        log.append(json.dumps(line))
        write_log(args.out / METRICS_FILE, log)
        if is_best:
            save_checkpoint(args.out / "best.pt", run.model, **state)
        save_checkpoint(args.out / "last.pt", run.model, **state)
        print(f"epoch {epoch}: loss {line['loss']:.4f} | val mIoU {result['miou']:.1f} FB-IoU {result['fbiou']:.1f}"
              f"{' (best)' if is_best else ''} | {line['time_s']:.0f}s")
    if world.is_main:
        print(f"best val mIoU {run.best_miou:.1f}; checkpoints in {args.out}")
    return {"best_miou": run.best_miou, "out": str(args.out)}


if __name__ == "__main__":
    main()
