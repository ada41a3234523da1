"""Why GP-SAM's box prompt scores low on the synthetic benchmark (docs/baselines.md).

On the first N fixed test episodes of fold 0, with the shipped tiny backbone and tiny SAM:
how much of the image the binarised pseudo mask covers and its IoU with the target, and the IoU
SAM reaches from the *ground-truth* box / 5 points / 1 point of the target through the same prompt
path that GP-SAM uses (so a low GP-SAM box score is the prior's box, not the box path).

    python benchmarks/diag_gp_sam_box.py --episodes 64
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import baselines  # noqa: E402
import data  # noqa: E402
from model import VRPConfig, build_vrp_sam, decode_prompts, sam_image_embeddings, upsample_logits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--threshold", type=float, default=baselines.GP_THRESHOLD)
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    model = build_vrp_sam(
        VRPConfig(backbone="tiny", sam="tiny"), sam_checkpoint=ROOT / "checkpoints" / "sam_tiny_synthetic.pth",
        backbone_weights=ROOT / "checkpoints" / "tiny_backbone_synthetic.pth",
    )
    episodes = data.build_dataset("synthetic", split="test", fold=0, num_episodes=args.episodes)
    batch = data.collate_episodes([episodes[i] for i in range(len(episodes))])
    target, truth = batch["target_image"], batch["target_mask"] == 1

    def iou(prediction: torch.Tensor, reference: torch.Tensor) -> float:
        return ((prediction & reference).sum((1, 2)) / (prediction | reference).sum((1, 2)).clamp(min=1)).mean().item()

    with torch.no_grad():
        embeddings = sam_image_embeddings(model.sam, target)

        def sam_iou(points=None, boxes=None) -> float:
            low_res = decode_prompts(model.sam, embeddings, points=points, boxes=boxes)
            return iou(upsample_logits(low_res, target.shape[-2:])[:, 0] > 0, truth)

        points, boxes = zip(*(baselines.geometric_prompts(t, np.random.default_rng(i)) for i, t in enumerate(truth)))
        points, boxes = torch.stack(points), torch.stack(boxes)  # tiny SAM's input is the 128-px image itself
        prior = baselines.reference_prior(model, target, batch["reference_images"], batch["reference_labels"])
        binary = baselines.binarise_prior(prior, args.threshold)
        print(f"{len(episodes)} episodes; binarised pseudo mask (>= {args.threshold}): covers "
              f"{binary.float().mean().item():.2f} of the image, IoU with the target {iou(binary, truth):.2f}")
        print(f"SAM from the target's ground-truth prompts: box {sam_iou(boxes=boxes):.2f}, "
              f"5 points {sam_iou(points=points):.2f}, 1 point {sam_iou(points=points[:, :1]):.2f}")


if __name__ == "__main__":
    main()
