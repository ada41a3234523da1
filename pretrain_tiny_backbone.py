"""Pre-train the tiny backbone that the embedded synthetic benchmark freezes (docs/synthetic.md).

VRP-SAM's image encoder is *semantic-aware* (§4.1): an ImageNet ResNet-50 whose high-level features
already tell a dog from a cat, even where "dog" is a novel PASCAL class. The pseudo mask (Appendix A)
and the GP-SAM baseline (Table 3) are built from those features. A randomly initialised tiny
backbone has nothing semantic in them, so, before the synthetic benchmark is used, this script
pre-trains model.py's `tiny` backbone the way an ImageNet backbone is pre-trained: supervised, on
scenes from a seed stream of its own (never the benchmark's train or test images), with labels
that know every shape and every appearance (all 20 classes, novel ones included, as ImageNet knows
dogs). Two kinds of supervision (``--task``):

- ``pixel``:  per-pixel 21-way segmentation (background + 20 classes), a 1x1 classifier on the
              5th block, cross-entropy with the 1-px ring around each object ignored.
- ``image``:  image-level multi-label, as ImageNet gives: which of the 5 shapes and which of the
              4 appearances occur among the scene's class objects (9 sigmoid outputs), a linear
              classifier on the globally average-pooled 5th block.

    python pretrain_tiny_backbone.py                       # the shipped default (image-level), about 5 min
    python pretrain_tiny_backbone.py --task pixel --out checkpoints/tiny_backbone_pixel.pth

The result is an fp16 state dict of the backbone alone (the classifier head is dropped) that
`model.build_backbone("tiny", weights=path)` loads. The script ends by measuring how well the
high-level features separate the 20 classes on held-out scenes (nearest-prototype accuracy).
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

import cli
import data
import synthetic
from prompts import IGNORE, SEED_STREAMS
from model import Backbone, build_backbone

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINTS / "tiny_backbone_synthetic.pth"  # --task image: the synthetic default
PIXEL_CHECKPOINT = CHECKPOINTS / "tiny_backbone_pixel.pth"  # --task pixel: the tables of docs/results.md that name it
# Seed streams of this script; the benchmark (5_000_00x) and the tiny SAM (7_000_00x) use other keys.
TRAIN_STREAM, HELD_OUT_STREAM = SEED_STREAMS["tiny-backbone-train"], SEED_STREAMS["tiny-backbone-held-out"]
IMAGE_SIZE = 128  # the synthetic benchmark's input size
TASKS = ("pixel", "image")
NUM_SHAPES, NUM_APPEARANCES = len(synthetic.SYNTHETIC_SHAPES), len(synthetic.SYNTHETIC_APPEARANCES)
APPEARANCE_INDEX = {name: i for i, (name, _, _) in enumerate(synthetic.SYNTHETIC_APPEARANCES)}


def sample_scenes(
    rng: np.random.Generator, batch_size: int, *, size: int = IMAGE_SIZE
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw `batch_size` scenes with 1-3 of all 20 classes and 0-3 distractors (as the benchmark).

    Returns images (B, 3, S, S) ImageNet-normalised, label maps (B, S, S) int64 in 0..20 or 255
    (the ignore ring), and image-level targets (B, 5 + 4) in {0, 1}: shapes, then appearances,
    present among the class objects.
    """
    images, labels, present = [], [], []
    for _ in range(batch_size):
        classes = rng.choice(np.arange(1, synthetic.SYNTHETIC_NUM_CLASSES + 1), size=rng.integers(1, 4), replace=False)
        scene = synthetic.synthetic_scene(rng, classes=classes, num_distractors=int(rng.integers(0, 4)), size=size)
        target = np.zeros(NUM_SHAPES + NUM_APPEARANCES, np.float32)
        for class_id in classes:
            shape, appearance = synthetic.synthetic_class(int(class_id))
            target[synthetic.SYNTHETIC_SHAPES.index(shape)] = 1
            target[NUM_SHAPES + APPEARANCE_INDEX[appearance]] = 1
        images.append(torch.from_numpy(scene.image).permute(2, 0, 1).float() / 255.0)
        labels.append(torch.from_numpy(scene.label.astype(np.int64)))
        present.append(torch.from_numpy(target))
    mean = torch.tensor(data.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(data.IMAGENET_STD).view(3, 1, 1)
    return (torch.stack(images) - mean) / std, torch.stack(labels), torch.stack(present)


def high_features(blocks: nn.ModuleList, images: Tensor) -> Tensor:
    """The 5th block's output (B, 128, S/8, S/8), as Backbone.high_features(mid_features(x)[1])."""
    x = images
    for block in blocks:
        x = block(x)
    return x


class Pretrainer(nn.Module):
    """The tiny backbone's five blocks plus a classifier head for `task` (the head is not shipped)."""

    def __init__(self, task: str) -> None:
        super().__init__()
        self.task = task
        # The same modules (and random initialisation) as the frozen tiny backbone.
        self.blocks = build_backbone("tiny").blocks.requires_grad_(True)
        channels = self.blocks[-1][0].out_channels
        if task == "pixel":
            self.head = nn.Conv2d(channels, 1 + synthetic.SYNTHETIC_NUM_CLASSES, kernel_size=1)
        else:
            self.head = nn.Linear(channels, NUM_SHAPES + NUM_APPEARANCES)

    def loss(self, images: Tensor, labels: Tensor, present: Tensor) -> Tensor:
        features = high_features(self.blocks, images)
        if self.task == "pixel":
            logits = F.interpolate(self.head(features), size=labels.shape[-2:], mode="bilinear", align_corners=True)
            return F.cross_entropy(logits, labels, ignore_index=IGNORE)
        return F.binary_cross_entropy_with_logits(self.head(features.mean(dim=(2, 3))), present)

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """fp16 state dict with CNNBackbone's keys ("blocks.<i>...."), head dropped."""
        return {f"blocks.{k}": v.detach().half() if v.is_floating_point() else v.detach()
                for k, v in self.blocks.state_dict().items()}


def train_step(model: Pretrainer, optimizer: torch.optim.Optimizer, batch) -> float:
    loss = model.loss(*batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def object_features(backbone: Backbone, *, num_scenes: int, seed: int, batch_size: int = 16) -> tuple[Tensor, Tensor]:
    """Masked-average high-level features (n, C) of every class object in `num_scenes` held-out
    scenes, computed as VRP-SAM uses the backbone (mid block 4 -> block 5), and their class ids (n,)."""
    features, classes = [], []
    for start in range(0, num_scenes, batch_size):
        rng = np.random.default_rng([seed, HELD_OUT_STREAM, start])
        images, labels, _ = sample_scenes(rng, min(batch_size, num_scenes - start))
        high = backbone.high_features(backbone.mid_features(images)[1])  # (B, C, h, w)
        for b in range(len(images)):
            for class_id in labels[b].unique().tolist():
                if class_id in (0, 255):
                    continue
                cell = F.adaptive_avg_pool2d((labels[b] == class_id).float()[None, None], high.shape[-2:])[0]
                features.append((high[b] * cell).sum((1, 2)) / cell.sum().clamp(min=1e-6))
                classes.append(class_id)
    return torch.stack(features), torch.tensor(classes)


def prototype_accuracy(backbone: Backbone, *, num_scenes: int = 256, seed: int = 0) -> float:
    """Nearest-prototype accuracy (20 classes, chance 5%) of the backbone's high-level features on
    held-out scenes: class prototypes (mean object feature) from the first half of the scenes,
    each object of the second half assigned the class of the most cosine-similar prototype."""
    features, classes = object_features(backbone, num_scenes=num_scenes, seed=seed)
    half = len(features) // 2
    ids = torch.arange(1, synthetic.SYNTHETIC_NUM_CLASSES + 1)
    seen = [c for c in ids.tolist() if (classes[:half] == c).any()]
    prototypes = F.normalize(torch.stack([features[:half][classes[:half] == c].mean(0) for c in seen]), dim=1)
    guesses = torch.tensor(seen)[(F.normalize(features[half:], dim=1) @ prototypes.T).argmax(1)]
    return float((guesses == classes[half:]).float().mean())


def build_parser() -> argparse.ArgumentParser:
    """Every value is checked here, at parse time (cli.py's types), before anything is built or written."""
    parser = cli.ArgumentParser(prog="pretrain_tiny_backbone.py", description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    parser.add_argument("--task", choices=TASKS, default="image",
                        help="image-level multi-label (what ImageNet gives; the shipped default) or per-pixel "
                             "21-class segmentation")
    parser.add_argument("--steps", type=cli.positive_int, default=800,
                        help="AdamW steps (the shipped checkpoint took this many)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=16, help="scenes per step")
    parser.add_argument("--lr", type=cli.positive_float, default=2e-3,
                        help="peak learning rate (cosine decay after a 5%% warm-up)")
    parser.add_argument("--seed", type=cli.nonnegative_int, default=0, help="seeds the initialisation and the scenes")
    parser.add_argument("--eval-scenes", type=cli.int_range(2), default=256,
                        help="held-out scenes for the final nearest-prototype accuracy (half make the prototypes)")
    parser.add_argument("--out", type=Path, default=DEFAULT_CHECKPOINT,
                        help="where to write the fp16 backbone state dict")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None) -> float:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    model = Pretrainer(args.task).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup if s < warmup else 0.5 * (1 + np.cos(np.pi * (s - warmup) / max(1, args.steps - warmup)))
        ),
    )
    print(f"tiny backbone: {sum(p.numel() for p in model.blocks.parameters()) / 1e6:.2f}M parameters, "
          f"task {args.task}, {args.steps} steps of {args.batch_size}")
    start = time.time()
    bar = tqdm(range(args.steps), desc=f"pre-train tiny backbone ({args.task})")
    for step in bar:
        batch = sample_scenes(np.random.default_rng([args.seed, TRAIN_STREAM, step]), args.batch_size)
        loss = train_step(model, optimizer, batch)
        schedule.step()
        bar.set_postfix(loss=f"{loss:.3f}")
    minutes = (time.time() - start) / 60
    cli.write_atomic(args.out, partial(torch.save, model.backbone_state_dict()), durable=True)
    # Reload through the benchmark's own loader: what is measured is what was shipped (fp16).
    accuracy = prototype_accuracy(build_backbone("tiny", weights=args.out), num_scenes=args.eval_scenes, seed=args.seed)
    chance = prototype_accuracy(build_backbone("tiny"), num_scenes=args.eval_scenes, seed=args.seed)
    print(f"held-out nearest-prototype accuracy (20 classes) on {args.eval_scenes} fresh scenes: "
          f"{accuracy:.3f} (random tiny backbone: {chance:.3f})  ({minutes:.1f} min training)")
    print(f"saved {args.out} ({args.out.stat().st_size / 2**20:.2f} MiB)")
    return accuracy


if __name__ == "__main__":
    main()
