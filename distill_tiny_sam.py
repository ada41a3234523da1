"""Distil the tiny SAM's image encoder into a smaller one: the synthetic benchmark's MobileSAM (docs/synthetic.md).

MobileSAM (Zhang et al. 2023) makes SAM cheap by *decoupled distillation*: a small image encoder
(TinyViT) alone is trained to reproduce SAM ViT-H's image embedding, MSE on images, with no mask, no
prompt and no decoder in the loss; ViT-H's prompt encoder and mask decoder are then copied
unchanged behind it. Since the decoder is ViT-H's, weights included, whatever learned to prompt
ViT-H prompts MobileSAM too: a VRP encoder trained on `--sam vit_h` runs on `--sam vit_t` as it is.

This script does the same at toy size. The teacher is the tiny SAM (pretrain_tiny_sam.py: ViT 96-d,
depth 2), frozen, its embeddings computed without gradients. The student is model.py's
`tiny_distilled` SAM (ViT 48-d, depth 1, the same neck to the 256-d 16×16 embedding), whose prompt
encoder and mask decoder are the teacher's, copied verbatim and never trained. Only the student's
image encoder learns: AdamW on the MSE between its embedding and the teacher's, on synthetic scenes
(pretrain_tiny_sam.sample_scene) from a seed stream of their own, never the benchmark's images. A VRP
run trained on `--sam tiny` may then be scored with `--sam tiny_distilled` (one decoder group in
model.SAM_SPECS), which measures what the cheaper encoder costs VRP-SAM.

    python distill_tiny_sam.py                        # 600 steps of 32 scenes, ~9 min at one thread
    python distill_tiny_sam.py --steps 50 --out /tmp/sam_tiny_distilled.pth

The script prints both image encoders' parameter counts, the student's held-out embedding error
(MSE as a fraction of the teacher embedding's variance) and the held-out point-prompt IoU of student
and teacher (pretrain_tiny_sam.held_out_point_iou, the same fresh scenes for both). The result is the
whole student SAM as an fp16 state dict (a few MB) that `model.build_sam("tiny_distilled", path)`
loads strictly, like the official checkpoints.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import cli
import pretrain_tiny_sam
from model import SAM_SPECS, build_sam, sam_image_embeddings, sam_type_of_state_dict
from pretrain_tiny_sam import held_out_point_iou, normalise, output_file, sample_scene, save_fp16, warmup_cosine
from prompts import SEED_STREAMS

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "sam_tiny_distilled.pth"
# Its own training scenes; the held-out scenes are pretrain_tiny_sam.py's, so teacher and student
# are scored on the same ones.
TRAIN_STREAM, HELD_OUT_STREAM = SEED_STREAMS["tiny-sam-distill-train"], pretrain_tiny_sam.HELD_OUT_STREAM
STEPS, BATCH_SIZE = 600, 32  # the shipped checkpoint's (docs/synthetic.md)


def sample_images(rng: np.random.Generator, batch_size: int) -> torch.Tensor:
    """`batch_size` pre-training scenes (pretrain_tiny_sam.sample_scene), as (B, 3, S, S)
    ImageNet-normalised images: distillation needs no mask and no prompt."""
    return normalise([sample_scene(rng).image for _ in range(batch_size)])


def build_student(teacher: nn.Module, *, seed: int = 0) -> nn.Module:
    """The `tiny_distilled` SAM with a random image encoder (seeded by `seed`) and the teacher's
    prompt encoder and mask decoder, copied verbatim and frozen; only the image encoder trains."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        student = SAM_SPECS["tiny_distilled"].build()
    student.prompt_encoder.load_state_dict(teacher.prompt_encoder.state_dict())  # strict: every tensor, same shape
    student.mask_decoder.load_state_dict(teacher.mask_decoder.state_dict())
    student.requires_grad_(False)
    student.image_encoder.requires_grad_(True)
    return student.train()


def distill_step(student: nn.Module, teacher: nn.Module, optimizer: torch.optim.Optimizer,
                 images: torch.Tensor) -> float:
    """One AdamW step of the student's image encoder on the MSE to the frozen teacher's embedding
    (B, 256, 16, 16) of `images`; returns the loss."""
    with torch.no_grad():
        target = sam_image_embeddings(teacher, images)
    loss = F.mse_loss(sam_image_embeddings(student, images), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def relative_embedding_error(student: nn.Module, teacher: nn.Module, *, num_scenes: int = 32, seed: int = 0,
                             batch_size: int = 16) -> float:
    """MSE between the student's and the teacher's embeddings over held_out_point_iou's scenes, as a
    fraction of the teacher embedding's variance (per channel, over scenes and positions): 0 is a
    perfect copy, 1 is no better than each channel's mean."""
    targets, outputs = [], []
    for start in range(0, num_scenes, batch_size):
        rng = np.random.default_rng([seed, HELD_OUT_STREAM, start])
        images = pretrain_tiny_sam.sample_scenes(rng, min(batch_size, num_scenes - start))[0]
        targets.append(sam_image_embeddings(teacher, images))
        outputs.append(sam_image_embeddings(student, images))
    target, output = torch.cat(targets), torch.cat(outputs)
    return float((output - target).pow(2).mean() / target.var(dim=(0, 2, 3), unbiased=False).mean())


def encoder_parameters(sam: nn.Module) -> int:
    """The number of parameters of a SAM's image encoder (the part distillation replaces)."""
    return sum(p.numel() for p in sam.image_encoder.parameters())


def teacher_file(text: str) -> Path:
    """--teacher: a file that holds the tiny SAM (build_sam then loads it strictly)."""
    path, remake = Path(text), "pass the tiny SAM checkpoint (make it with `python pretrain_tiny_sam.py`)"
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file; {remake}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # empty, cut short, or not a torch file: torch raises several kinds
        raise argparse.ArgumentTypeError(f"{text} could not be read as a checkpoint; {remake}") from None
    found = sam_type_of_state_dict(state) if isinstance(state, dict) else None
    if found != "tiny":
        raise argparse.ArgumentTypeError(f"{text} holds {f'SAM {found}' if found else 'no SAM'}, not the tiny SAM; "
                                         f"{remake}")
    return path


def build_parser() -> argparse.ArgumentParser:
    """Every value is checked here, at parse time (cli.py's types), before anything is built or written."""
    parser = cli.ArgumentParser(prog="distill_tiny_sam.py", description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    parser.add_argument("--steps", type=cli.positive_int, default=STEPS,
                        help="AdamW steps (the shipped checkpoint took this many)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=BATCH_SIZE, help="scenes per step")
    parser.add_argument("--lr", type=cli.positive_float, default=3e-3,
                        help="peak learning rate (cosine decay after a short warm-up)")
    parser.add_argument("--seed", type=cli.nonnegative_int, default=0,
                        help="seeds the student's image encoder and the scenes")
    parser.add_argument("--eval-scenes", type=cli.positive_int, default=256,
                        help="held-out scenes for the final embedding error and point-prompt IoU")
    parser.add_argument("--teacher", type=teacher_file, default=str(pretrain_tiny_sam.DEFAULT_CHECKPOINT),
                        help="the tiny SAM checkpoint to distil (its prompt encoder and mask decoder are copied)")
    parser.add_argument("--out", type=output_file, default=str(DEFAULT_CHECKPOINT),
                        help="where to write the fp16 checkpoint")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out.resolve() == Path(args.teacher).resolve():
        parser.error(f"argument --out: {args.out} is the teacher (--teacher); pass another file")
    return args


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    teacher = build_sam("tiny", args.teacher)  # frozen, eval mode
    student = build_student(teacher, seed=args.seed)
    trained = list(student.image_encoder.parameters())
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=1e-4)
    schedule = warmup_cosine(optimizer, args.steps)
    print(f"image encoder: teacher (tiny) {encoder_parameters(teacher) / 1e6:.3f}M parameters, student "
          f"(tiny_distilled) {encoder_parameters(student) / 1e6:.3f}M; prompt encoder and mask decoder copied "
          f"({sum(p.numel() for p in student.parameters()) / 1e6 - encoder_parameters(student) / 1e6:.2f}M); "
          f"{args.steps} steps of {args.batch_size} scenes")
    start = time.time()
    bar = tqdm(range(args.steps), desc="distil tiny SAM")
    for step in bar:
        images = sample_images(np.random.default_rng([args.seed, TRAIN_STREAM, step]), args.batch_size)
        bar.set_postfix(mse=f"{distill_step(student, teacher, optimizer, images):.4f}")
        schedule.step()
    student.requires_grad_(False).eval()
    minutes = (time.time() - start) / 60
    error = relative_embedding_error(student, teacher, num_scenes=args.eval_scenes, seed=args.seed)
    ious = {name: held_out_point_iou(sam, num_scenes=args.eval_scenes, seed=args.seed)
            for name, sam in (("student", student), ("teacher", teacher))}
    save_fp16(student, args.out)
    print(f"held-out embedding MSE on {args.eval_scenes} fresh scenes: {error:.3f} of the teacher embedding's variance")
    print(f"held-out point-prompt IoU on {args.eval_scenes} fresh scenes: student {ious['student']:.3f}, "
          f"teacher {ious['teacher']:.3f}  ({minutes:.1f} min of distillation)")
    print(f"saved {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
    return {"relative_mse": error, "student_iou": ious["student"], "teacher_iou": ious["teacher"]}


if __name__ == "__main__":
    cli.run_main("distill_tiny_sam.py", main)
