"""Pre-train the tiny SAM that the embedded synthetic benchmark freezes (docs/synthetic.md).

VRP-SAM freezes a SAM that was pre-trained on promptable, class-agnostic segmentation (§3.1).
A randomly initialised tiny SAM cannot play that part: free prompt tokens never steer it. So,
before the synthetic benchmark is used, this script trains the `tiny` SAM of model.py (image
encoder, prompt encoder and mask decoder of the unmodified `segment-anything` classes) the way SAM
was trained: one object per scene, prompted by one positive point or by its box, no class labels,
loss on the single-mask output. Scenes come from data.py's renderer with a seed stream of their own,
never the benchmark's images or episodes.

    python pretrain_tiny_sam.py                      # 1500 steps, ~8 min on 2 CPU cores
    python pretrain_tiny_sam.py --steps 50 --out /tmp/sam_tiny.pth
    python pretrain_tiny_sam.py --corrections 8 --out /tmp/sam_tiny_interactive.pth   # + SAM's correction rounds

The result is saved as an fp16 state dict (a few MB) that `model.build_sam("tiny", path)` loads,
like the official checkpoints.
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

import cli
import data
import synthetic
from prompts import SEED_STREAMS
from model import build_sam, decode_prompts, sam_image_embeddings, upsample_logits, vrp_loss

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "sam_tiny_synthetic.pth"
# Seed streams of this script; data.py's benchmark images use other keys, so no image is shared.
TRAIN_STREAM, HELD_OUT_STREAM = SEED_STREAMS["tiny-sam-train"], SEED_STREAMS["tiny-sam-held-out"]
IMAGE_SIZE = 128  # the tiny SAM's input size


def sample_scene(rng: np.random.Generator, *, size: int = IMAGE_SIZE) -> synthetic.SyntheticScene:
    """One pre-training scene: 1-3 distinct classes and 0-3 distractors, from data.py's renderer."""
    classes = rng.choice(np.arange(1, synthetic.SYNTHETIC_NUM_CLASSES + 1), size=rng.integers(1, 4), replace=False)
    return synthetic.synthetic_scene(rng, classes=classes, num_distractors=int(rng.integers(0, 4)), size=size)


def object_prompts(rng: np.random.Generator, mask: np.ndarray) -> tuple[list, list]:
    """One positive point drawn uniformly on the object `mask` (S, S) as [x, y], and its tight box
    as [x0, y0, x1, y1]."""
    ys, xs = np.nonzero(mask)
    pick = rng.integers(len(xs))
    return [xs[pick], ys[pick]], [xs.min(), ys.min(), xs.max(), ys.max()]


def normalise(images: list[np.ndarray]) -> torch.Tensor:
    """(S, S, 3) uint8 RGB images -> (B, 3, S, S) ImageNet-normalised."""
    images = torch.stack([torch.from_numpy(image).permute(2, 0, 1).float() / 255.0 for image in images])
    return (images - torch.tensor(data.IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(data.IMAGENET_STD).view(3, 1, 1)


def sample_scenes(rng: np.random.Generator, batch_size: int, *, size: int = IMAGE_SIZE):
    """Draw `batch_size` scenes and one object of each, class-agnostically.

    Returns images (B, 3, S, S) ImageNet-normalised, object masks (B, S, S) int64 in {0, 1},
    one positive point per object (B, 1, 2) as (x, y), and tight boxes (B, 4) as (x0, y0, x1, y1).
    """
    images, masks, points, boxes = [], [], [], []
    for _ in range(batch_size):
        scene = sample_scene(rng, size=size)
        mask = scene.instances[rng.integers(len(scene.instances))]
        point, box = object_prompts(rng, mask)
        images.append(scene.image)
        masks.append(torch.from_numpy(mask.astype(np.int64)))
        points.append([point])
        boxes.append(box)
    return (
        normalise(images), torch.stack(masks), torch.tensor(points, dtype=torch.float32),
        torch.tensor(boxes, dtype=torch.float32),
    )


def decode(
    sam, embeddings: torch.Tensor, size, *, points: torch.Tensor | None = None, labels: torch.Tensor | None = None,
    boxes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Single-mask logits (B, S, S) from SAM image embeddings, for points (B, N, 2) with `labels`
    (B, N; 1 positive, 0 negative; default all positive) and/or one box (B, 4) per image."""
    low_res = decode_prompts(sam, embeddings, points=points, labels=labels, boxes=boxes)  # (B, 1, 4h, 4w)
    return upsample_logits(low_res, size)[:, 0]  # the resize VRP-SAM uses downstream


def predict(
    sam, images: torch.Tensor, *, points: torch.Tensor | None = None, boxes: torch.Tensor | None = None
) -> torch.Tensor:
    """Single-mask logits (B, S, S) for one positive point (B, 1, 2) or one box (B, 4) per image."""
    return decode(sam, sam_image_embeddings(sam, images), images.shape[-2:], points=points, boxes=boxes)


def correction_points(rng: np.random.Generator, logits: torch.Tensor, masks: torch.Tensor):
    """SAM's interactive sampling: one point per image drawn uniformly from the error region of a
    prediction, positive (1) on a missed object pixel, negative (0) on a false one; where the
    prediction is exact, a positive point on the object. Returns points (B, 1, 2), labels (B, 1)."""
    prediction, target = (logits > 0).numpy(), masks.numpy().astype(bool)
    points, labels = [], []
    for pred, obj in zip(prediction, target):
        error = pred ^ obj
        ys, xs = np.nonzero(error if error.any() else obj)
        pick = rng.integers(len(xs))
        points.append([[xs[pick], ys[pick]]])
        labels.append([int(obj[ys[pick], xs[pick]])])
    return torch.tensor(points, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64)


def train_step(sam, optimizer: torch.optim.Optimizer, batch, *, rng: np.random.Generator | None = None,
               max_corrections: int = 0) -> float:
    """One AdamW step on a batch: the first half prompted by a point, the second half by its box.

    With `max_corrections` > 0, SAM's interactive rounds follow (its §A "Training algorithm", without
    the mask prompt that VRP-SAM never uses): k ~ U{0..max_corrections} correction points are added
    one at a time, each drawn from the error region of the prediction so far, and the loss is the
    mean of the first round's and the last round's; the rounds in between run without gradients."""
    images, masks, points, boxes = batch
    half, size = len(images) // 2, images.shape[-2:]
    embeddings = sam_image_embeddings(sam, images)
    # (points, labels, box) of each half; the box half starts without points
    prompts = [[points[:half], torch.ones(half, 1, dtype=torch.int64), None],
               [points[half:, :0], torch.zeros(len(images) - half, 0, dtype=torch.int64), boxes[half:]]]
    rows = (slice(0, half), slice(half, None))

    def decode_all() -> torch.Tensor:
        return torch.cat(
            [decode(sam, embeddings[r], size, points=p, labels=l, boxes=b) for (p, l, b), r in zip(prompts, rows)]
        )

    logits = decode_all()
    loss = vrp_loss(logits, masks)  # BCE + Dice, as SAM's own focal + Dice in spirit
    rounds = int(rng.integers(0, max_corrections + 1)) if max_corrections else 0
    for round_ in range(rounds):
        new_points, new_labels = correction_points(rng, logits.detach(), masks)
        for part, r in zip(prompts, rows):
            part[0], part[1] = torch.cat([part[0], new_points[r]], 1), torch.cat([part[1], new_labels[r]], 1)
        with torch.set_grad_enabled(round_ == rounds - 1):
            logits = decode_all()
    if rounds:
        loss = 0.5 * (loss + vrp_loss(logits, masks))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def held_out_point_iou(sam, *, num_scenes: int = 32, seed: int = 0, batch_size: int = 16,
                       predict: Callable[..., torch.Tensor] = predict) -> float:
    """Mean IoU over `num_scenes` fresh scenes, one object each, prompted by one positive point.

    predict(sam, images, points=...) -> single-mask logits (B, S, S): this file's `predict` for the
    tiny SAM; pretrain_tiny_sam2.py passes its own, so both tiny SAMs are scored on the same scenes."""
    was_training = sam.training
    sam.eval()
    ious = []
    for start in range(0, num_scenes, batch_size):
        rng = np.random.default_rng([seed, HELD_OUT_STREAM, start])
        images, masks, points, _ = sample_scenes(rng, min(batch_size, num_scenes - start))
        prediction = predict(sam, images, points=points) > 0
        target = masks.bool()
        ious += ((prediction & target).sum((1, 2)) / (prediction | target).sum((1, 2)).clamp(min=1)).tolist()
    sam.train(was_training)
    return float(np.mean(ious))


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule of both tiny SAMs: linear warm-up over min(30, steps / 10) steps,
    then cosine decay to zero at `steps` (call .step() once per optimizer step)."""
    warmup = min(30, steps // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / (warmup + 1)
            if s < warmup
            else 0.5 * (1 + np.cos(np.pi * (s - warmup) / max(1, steps - warmup)))
        ),
    )


def save_fp16(sam, path: Path) -> None:
    """Write the state dict in fp16, atomically (a half-written file never replaces a good one)."""
    cli.write_atomic(
        path, partial(torch.save, {k: v.half() if v.is_floating_point() else v for k, v in sam.state_dict().items()}),
        durable=True,
    )


def build_parser() -> argparse.ArgumentParser:
    """Every value is checked here, at parse time (cli.py's types), before anything is built or written."""
    parser = cli.ArgumentParser(prog="pretrain_tiny_sam.py", description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    parser.add_argument("--steps", type=cli.positive_int, default=1500,
                        help="AdamW steps (the shipped checkpoint took this many)")
    parser.add_argument("--batch-size", type=cli.int_range(2), default=16,
                        help="scenes per step, half point- and half box-prompted")
    parser.add_argument("--lr", type=cli.positive_float, default=3e-4,
                        help="peak learning rate (cosine decay after 30 warm-up steps)")
    parser.add_argument("--seed", type=cli.nonnegative_int, default=0,
                        help="seeds the scenes and prompts (the initialisation is build_sam's fixed one)")
    parser.add_argument("--corrections", type=cli.nonnegative_int, default=0,
                        help="most interactive correction points per step (SAM's rounds; 0: first prompt only)")
    parser.add_argument("--eval-scenes", type=cli.positive_int, default=256,
                        help="held-out scenes for the final point-prompt IoU")
    parser.add_argument("--out", type=output_file, default=str(DEFAULT_CHECKPOINT),
                        help="where to write the fp16 checkpoint")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def output_file(text: str) -> Path:
    """argparse type of the pre-training scripts' --out: a file that can be written (checked when
    parsed, the default included, so a run never ends unable to save)."""
    out = Path(text)
    if out.is_dir() or not os.access(out.parent if out.parent.exists() else Path.cwd(), os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {out}; pass a file path in a writable folder")
    return out


def main(argv=None) -> float:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    sam = build_sam("tiny", None).requires_grad_(True).train()
    optimizer = torch.optim.AdamW(sam.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = warmup_cosine(optimizer, args.steps)
    print(f"tiny SAM: {sum(p.numel() for p in sam.parameters()) / 1e6:.2f}M parameters, {args.steps} steps")
    start = time.time()
    bar = tqdm(range(args.steps), desc="pre-train tiny SAM")
    for step in bar:
        batch = sample_scenes(np.random.default_rng([args.seed, TRAIN_STREAM, step]), args.batch_size)
        loss = train_step(sam, optimizer, batch, rng=np.random.default_rng([args.seed, TRAIN_STREAM, step, 1]),
                          max_corrections=args.corrections)
        schedule.step()
        bar.set_postfix(loss=f"{loss:.3f}")
    iou = held_out_point_iou(sam, num_scenes=args.eval_scenes, seed=args.seed)
    save_fp16(sam, args.out)
    print(
        f"held-out point-prompt IoU on {args.eval_scenes} fresh scenes: {iou:.3f}  "
        f"({(time.time() - start) / 60:.1f} min)"
    )
    print(f"saved {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
    return iou


if __name__ == "__main__":
    main()
