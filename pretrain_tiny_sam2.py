"""Pre-train the tiny SAM 2 that the synthetic benchmark freezes when run with SAM 2 (docs/synthetic.md).

A SAM 2 with random weights cannot be steered by prompts, like the tiny SAM of pretrain_tiny_sam.py,
so `sam2_backend.TINY_SAM2` (the unmodified `sam2` classes at toy size) is pre-trained here the way
SAM 2 was: promptable and class-agnostic, never with a class label, in two stages.

- Stage 1, images (`--stage image`): the image encoder, prompt encoder, mask decoder and
  `no_mem_embed` learn to segment the objects of synthetic scenes (pretrain_tiny_sam.py's scenes,
  a seed stream of their own), up to 4 per scene, each from one positive point or its box. The
  single-mask output goes through exactly the path VRP-SAM uses (`sam2_backend.image_features` on
  the 128² scene resized to 256², SAM 2's prompt encoder, the decoder as `decode_masks` runs it),
  loss BCE + Dice. SAM 2's video tracking reads the decoder's other heads, so they learn too, as in
  SAM 2's own training: the three multimask outputs (loss on the best of the three, SAM's
  ambiguity rule), the IoU head (MSE to each output's true IoU) and the object-score head (the
  prompted object is present). From random weights this does not learn to follow the prompt in a
  CPU budget (held-out IoU 0.34 after 300 steps: one mask of all objects, whatever the prompt), so
  the prompt encoder and mask decoder start as the tiny SAM's (copy_tiny_sam_heads), as SAM 2's
  Hiera started from pre-trained (MAE) weights; every stage-1 tensor is then trained.
- Stage 2, memory (`--stage memory`): everything stage 1 trained is frozen, so the image path of
  the checkpoint stays bit-identical (a VRP encoder trained on stage 1's file stays valid), and
  only the modules that video tracking adds learn (MEMORY_PREFIXES: memory attention, memory
  encoder, temporal encodings, object pointers, the mask-prompt path of the conditioning frame).
  Clips of synthetic videos (synthetic.py's renderer, a seed stream of its own, never the
  benchmark's videos): frame 0 is conditioned on its ground-truth mask (SAM2VideoPredictor.add_new_mask's
  mask input), each later frame is tracked by `SAM2Base.track_step` from the memory of the frames
  before it (num_maskmem 7), BCE + Dice on every later frame's mask.

    python pretrain_tiny_sam2.py                      # both stages, the shipped file (see docs/synthetic.md)
    python pretrain_tiny_sam2.py --stage image --steps 50 --out /tmp/sam2_tiny.pth
    python pretrain_tiny_sam2.py --stage memory --out /tmp/sam2_tiny.pth   # stage 2 on top of that file

The result is one fp16 `SAM2Base.state_dict()` that `load_tiny_sam2` (build_sam2_model(*TINY_SAM2) +
a strict load_state_dict) reads; stage 2 reads stage 1's file and rewrites it with the memory weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

import cli
import data
import pretrain_tiny_sam
import synthetic
from model import build_sam, upsample_logits, vrp_loss
from pretrain_tiny_sam import (
    held_out_point_iou, normalise, object_prompts, output_file, sample_scene, save_fp16, warmup_cosine,
)
from prompts import SEED_STREAMS
from sam2_backend import TINY_SAM2, build_sam2_model, decode_masks, image_features, unpack_levels

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "sam2_tiny_synthetic.pth"
REMAKE = "remake it with `python pretrain_tiny_sam2.py` (docs/synthetic.md)"
IMAGE_STREAM = SEED_STREAMS["tiny-sam2-train"]
VIDEO_STREAM, VIDEO_HELD_OUT_STREAM = SEED_STREAMS["tiny-sam2-video-train"], SEED_STREAMS["tiny-sam2-video-held-out"]
# What stage 2 trains: the parameters SAM2Base adds for video. None of them is on the image path
# that image_features + decode_masks take (the mask-prompt encoder only reads mask inputs, which
# only a video's conditioning frame has); stage 1 trains every other parameter.
MEMORY_PREFIXES = (
    "memory_attention.", "memory_encoder.", "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial",
    "obj_ptr_proj.", "obj_ptr_tpos_proj.", "mask_downsample.", "sam_prompt_encoder.mask_downscaling.",
)
STAGE_1_STEPS, STAGE_2_STEPS = 400, 120  # the shipped checkpoint's (docs/synthetic.md)
HELD_OUT_VIDEO_FRAMES = 16  # longer than a training clip: the memory window (7 frames) has to slide


def memory_parameter(name: str) -> bool:
    """Whether stage 2 trains the SAM2Base parameter `name` (stage 1 trains the others)."""
    return name.startswith(MEMORY_PREFIXES)


def load_tiny_sam2(path: str | Path) -> nn.Module:
    """The tiny SAM 2 of a checkpoint this script wrote: build_sam2_model(*TINY_SAM2), a strict
    load_state_dict of the fp16 weights cast to fp32; frozen, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tiny SAM 2 checkpoint {path} not found: {REMAKE}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: torch raises several kinds
        raise ValueError(f"cannot read tiny SAM 2 checkpoint {path} ({cli.error_message(error)}): {REMAKE}") from error
    sam = build_sam2_model(*TINY_SAM2)
    sam.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return sam.requires_grad_(False).eval()


# ---------------------------------------------------------------------------------------------
# Stage 1: images
# ---------------------------------------------------------------------------------------------

def copy_tiny_sam_heads(sam, tiny_sam) -> list[str]:
    """Start the tiny SAM 2's prompt encoder and mask decoder from the tiny SAM's (pretrain_tiny_sam.py),
    as functions: SAM 2 kept SAM's prompt encoder and two-way decoder, so every tensor has its twin
    but three. The 512-wide MLPs of the decoder's transformer fill the first 512 of SAM 2's 2048 hidden
    units (the other units start with zero output weights, so they add nothing until trained), and the
    projections of the two high-resolution levels (conv_s0, conv_s1) start at zero, so the decoder
    first computes the tiny SAM's; only the object-score token and head stay random. Returns the
    names of the tensors written."""
    target = sam.state_dict()
    copied = {}
    for name, value in tiny_sam.state_dict().items():
        if name.startswith("prompt_encoder."):
            copied["sam_" + name] = value
        elif name.startswith("mask_decoder."):
            twin = "sam_" + name.replace(".mlp.lin1.", ".mlp.layers.0.").replace(".mlp.lin2.", ".mlp.layers.1.")
            if twin.endswith("mlp.layers.0.weight") or twin.endswith("mlp.layers.0.bias"):
                value = torch.cat([value, target[twin][len(value):]])  # the rest of the hidden units: as initialised
            elif twin.endswith("mlp.layers.1.weight"):
                value = torch.cat([value, value.new_zeros(len(value), target[twin].shape[1] - value.shape[1])], 1)
            copied[twin] = value
    for level in ("conv_s0", "conv_s1"):
        for kind in ("weight", "bias"):
            copied[f"sam_mask_decoder.{level}.{kind}"] = torch.zeros_like(target[f"sam_mask_decoder.{level}.{kind}"])
    for name, value in copied.items():
        if target[name].shape != value.shape:
            raise ValueError(f"the tiny SAM's {name} is {tuple(value.shape)}, "
                             f"the tiny SAM 2's {tuple(target[name].shape)}")
    sam.load_state_dict(copied, strict=False)
    return sorted(copied)


def prompt_embeddings(sam, size: int, *, points: Tensor | None = None, boxes: Tensor | None = None):
    """SAM 2's prompt encoder for positive points (B, N, 2) or boxes (B, 4) in pixels of a `size`²
    scene, scaled to SAM 2's input frame as its predictor does -> (sparse (B, 2, 256), dense)."""
    scale = sam.image_size / size
    if points is not None:
        points = (points * scale, torch.ones(points.shape[:2], dtype=torch.int64))
    return sam.sam_prompt_encoder(points=points, boxes=None if boxes is None else boxes * scale, masks=None)


def decode(sam, features: Tensor, size: int, *, points: Tensor | None = None, boxes: Tensor | None = None) -> Tensor:
    """Single-mask logits (B, S, S) from image_features' packed features, for one positive point
    (B, 1, 2) or one box (B, 4) per image: VRP-SAM's decode_masks, resized by upsample_logits."""
    sparse, dense = prompt_embeddings(sam, size, points=points, boxes=boxes)
    return upsample_logits(decode_masks(sam, features, sparse, dense), (size, size))[:, 0]


def predict(sam, images: Tensor, *, points: Tensor | None = None, boxes: Tensor | None = None) -> Tensor:
    """Single-mask logits (B, S, S) of scenes (B, 3, S, S) for one point or one box per image."""
    return decode(sam, image_features(sam, images), images.shape[-1], points=points, boxes=boxes)


def per_mask_loss(logits: Tensor, masks: Tensor) -> Tensor:
    """BCE + Dice (vrp_loss's terms) of each of K masks of each image: (B, K, S, S), (B, S, S) -> (B, K)."""
    y = masks[:, None].float().expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean((-2, -1))
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * y).sum((-2, -1)) + 1) / (p.sum((-2, -1)) + y.sum((-2, -1)) + 1)
    return bce + dice


def sample_scene_objects(rng: np.random.Generator, batch_size: int, *, max_objects: int = 4):
    """Draw `batch_size` scenes (pretrain_tiny_sam.sample_scene) and up to `max_objects` of the objects
    of each (class objects and distractors alike: class-agnostic), each prompted by one positive
    point or, with probability 1/2, by its box. Several prompts per scene make the prompt matter
    (one mask of every object in the scene fits none of them) at the cost of one image encoding.

    Returns images (B, 3, S, S) ImageNet-normalised, and per prompt: its scene's index (P,), the
    object's mask (P, S, S) int64 in {0, 1}, the point (P, 1, 2) as (x, y), the box (P, 4) as
    (x0, y0, x1, y1), and whether the box is the prompt (P,) bool."""
    images, scene_index, masks, points, boxes, is_box = [], [], [], [], [], []
    for b in range(batch_size):
        scene = sample_scene(rng)
        images.append(scene.image)
        for i in rng.permutation(len(scene.instances))[:max_objects]:
            point, box = object_prompts(rng, scene.instances[i])
            scene_index.append(b)
            masks.append(torch.from_numpy(scene.instances[i].astype(np.int64)))
            points.append([point])
            boxes.append(box)
            is_box.append(bool(rng.random() < 0.5))
    return (normalise(images), torch.tensor(scene_index), torch.stack(masks), torch.tensor(points, dtype=torch.float32),
            torch.tensor(boxes, dtype=torch.float32), torch.tensor(is_box))


def decoder_outputs(sam, packed: Tensor, sparse: Tensor, dense: Tensor):
    """Every output of SAM 2's mask decoder for B images, each with its own prompts, in one pass: the
    inputs `decode_masks` hands the decoder, and SAM 2's MaskDecoder.predict_masks, which its forward
    calls and then slices. Returns low-res logits (B, 4, 4h, 4w) of the single-mask output (0, what
    decode_masks returns) and the three multimask outputs (1-3), their predicted IoUs (B, 4), and
    the object-score logits (B, 1)."""
    *high_res, embedding = unpack_levels(sam, packed)
    masks, iou_prediction, _, object_logits = sam.sam_mask_decoder.predict_masks(
        image_embeddings=embedding, image_pe=sam.sam_prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense, repeat_image=False, high_res_features=high_res,
    )
    return masks, iou_prediction, object_logits


def image_losses(sam, batch) -> dict[str, Tensor]:
    """Stage 1's losses on a batch of sample_scene_objects. "single": BCE + Dice of the single-mask
    output (VRP-SAM's path); "multimask": of the best of the three multimask outputs; "iou": MSE of
    the IoU head to the true IoU of each of the four outputs; "object": BCE of the object score
    (every prompted object is present)."""
    images, scene_index, masks, points, boxes, is_box = batch
    size = images.shape[-1]
    features = image_features(sam, images)[scene_index]  # one encoding per scene, one row per prompt
    (point_sparse, dense), (box_sparse, _) = (prompt_embeddings(sam, size, points=points),
                                              prompt_embeddings(sam, size, boxes=boxes))
    sparse = torch.where(is_box[:, None, None], box_sparse, point_sparse)  # 2 tokens each: point + padding, or corners
    low_res, iou_prediction, object_logits = decoder_outputs(sam, features, sparse, dense)
    logits = upsample_logits(low_res, (size, size))
    with torch.no_grad():
        found, target = logits > 0, masks[:, None].bool()
        iou = (found & target).sum((-2, -1)) / (found | target).sum((-2, -1)).clamp(min=1)
    return {
        "single": vrp_loss(logits[:, 0], masks), "multimask": per_mask_loss(logits[:, 1:], masks).min(1).values.mean(),
        "iou": F.mse_loss(iou_prediction, iou.float()),
        "object": F.binary_cross_entropy_with_logits(object_logits, torch.ones_like(object_logits)),
    }


def image_train_step(sam, optimizer: torch.optim.Optimizer, batch) -> float:
    """One AdamW step of stage 1 on the sum of image_losses; returns the single-mask loss."""
    losses = image_losses(sam, batch)
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimizer.step()
    return losses["single"].item()


# ---------------------------------------------------------------------------------------------
# Stage 2: memory
# ---------------------------------------------------------------------------------------------

def sample_videos(rng: np.random.Generator, batch_size: int, num_frames: int, *, size: int = 128):
    """Draw `batch_size` synthetic videos of `num_frames` frames and one class object of each to
    follow. Like synthetic.SyntheticVideos but over all 20 classes (class-agnostic): 2-3 class
    objects (in 40% of videos the first two share a class), 1-3 distractors.

    Returns frames (B, T, 3, S, S) ImageNet-normalised and the object's visible mask in each frame
    (B, T, S, S) int64 in {0, 1} (fully visible in frame 0; it may be occluded later)."""
    frames, masks = [], []
    for _ in range(batch_size):
        count = int(rng.integers(2, 4))
        classes = [int(c) for c in rng.choice(synthetic.SYNTHETIC_NUM_CLASSES, size=count, replace=False) + 1]
        if rng.random() < 0.4:
            classes[1] = classes[0]  # two instances of one class: following one is more than finding its class
        layout = synthetic.synthetic_video_layout(rng, classes=classes, num_distractors=int(rng.integers(1, 4)),
                                                  num_frames=num_frames, size=size)
        target = int(rng.integers(1, count + 1))
        rendered = [synthetic.render_video_frame(layout, t, size=size, rng=rng) for t in range(num_frames)]
        frames.append(torch.stack([data.image_tensor(image, size) for image, _ in rendered]))
        masks.append(torch.stack([torch.from_numpy((label == target).astype(np.int64)) for _, label in rendered]))
    return torch.stack(frames), torch.stack(masks)


def frame_features(sam, images: Tensor):
    """What SAM2Base.track_step reads of one frame per video: images (B, 3, S, S) ImageNet-normalised,
    resized to SAM 2's input as image_features does -> (features, positional encodings, sizes), one
    (hw, B, C) tensor per level, finest first (SAM2VideoPredictor's _get_image_feature)."""
    size = sam.image_size
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=True)
    _, features, positions, sizes = sam._prepare_backbone_features(sam.forward_image(images))
    return features, positions, sizes


def track(sam, frames: Tensor, first_mask: Tensor) -> Tensor:
    """Follow an object through each video of a batch with SAM 2's memory: frames (B, T, 3, S, S),
    the object's mask in frame 0 (B, S, S) -> mask logits of frames 1..T-1 (B, T-1, S, S).

    Frame 0 is a conditioning frame whose mask input is the ground truth, resized to SAM 2's input
    and binarised as SAM2VideoPredictor.add_new_mask does; every later frame is tracked by
    SAM2Base.track_step from the memory of frame 0 and of the (num_maskmem - 1) frames before it, as
    SAM2VideoPredictor.propagate_in_video does. The low-res logits are resized by upsample_logits."""
    num_frames, size = frames.shape[1], frames.shape[-1]
    mask_input = F.interpolate(first_mask[:, None].float(), size=(sam.image_size, sam.image_size), mode="bilinear",
                               align_corners=False, antialias=True)
    memory = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    logits = []
    for t in range(num_frames):
        features, positions, sizes = frame_features(sam, frames[:, t])
        out = sam.track_step(frame_idx=t, is_init_cond_frame=t == 0, current_vision_feats=features,
                             current_vision_pos_embeds=positions, feat_sizes=sizes, point_inputs=None,
                             mask_inputs=(mask_input >= 0.5).float() if t == 0 else None, output_dict=memory,
                             num_frames=num_frames)
        memory["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = out
        if t:
            logits.append(upsample_logits(out["pred_masks"], (size, size))[:, 0])
    return torch.stack(logits, dim=1)


def memory_train_step(sam, optimizer: torch.optim.Optimizer, clip) -> float:
    """One AdamW step of stage 2 on a batch of sample_videos: BCE + Dice of every tracked frame."""
    frames, masks = clip
    loss = vrp_loss(track(sam, frames, masks[:, 0]).flatten(0, 1), masks[:, 1:].flatten(0, 1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def mask_boxes(masks: Tensor) -> Tensor:
    """Tight boxes (B, 4) as (x0, y0, x1, y1) of non-empty masks (B, S, S), as sample_scenes draws them."""
    boxes = []
    for mask in masks:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
    return torch.tensor(boxes, dtype=torch.float32)


def frame_ious(logits: Tensor, masks: Tensor) -> Tensor:
    """IoU of each frame's prediction (logits > 0) with its mask, (B, T, S, S) -> (B, T); a frame
    where both are empty scores 1 (DAVIS's J)."""
    found, target = logits > 0, masks.bool()
    union = (found | target).sum((-2, -1))
    return torch.where(union > 0, (found & target).sum((-2, -1)) / union.clamp(min=1), 1.0)


@torch.no_grad()
def held_out_video_j(sam, *, num_videos: int = 16, seed: int = 0, batch_size: int = 4,
                     num_frames: int = HELD_OUT_VIDEO_FRAMES) -> dict[str, float]:
    """Mean J (IoU over frames 1..T-1, then over videos) of fresh synthetic videos given the object's
    ground-truth mask in frame 0. "memory": tracked with SAM 2's memory (track); "no memory": each
    frame decoded on its own from frame 0's box (the image path, which has no memory of the object)."""
    was_training = sam.training
    sam.eval()
    scores = {"memory": [], "no memory": []}
    for start in range(0, num_videos, batch_size):
        rng = np.random.default_rng([seed, VIDEO_HELD_OUT_STREAM, start])
        frames, masks = sample_videos(rng, min(batch_size, num_videos - start), num_frames)
        scores["memory"] += frame_ious(track(sam, frames, masks[:, 0]), masks[:, 1:]).mean(1).tolist()
        boxes = mask_boxes(masks[:, 0])
        static = torch.stack([predict(sam, frames[:, t], boxes=boxes) for t in range(1, num_frames)], dim=1)
        scores["no memory"] += frame_ious(static, masks[:, 1:]).mean(1).tolist()
    sam.train(was_training)
    return {name: float(np.mean(values)) for name, values in scores.items()}


# ---------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------

def init_source(text: str) -> str:
    """--init: `random`, or a tiny SAM checkpoint that exists."""
    if text != "random" and not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file; pass a tiny SAM checkpoint "
                                         f"(make it with `python pretrain_tiny_sam.py`) or `random`")
    return text


def build_parser() -> argparse.ArgumentParser:
    """Every value is checked here, at parse time (cli.py's types), before anything is built or written."""
    parser = cli.ArgumentParser(prog="pretrain_tiny_sam2.py", description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    parser.add_argument("--stage", choices=("image", "memory", "both"), default="both",
                        help="image: stage 1 from a random SAM 2, writes --out; memory: stage 2, reads --out "
                             "(stage 1's file) and rewrites it; both: one after the other")
    parser.add_argument("--steps", type=cli.positive_int, default=STAGE_1_STEPS,
                        help="AdamW steps of stage 1 (the shipped checkpoint took this many)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=8, help="scenes per stage-1 step")
    parser.add_argument("--objects", type=cli.positive_int, default=4,
                        help="most objects prompted per scene (each by a point or its box, at random)")
    parser.add_argument("--lr", type=cli.positive_float, default=1e-3,
                        help="peak learning rate of stage 1 (cosine decay after a short warm-up)")
    parser.add_argument("--init", type=init_source, default=str(pretrain_tiny_sam.DEFAULT_CHECKPOINT),
                        help="the tiny SAM checkpoint whose prompt encoder and mask decoder stage 1 starts from "
                             "(copy_tiny_sam_heads), or `random` (measured: it does not learn the prompt in budget)")
    parser.add_argument("--memory-steps", type=cli.positive_int, default=STAGE_2_STEPS,
                        help="AdamW steps of stage 2 (the shipped checkpoint took this many)")
    parser.add_argument("--videos", type=cli.positive_int, default=4, help="video clips per stage-2 step")
    parser.add_argument("--clip-frames", type=cli.int_range(2), default=4,
                        help="frames per stage-2 clip: frame 0 conditioned on its mask, the others tracked")
    parser.add_argument("--memory-lr", type=cli.positive_float, default=1e-3,
                        help="peak learning rate of stage 2 (cosine decay after a short warm-up)")
    parser.add_argument("--seed", type=cli.nonnegative_int, default=0,
                        help="seeds the initialisation, the scenes and the videos")
    parser.add_argument("--eval-scenes", type=cli.positive_int, default=256,
                        help="held-out scenes for stage 1's point-prompt IoU (pretrain_tiny_sam.py's scenes)")
    parser.add_argument("--eval-videos", type=cli.positive_int, default=16, help="held-out videos for stage 2's J")
    parser.add_argument("--eval-frames", type=cli.int_range(2), default=HELD_OUT_VIDEO_FRAMES,
                        help="frames of each held-out video (longer than a clip: the memory window has to slide)")
    parser.add_argument("--out", type=output_file, default=str(DEFAULT_CHECKPOINT), help="the fp16 checkpoint to write")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.stage == "memory" and not args.out.is_file():
        parser.error(f"argument --out: --stage memory reads stage 1's checkpoint {args.out}, which does not exist; "
                     "run --stage image (or both) first")
    return args


def train_images(args: argparse.Namespace) -> nn.Module:
    """Stage 1 from a random tiny SAM 2 (seeded by --seed) whose prompt encoder and mask decoder start
    from the tiny SAM's (--init; `random` keeps them random); prints the held-out point-prompt IoU."""
    sam = build_sam2_model(*TINY_SAM2, seed=args.seed).train()
    if args.init != "random":
        copy_tiny_sam_heads(sam, build_sam("tiny", args.init))
    trained = [p for name, p in sam.named_parameters() if not memory_parameter(name)]
    optimizer = torch.optim.AdamW([p.requires_grad_(True) for p in trained], lr=args.lr, weight_decay=1e-4)
    schedule = warmup_cosine(optimizer, args.steps)
    print(f"tiny SAM 2: {sum(p.numel() for p in sam.parameters()) / 1e6:.2f}M parameters; stage 1 trains "
          f"{sum(p.numel() for p in trained) / 1e6:.2f}M for {args.steps} steps")
    start = time.time()
    bar = tqdm(range(args.steps), desc="tiny SAM 2, stage 1 (images)")
    for step in bar:
        batch = sample_scene_objects(np.random.default_rng([args.seed, IMAGE_STREAM, step]), args.batch_size,
                                     max_objects=args.objects)
        bar.set_postfix(loss=f"{image_train_step(sam, optimizer, batch):.3f}")
        schedule.step()
    minutes = (time.time() - start) / 60
    iou = held_out_point_iou(sam, num_scenes=args.eval_scenes, seed=args.seed, predict=predict)
    print(f"stage 1: held-out point-prompt IoU on {args.eval_scenes} fresh scenes: {iou:.3f}  ({minutes:.1f} min)")
    return sam.requires_grad_(False).eval()


def train_memory(args: argparse.Namespace) -> nn.Module:
    """Stage 2 on stage 1's checkpoint (--out): only MEMORY_PREFIXES train; prints the held-out J."""
    sam = load_tiny_sam2(args.out).train()
    trained = [p for name, p in sam.named_parameters() if memory_parameter(name)]
    optimizer = torch.optim.AdamW([p.requires_grad_(True) for p in trained], lr=args.memory_lr, weight_decay=1e-4)
    schedule = warmup_cosine(optimizer, args.memory_steps)
    before = held_out_video_j(sam, num_videos=args.eval_videos, seed=args.seed, num_frames=args.eval_frames)
    print(f"stage 2 trains {sum(p.numel() for p in trained) / 1e6:.2f}M parameters for {args.memory_steps} steps; "
          f"held-out J before: memory {before['memory']:.3f}, no memory {before['no memory']:.3f}")
    start = time.time()
    bar = tqdm(range(args.memory_steps), desc="tiny SAM 2, stage 2 (memory)")
    for step in bar:
        clip = sample_videos(np.random.default_rng([args.seed, VIDEO_STREAM, step]), args.videos, args.clip_frames)
        bar.set_postfix(loss=f"{memory_train_step(sam, optimizer, clip):.3f}")
        schedule.step()
    minutes = (time.time() - start) / 60
    after = held_out_video_j(sam, num_videos=args.eval_videos, seed=args.seed, num_frames=args.eval_frames)
    print(f"stage 2: held-out J on {args.eval_videos} fresh {args.eval_frames}-frame videos from a "
          f"ground-truth first-frame mask: memory {after['memory']:.3f}, no memory (frame 0's box on every frame) "
          f"{after['no memory']:.3f}  ({minutes:.1f} min)")
    return sam.requires_grad_(False).eval()


def main(argv=None) -> nn.Module:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    sam = None
    if args.stage in ("image", "both"):
        save_fp16(train_images(args), args.out)
        print(f"saved {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
    if args.stage in ("memory", "both"):
        sam = train_memory(args)  # from the file: stage 2 sees exactly the fp16 weights everyone loads
        save_fp16(sam, args.out)
        print(f"saved {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
    return load_tiny_sam2(args.out)


if __name__ == "__main__":
    main()
