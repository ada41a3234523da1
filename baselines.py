"""GP-SAM (paper Table 3) and the reference-free yardsticks, scored on the same fixed episodes and
metric as VRP-SAM (`python evaluate.py --method ...`; docs/baselines.md).

- ``gp-sam``: no training. The reference's pseudo mask (Appendix A) on the target, binarised,
  becomes SAM's own geometric prompts: 5 positive points (the paper's footnote 2) and/or its box.
- ``every-class-object`` / ``every-object``: read the target's ground truth and ignore the
  reference; what a model that segments "objects of some class" / "every thing" would score.
- ``wrong-reference``: the trained encoder given a reference of another class.

A file of its own so that evaluate.py reads as the evaluation protocol; evaluate.py picks these by
``--method``. Exposes ``reference_prior``, ``binarise_prior``, ``geometric_prompts``,
``gp_sam_predictor``, ``oracle_predictor``, ``WrongReferenceEpisodes`` and the constants below.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import data
from model import (
    EmbeddingCache, autocast, decode_prompts, downsample_label, embed_targets, pseudo_mask, sam_input_size,
    upsample_logits,
)
from prompts import IGNORE, SEED_STREAMS


METHODS = ("vrp-sam", "gp-sam", "every-class-object", "every-object", "wrong-reference")
GP_PROMPTS = ("point", "box", "box+point")
GP_NUM_POINTS = 5  # the paper's footnote 2: five positive points
GP_THRESHOLD = 0.5  # on the min-max normalised pseudo mask: the upper half of its range is the object


@torch.no_grad()
def reference_prior(model, target_images: torch.Tensor, reference_images: torch.Tensor,
                    reference_labels: torch.Tensor) -> torch.Tensor:
    """The target's pseudo mask (Appendix A; the training-free prior of PFENet, the paper's [34])
    from the frozen backbone, min-max normalised to [0, 1] per image, at image size: (B, S, S).

    The same computation as VRPSAM.prompt_embeddings (the reference's 5th block sees only its
    annotated region); with k references each pixel keeps its largest value.
    """
    b, k = reference_images.shape[:2]
    backbone = model.backbone
    target_high = backbone.high_features(backbone.mid_features(target_images)[1])
    reference_mid, reference_last = backbone.mid_features(reference_images.flatten(0, 1))
    reference_mask = downsample_label(
        reference_labels.flatten(0, 1), reference_mid.shape[-2:], model.config.label_downsample
    )
    reference_high = backbone.high_features(reference_last * reference_mask)
    if reference_high.shape[-2:] != reference_mask.shape[-2:]:
        reference_mask = F.interpolate(
            reference_mask, size=reference_high.shape[-2:], mode="bilinear", align_corners=True
        )
    prior = pseudo_mask(target_high.repeat_interleave(k, dim=0), reference_high, reference_mask, norm="minmax")
    prior = prior.view(b, k, *prior.shape[-2:]).amax(dim=1, keepdim=True)
    return upsample_logits(prior.float(), target_images.shape[-2:])[:, 0]


def binarise_prior(prior: torch.Tensor, threshold: float = GP_THRESHOLD) -> torch.Tensor:
    """(B, S, S) bool: prior >= threshold; a map with nothing above it (a flat map) keeps its maximum."""
    binary = prior >= threshold
    return binary | (prior >= prior.flatten(1).amax(1)[:, None, None])


def geometric_prompts(binary: torch.Tensor, rng: np.random.Generator, *, num_points: int = GP_NUM_POINTS):
    """GP-SAM's prompts from one binarised pseudo mask (S, S): `num_points` positive points drawn
    uniformly from its pixels (without replacement while it has enough), as (x, y), and its
    bounding box (x0, y0, x1, y1), both in pixel coordinates. Returns float tensors (n, 2), (4,)."""
    ys, xs = torch.nonzero(binary.cpu(), as_tuple=True)
    if len(xs) == 0:
        raise ValueError("geometric_prompts: the binarised pseudo mask is empty")
    pick = torch.from_numpy(rng.choice(len(xs), size=num_points, replace=len(xs) < num_points))
    points = torch.stack([xs[pick], ys[pick]], dim=1).float()
    box = torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()
    return points, box


def gp_sam_predictor(model, *, prompt: str, seed: int, cache: EmbeddingCache | None, device: torch.device,
                     threshold: float = GP_THRESHOLD):
    """Table 3's GP-SAM: no training. The reference becomes geometric prompts for SAM's own prompt
    encoder: 5 points sampled from the binarised pseudo mask (seeded per episode) and/or its box."""
    if prompt not in GP_PROMPTS:
        raise ValueError(f"--gp-prompt {prompt!r}: choose from {', '.join(GP_PROMPTS)}")
    sam = model.sam

    def run(batch: dict) -> torch.Tensor:
        target = batch["target_image"].to(device, non_blocking=True)
        with autocast(device):
            prior = reference_prior(
                model, target, batch["reference_images"].to(device), batch["reference_labels"].to(device)
            )
            binary = binarise_prior(prior.float(), threshold)
            points, boxes = zip(
                *(
                    geometric_prompts(mask, np.random.default_rng([seed, SEED_STREAMS["gp-sam"], int(episode)]))
                    for mask, episode in zip(binary, batch["episode"])
                )
            )
            scale = sam_input_size(sam) / target.shape[-1]  # pixels -> SAM's input frame, as its predictor
            point_prompt = torch.stack(points).to(device) * scale if "point" in prompt else None
            box_prompt = torch.stack(boxes).to(device) * scale if "box" in prompt else None
            embeddings = embed_targets(sam, target, list(batch["target_id"]), cache)
            low_res = decode_prompts(sam, embeddings, points=point_prompt, boxes=box_prompt)
        return upsample_logits(low_res.float(), target.shape[-2:])[:, 0]

    return run


def oracle_predictor(dataset, method: str):
    """Reference-free yardsticks that read the target's ground truth and ignore the reference:
    "every-class-object" predicts every object of any class (the synthetic distractors left out),
    "every-object" every drawn object, distractors included (synthetic scenes only)."""
    images, size = dataset.images, dataset.image_size
    if method == "every-object" and not hasattr(images, "scene"):
        raise ValueError("--method every-object needs scenes that list every object: use --dataset synthetic")

    def run(batch: dict) -> torch.Tensor:
        masks = []
        for target_id in batch["target_id"]:
            if method == "every-object":
                mask = np.any(np.stack(images.scene(target_id).instances), axis=0)
            else:
                label = images.load(target_id)[1]
                mask = (label != 0) & (label != IGNORE)
            mask = data.resize_mask(mask.astype(np.uint8), size)
            masks.append(torch.from_numpy(mask.astype(np.float32)) * 2 - 1)  # logits: > 0 inside
        return torch.stack(masks)

    return run


class WrongReferenceEpisodes(torch.utils.data.Dataset):
    """`dataset`'s episodes with each episode's references replaced by images of another class of
    the fold (drawn per episode from a seed, among images without the episode's class), annotated
    on that class; target and ground truth unchanged. How much the model relies on the reference."""

    def __init__(self, dataset, *, seed: int):
        self.dataset, self.others = dataset, []
        for index, episode in enumerate(dataset.episodes):
            rng = np.random.default_rng([seed, SEED_STREAMS["wrong-reference"], index])
            others = [c for c in dataset.class_ids if c != episode.class_id]
            if not others:
                raise ValueError("--method wrong-reference needs at least two classes in the fold")
            other = others[int(rng.integers(len(others)))]
            candidates = [i for i in dataset.images_of[other]
                          if i != episode.target_id and episode.class_id not in dataset.images.classes[i]]
            if len(candidates) < dataset.shots:
                raise ValueError(
                    f"--method wrong-reference: class {other} has too few images without class {episode.class_id}"
                )
            chosen = rng.choice(len(candidates), size=dataset.shots, replace=False)
            self.others.append(data.Episode(episode.target_id, other, tuple(candidates[j] for j in chosen)))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        rngs = self.dataset.annotation_rngs(index)
        other = self.others[index]
        # Built as an episode of the other class (its first reference standing in as the target), of
        # which only the references are kept.
        wrong = self.dataset.episode_item(
            index, data.Episode(other.reference_ids[0], other.class_id, other.reference_ids), rngs,
            self.dataset.label_kinds[index],
        )  # the episode's own label kind
        for key in ("reference_images", "reference_masks", "reference_labels", "reference_ids"):
            item[key] = wrong[key]
        return item
