"""Where the authors' users got stuck: one encoder for all four label kinds (train.py --label any,
evaluate.py --trained-label) and the authors' deep-stem ResNet loaded strictly."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import data
import evaluate
import model
import train
from prompts import LABEL_KINDS

SIZE = 32
TINY_RUN = ["--dataset", "synthetic", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4",
            "--val-episodes", "8", "--workers", "0"]


# --- one model for all label kinds ------------------------------------------------------------------

def synthetic(**kwargs):
    kwargs.setdefault("fold", 0)
    kwargs.setdefault("num_images", 120)
    return data.build_dataset("synthetic", image_size=SIZE, **kwargs)


def test_label_any_draws_every_kind_per_training_episode_from_the_episodes_own_seed():
    dataset = synthetic(split="train", label="any")
    kinds = [dataset[i]["label"] for i in range(40)]
    assert set(kinds) == set(LABEL_KINDS)
    for i, kind in enumerate(kinds[:8]):  # the label is the kind's: a mask label is the object itself
        item = dataset[i]
        assert item["label"] == kind  # the same (seed, epoch, index) gives the same kind again
        if kind == "mask":
            assert torch.equal(item["reference_labels"][0] > 0, item["reference_masks"][0] == 1)
        if kind == "point":
            assert item["reference_labels"][0].sum() <= 20
    dataset.set_epoch(1)
    assert [dataset[i]["label"] for i in range(40)] != kinds  # a new draw each epoch
    # workers and batch size change nothing: the kind comes from default_rng([seed, epoch, index])
    batches = [data.collate_episodes([dataset[i] for i in range(8)])]
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=data.collate_episodes)
    from_workers = [b for _, b in zip(range(2), loader)]
    assert sum((b["label"] for b in from_workers), []) == batches[0]["label"]
    assert torch.equal(torch.cat([b["reference_labels"] for b in from_workers]), batches[0]["reference_labels"])


def test_label_any_evaluation_keeps_the_episode_list_and_fixes_each_episodes_kind():
    mixed = synthetic(split="test", label="any", num_episodes=40)
    mask = synthetic(split="test", label="mask", num_episodes=40)
    assert mixed.episodes == mask.episodes  # the same targets, classes and references
    assert Counter(mixed.label_kinds).keys() == set(LABEL_KINDS)
    again = synthetic(split="test", label="any", num_episodes=40)
    assert again.label_kinds == mixed.label_kinds and [again[i]["label"] for i in range(5)] == list(mixed.label_kinds[:5])
    with pytest.raises(ValueError, match="unknown label kind 'all'"):
        synthetic(split="test", label="all")


@pytest.fixture(scope="module")
def any_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("any")
    out = root / "runs" / "synthetic-fold0-any-tiny"
    train.main(TINY_RUN + ["--label", "any", "--out", str(out), "--cache-dir", str(root / "cache")])
    return root, out


def test_one_any_run_is_evaluated_with_every_kind(any_run, capsys):
    root, out = any_run
    assert json.loads((out / "config.json").read_text())["label"] == "any"
    common = ["--runs", str(root / "runs"), "--episodes", "8", "--workers", "0", "--cache-dir", str(root / "cache")]
    result = evaluate.main(common + ["--label", "all", "--folds", "0"])
    printed = capsys.readouterr().out
    # no per-kind run exists: each kind falls back to the any run, and says so
    assert all(f"{kind} fold 0: no run trained on {kind} labels" in printed for kind in LABEL_KINDS)
    assert set(result) == {f"{kind}/1" for kind in LABEL_KINDS}
    assert {result[f"{kind}/1"][0]["trained_label"] for kind in LABEL_KINDS} == {"any"}
    saved = json.loads((out / "eval-point-1shot.json").read_text())
    assert saved["trained_label"] == "any" and saved["miou"] == pytest.approx(result["point/1"][0]["miou"])
    # the same with --trained-label any, which names it in the title instead
    explicit = evaluate.main(common + ["--label", "box", "--folds", "0", "--trained-label", "any"])
    assert "trained with any labels" in capsys.readouterr().out
    assert explicit["box/1"][0]["miou"] == pytest.approx(result["box/1"][0]["miou"])


def test_a_per_kind_checkpoint_is_evaluated_with_another_kind_only_when_asked(any_run, tmp_path):
    root, out = any_run
    state = model.load_checkpoint(out / "last.pt")
    state["args"]["label"] = "point"  # as train.py --label point would have written it
    point = tmp_path / "point.pt"
    model.atomic_save(state, point)
    common = ["--dataset", "synthetic", "--runs", str(tmp_path / "none"), "--episodes", "4", "--workers", "0",
              "--cache-dir", str(root / "cache"), "--folds", "0", "--checkpoint", f"0={point}"]
    with pytest.raises(SystemExit, match="label 'point' .*--trained-label point"):
        evaluate.main(common + ["--label", "box"])
    result = evaluate.main(common + ["--label", "box", "--trained-label", "point"])
    assert result["box/1"][0]["trained_label"] == "point"
    with pytest.raises(SystemExit, match="unknown kind 'polygon'"):
        evaluate.main(common + ["--label", "polygon"])
