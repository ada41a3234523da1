"""Is the frozen tiny SAM what holds the trained encoder back? (docs/baselines.md)

VRP-SAM's encoder hands SAM's decoder N learned tokens, where SAM was pre-trained on a point or a
box. This measures the SAM side alone, on the first episodes of fold 0's fixed test set (novel
classes), with tokens optimised directly (Adam, BCE + Dice; no encoder, no reference):

- *per target*: N tokens for each target, fitted to its own ground truth: how far the decoder can
  be steered at all (beside it, the target's ground-truth box through SAM's prompt encoder);
- *per class*: one set of N tokens shared by every target of a class, fitted on other targets of
  that class (`--fit-episodes` further episodes, target images not among the scored ones): tokens
  that cannot say *where* the object is, only *what* it is, as a prompt made from the content of
  references alone must; an upper bound for such a prompt, as it saw many examples of the class.

With --checkpoint, a trained VRP encoder is scored on the same episodes, to set beside both.

    python benchmarks/diag_free_prompts.py --checkpoint runs/synthetic-fold0-mask-tiny/best.pt
    python benchmarks/diag_free_prompts.py --tokens 1,2,10,50 --sam-checkpoint OTHER.pth
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import baselines  # noqa: E402
import data  # noqa: E402
import evaluate  # noqa: E402
from model import (
    build_from_checkpoint,
    build_sam,
    decode_masks,
    decode_prompts,
    default_sam_checkpoint,
    load_checkpoint,  # noqa: E402
    run_sam_checkpoint,
    sam_image_embeddings,
    upsample_logits,
    vrp_loss,
)

CLASSES = data.fold_classes("synthetic", 0, "test")


def miou(logits: torch.Tensor, batch: dict) -> float:
    """The benchmark's mIoU (evaluate.IoUMeter: per-class intersection over union, averaged), in %."""
    meter = evaluate.IoUMeter(CLASSES)
    meter.update(logits > 0, batch["target_mask"], batch["class_id"].tolist())
    return meter.miou()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=50, help="scored episodes (the first of fold 0's test set)")
    parser.add_argument("--fit-episodes", type=int, default=100, help="further episodes that fit the per-class tokens")
    parser.add_argument("--tokens", default="1,50", help="token counts, comma-separated")
    parser.add_argument("--steps", type=int, default=150, help="Adam steps per fit")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument(
        "--sam-checkpoint", type=Path, default=None, help="default: the --checkpoint run's, else the shipped tiny SAM"
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="a train.py checkpoint to score on the same episodes"
    )
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    state = None if args.checkpoint is None else load_checkpoint(args.checkpoint)
    sam_checkpoint = (
        run_sam_checkpoint(state, args.sam_checkpoint)
        if state
        else args.sam_checkpoint or default_sam_checkpoint("tiny")
    )
    sam = build_sam("tiny", sam_checkpoint)

    episodes = data.build_dataset("synthetic", split="test", fold=0, num_episodes=args.episodes + args.fit_episodes)
    scored = [episodes[i] for i in range(args.episodes)]
    seen = {item["target_id"] for item in scored}
    fitting = [
        item for item in (episodes[i] for i in range(args.episodes, len(episodes))) if item["target_id"] not in seen
    ]
    scored, fitting = data.collate_episodes(scored), data.collate_episodes(fitting)
    size = scored["target_image"].shape[-2:]
    with torch.no_grad():
        for batch in (scored, fitting):
            batch["embeddings"] = sam_image_embeddings(sam, batch["target_image"])
            batch["row"] = torch.tensor([CLASSES.index(int(c)) for c in batch["class_id"]])  # its class's token set
        truth = scored["target_mask"] == 1
        boxes = torch.stack([baselines.geometric_prompts(t, np.random.default_rng(i))[1] for i, t in enumerate(truth)])
        box = miou(upsample_logits(decode_prompts(sam, scored["embeddings"], boxes=boxes), size)[:, 0], scored)
    print(f"{sam_checkpoint.name}; fold 0, the first {args.episodes} test episodes (per-class tokens fitted on "
          f"{len(fitting['class_id'])} others), mIoU")
    print(f"SAM from the target's ground-truth box: {box:.1f}")
    if state is not None:
        with torch.no_grad():
            vrp = build_from_checkpoint(state, sam_checkpoint=sam_checkpoint).eval()
            print(
                f"the trained VRP encoder ({args.checkpoint}): {miou(evaluate.predict(vrp, scored, None, torch.device('cpu')), scored):.1f}"
            )

    def decode(tokens: torch.Tensor, batch: dict, rows: torch.Tensor) -> torch.Tensor:
        return upsample_logits(decode_masks(sam, batch["embeddings"], tokens[rows]), size)[:, 0]

    def fit(tokens: torch.Tensor, batch: dict, rows: torch.Tensor) -> torch.Tensor:
        tokens.requires_grad_(True)
        optimizer = torch.optim.Adam([tokens], lr=args.lr)
        for _ in range(args.steps):
            loss = vrp_loss(decode(tokens, batch, rows), batch["target_mask"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return tokens.detach()

    torch.manual_seed(0)
    print(f"{'tokens':>6}  per target  per class: on the targets it was fitted on / on the scored ones")
    for count in (int(n) for n in args.tokens.split(",")):
        # unit normal: about the scale of SAM's sin/cos point tokens
        own_rows = torch.arange(args.episodes)
        own = fit(torch.randn(args.episodes, count, 256), scored, own_rows)
        shared = fit(torch.randn(len(CLASSES), count, 256), fitting, fitting["row"])
        with torch.no_grad():
            print(
                f"{count:>6}  {miou(decode(own, scored, own_rows), scored):10.1f}  "
                f"{miou(decode(shared, fitting, fitting['row']), fitting):9.1f} / {miou(decode(shared, scored, scored['row']), scored):.1f}"
            )


if __name__ == "__main__":
    main()
