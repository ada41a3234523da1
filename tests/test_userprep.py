"""Where the authors' users got stuck: one encoder for all four label kinds (train.py --label any,
evaluate.py --trained-label) and the authors' deep-stem ResNet loaded strictly."""

import json
from collections import Counter
from functools import partial

import pytest
import torch
from torch.utils.data import DataLoader

import cli
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
    assert again.label_kinds == mixed.label_kinds and [again[i]["label"] for i in range(5)] == list(
        mixed.label_kinds[:5]
    )
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
    saved = json.loads((out / "eval-point-1shot-8ep-seed0.json").read_text())
    assert saved["trained_label"] == "any" and saved["miou"] == pytest.approx(result["point/1"][0]["miou"])
    # the same with --trained-label any, which names it in the title instead
    explicit = evaluate.main(common + ["--label", "box", "--folds", "0", "--trained-label", "any"])
    assert "trained with any labels" in capsys.readouterr().out
    assert explicit["box/1"][0]["miou"] == pytest.approx(result["box/1"][0]["miou"])


def test_a_per_kind_checkpoint_is_evaluated_with_another_kind_only_when_asked(any_run, tmp_path, capsys):
    root, out = any_run
    state = model.load_checkpoint(out / "last.pt")
    state["args"]["label"] = "point"  # as train.py --label point would have written it
    point = tmp_path / "point.pt"
    cli.write_atomic(point, partial(torch.save, state), durable=True)
    common = ["--dataset", "synthetic", "--runs", str(tmp_path / "none"), "--episodes", "4", "--workers", "0",
              "--cache-dir", str(root / "cache"), "--folds", "0", "--checkpoint", f"0={point}"]
    with pytest.raises(SystemExit, match="label 'point' .*--trained-label point"):
        evaluate.main(common + ["--label", "box"])
    result = evaluate.main(common + ["--label", "box", "--trained-label", "point"])
    assert result["box/1"][0]["trained_label"] == "point"
    with pytest.raises(SystemExit) as refused:  # at parse time, naming the flag
        evaluate.main(common + ["--label", "polygon"])
    assert refused.value.code == 2 and "--label" in capsys.readouterr().err.strip().splitlines()[-1]
    assert evaluate.label_list("all") == list(LABEL_KINDS) and evaluate.label_list("point,any") == ["point", "any"]


# --- the authors' deep-stem ResNet ----------------------------------------------------------------

def authors_resnet_state_dict(depth: int = 50, *, batch_counters: bool = True) -> dict:
    """Random tensors with exactly the keys and shapes of the authors' resnet{50,101}_v2.pth, written
    out from their model/base/resnet.py (deep_stem=True): stem conv1 3→64 (3×3, stride 2), conv2
    64→64, conv3 64→128, each with its BatchNorm; Bottleneck layers from 128 input channels; fc."""
    g = torch.Generator().manual_seed(depth)
    state = {}

    def conv(key, cout, cin, k):
        state[key] = torch.randn(cout, cin, k, k, generator=g) * (2 / (cin * k * k)) ** 0.5

    def bn(key, c):
        state.update({
            f"{key}.weight": 1 + 0.1 * torch.randn(c, generator=g), f"{key}.bias": 0.1 * torch.randn(c, generator=g),
            f"{key}.running_mean": 0.1 * torch.randn(c, generator=g),
            f"{key}.running_var": 1 + torch.rand(c, generator=g),
        })
        if batch_counters:
            state[f"{key}.num_batches_tracked"] = torch.tensor(0)

    for i, (cin, cout) in enumerate(((3, 64), (64, 64), (64, 128)), start=1):
        conv(f"conv{i}.weight", cout, cin, 3)
        bn(f"bn{i}", cout)
    inplanes = 128
    for layer, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 23 if depth == 101 else 6, 3)), start=1):
        for b in range(blocks):
            key = f"layer{layer}.{b}"
            conv(f"{key}.conv1.weight", planes, inplanes, 1), bn(f"{key}.bn1", planes)
            conv(f"{key}.conv2.weight", planes, planes, 3), bn(f"{key}.bn2", planes)
            conv(f"{key}.conv3.weight", 4 * planes, planes, 1), bn(f"{key}.bn3", 4 * planes)
            if b == 0:
                conv(f"{key}.downsample.0.weight", 4 * planes, inplanes, 1), bn(f"{key}.downsample.1", 4 * planes)
            inplanes = 4 * planes
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048, generator=g) * 0.01, torch.zeros(1000)
    return state


@pytest.mark.parametrize("depth", [50, 101])
def test_the_authors_deep_stem_file_loads_strictly_with_stride_8_and_the_same_split(depth, tmp_path):
    path = tmp_path / f"resnet{depth}_v2.pth"
    state = authors_resnet_state_dict(depth, batch_counters=depth == 50)  # older files lack the counters
    torch.save(state, path)
    backbone = model.build_backbone(f"resnet{depth}_deepstem", weights=path)
    loaded = backbone.state_dict()
    # every tensor of the file, in the right place: blocks.0 is the stem (conv1, bn1, relu, conv2, ...)
    assert torch.equal(loaded["blocks.0.3.weight"], state["conv2.weight"])
    assert torch.equal(loaded["blocks.0.7.running_var"], state["bn3.running_var"])
    assert torch.equal(loaded["blocks.1.0.downsample.0.weight"], state["layer1.0.downsample.0.weight"])
    assert torch.equal(loaded["blocks.4.2.conv3.weight"], state["layer4.2.conv3.weight"])
    n_weights = sum(1 for k in state if not k.startswith("fc.") and not k.endswith("num_batches_tracked"))
    assert sum(1 for k in loaded if not k.endswith("num_batches_tracked")) == n_weights
    mid, last = backbone.mid_features(torch.randn(1, 3, 64, 64))
    assert mid.shape == (1, 512 + 1024, 8, 8) and last.shape == (1, 1024, 8, 8)  # layer2 ⊕ layer3, stride 8
    assert backbone.high_features(last).shape == (1, 2048, 8, 8)  # layer4, dilated
    assert not any(p.requires_grad for p in backbone.parameters())


def test_the_deep_stem_encoder_has_table_2s_learnable_count():
    vrp = model.VRPSAM(config=model.VRPConfig(backbone="resnet50_deepstem", sam="tiny"),
                       backbone=model.build_backbone("resnet50_deepstem"), sam=model.build_sam("tiny"), seed=0)
    assert vrp.num_learnable_parameters() == 1_592_064


def test_a_torchvision_resnet_is_refused_by_the_deep_stem_in_one_line(tmp_path):
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(torchvision_resnet50_state_dict(), path)
    with pytest.raises(SystemExit) as refused:
        train.main(["--dataset", "synthetic", "--backbone", "resnet50_deepstem", "--backbone-weights", str(path),
                    "--out", str(tmp_path / "run")])
    message = str(refused.value)
    assert (
        message.startswith(f"train.py: error: {path} does not fit the resnet50_deepstem backbone")
        and "\n" not in message
    )
    assert "conv1.weight (64, 3, 7, 7) (model (64, 3, 3, 3))" in message and "conv2.weight" in message
    assert "torchvision's ResNet" in message and "--backbone resnet50" in message
    # a file of the right stem but the wrong depth, and no file at all, are named too
    torch.save(authors_resnet_state_dict(101), tmp_path / "resnet101_v2.pth")
    with pytest.raises(
        ValueError,
        match=r"resnet101_v2.pth does not fit the resnet50_deepstem backbone: \d+ unexpected keys \(e.g. layer3.6",
    ):
        model.build_backbone("resnet50_deepstem", weights=tmp_path / "resnet101_v2.pth")
    with pytest.raises(SystemExit, match="no torchvision ImageNet weights: pass the authors' resnet50_v2.pth"):
        train.main(["--dataset", "synthetic", "--backbone", "resnet50_deepstem", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def torchvision_resnet50_state_dict() -> dict:
    import torchvision
    return torchvision.models.resnet50(weights=None).state_dict()
