"""The paper's ablations: the loss (Table 5, Eq. 6), query initialisation (Table 6), the number of
queries (Fig. 6) and the base-class evaluation (Table 13), on tiny configs and fabricated data."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import data
import evaluate
import model
import train
from test_data import MIN_PIXELS, SIZE, make_pascal

TINY = model.VRPConfig(backbone="tiny", sam="tiny")
TINY_RUN = ["--dataset", "synthetic", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4",
            "--val-episodes", "4", "--workers", "0"]


@pytest.fixture(scope="module")
def frozen_parts():
    """The tiny backbone and a random tiny SAM, built once: only the VRP encoder differs between tests."""
    return model.build_backbone("tiny"), model.build_sam("tiny")


def logits_and_target(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(3, 12, 12, generator=g)
    target = (torch.rand(3, 12, 12, generator=g) > 0.6).long()
    target[:, :2] = 255  # a PASCAL-style boundary band
    return logits, target


# --- Table 5: the loss ---------------------------------------------------------------------------

def test_bce_alone_is_binary_cross_entropy_over_the_valid_pixels():
    logits, target = logits_and_target()
    valid = target != 255
    expected = F.binary_cross_entropy_with_logits(logits[valid], target[valid].float())
    assert model.vrp_loss(logits, target, loss="bce").item() == pytest.approx(expected.item(), rel=1e-6)


def test_dice_alone_is_the_authors_dice_per_image():
    logits, target = logits_and_target()
    per_image = []
    for b in range(logits.shape[0]):
        valid = target[b] != 255
        p, y = torch.sigmoid(logits[b][valid]), (target[b][valid] == 1).float()
        per_image.append(1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1))
    assert model.vrp_loss(logits, target, loss="dice").item() == pytest.approx(
        torch.stack(per_image).mean().item(), rel=1e-6
    )


def test_the_default_loss_is_the_sum_of_the_two_terms():
    logits, target = logits_and_target(seed=1)
    both = model.vrp_loss(logits, target)
    assert both == model.vrp_loss(logits, target, loss="bce+dice")
    terms = model.vrp_loss(logits, target, loss="bce") + model.vrp_loss(logits, target, loss="dice")
    assert both.item() == pytest.approx(terms.item(), rel=1e-6)
    assert model.vrp_loss(logits, target, loss="bce") != model.vrp_loss(logits, target, loss="dice")


def test_each_loss_trains_the_encoder(frozen_parts):
    vrp = model.VRPSAM(config=TINY, backbone=frozen_parts[0], sam=frozen_parts[1], seed=0).train()
    target = torch.randn(1, 3, 128, 128)
    labels = torch.zeros(1, 1, 128, 128)
    labels[:, :, 40:80, 40:80] = 1
    logits = vrp(target, target[:, None], labels)
    queries = vrp.encoder.prompt_generator.queries.weight
    for kind in model.LOSSES:
        grad, = torch.autograd.grad(model.vrp_loss(logits, labels[:, 0].long(), loss=kind), queries, retain_graph=True)
        assert grad.abs().sum() > 0, kind
    with pytest.raises(ValueError, match="--loss"):
        model.vrp_loss(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), loss="focal")


# --- Table 6: query initialisation; Fig. 6: the number of queries -------------------------------

@pytest.mark.parametrize("query_init", model.QUERY_INITS)
def test_every_query_initialisation_keeps_the_papers_learnable_parameters(query_init):
    # ResNet-50's mid-level features: 512 + 1024 channels; the count of Table 2 ("1.6M") for every init.
    encoder = model.VRPEncoder(mid_channels=1536, embed_dim=256, num_queries=50, num_heads=4, query_init=query_init)
    assert sum(p.numel() for p in encoder.parameters()) == 1_592_064
    reference = model.VRPEncoder(mid_channels=1536, num_queries=50)
    assert {k: v.shape for k, v in encoder.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


@torch.no_grad()
def test_query_initialisations_give_n_prompts_per_reference(frozen_parts):
    target = torch.randn(1, 3, 128, 128)
    references = torch.randn(1, 2, 3, 128, 128)
    labels = torch.zeros(1, 2, 128, 128)
    labels[:, :, 30:90, 20:70] = 1
    build = lambda config: model.VRPSAM(
        config=config, backbone=frozen_parts[0], sam=frozen_parts[1], seed=0
    ).eval()  # noqa: E731
    paper_count = build(TINY).num_learnable_parameters()  # 50 queries
    for num_queries in (7, 50):  # Fig. 6 varies N; an odd N splits "half" unevenly
        random = build(replace(TINY, num_queries=num_queries)).learnable_state_dict()
        for query_init in model.QUERY_INITS:
            vrp = build(replace(TINY, num_queries=num_queries, query_init=query_init))
            assert vrp.encoder.prompt_generator.query_init == query_init
            # The same seed draws the same weights whatever the init; N only changes the query table.
            learnable = vrp.learnable_state_dict()
            assert learnable.keys() == random.keys() and all(torch.equal(learnable[k], random[k]) for k in learnable)
            assert vrp.num_learnable_parameters() == paper_count + 256 * (num_queries - 50)
            prompts = vrp.prompt_embeddings(target, references, labels)
            assert prompts.shape == (1, 2 * num_queries, 256) and torch.isfinite(prompts).all()  # k×N prompts (Table 7)


@pytest.mark.parametrize("num_queries", [5, 6])
def test_initial_queries_add_the_foreground_and_background_prototypes(num_queries):
    prototypes = torch.randn(2, 2, 256)  # (B, [foreground, background], C)
    built = {}
    for query_init in model.QUERY_INITS:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            built[query_init] = model.PromptGenerator(num_queries=num_queries, query_init=query_init)
    q = built["random"].queries.weight
    foreground, background = prototypes[:, None, 0], prototypes[:, None, 1]
    torch.testing.assert_close(built["random"].initial_queries(prototypes), q.expand(2, -1, -1))
    torch.testing.assert_close(built["fp"].initial_queries(prototypes), q + foreground)
    torch.testing.assert_close(built["bp"].initial_queries(prototypes), q + background)
    half = math.ceil(num_queries / 2)
    mixed = built["half"].initial_queries(prototypes)
    torch.testing.assert_close(mixed[:, :half], q[:half] + foreground)
    torch.testing.assert_close(mixed[:, half:], q[half:] + background)


def test_prototypes_pool_the_projected_reference_inside_and_outside_its_label():
    augmenter = model.FeatureAugmenter(mid_channels=8, embed_dim=16).eval()  # eval: no dropout
    g = torch.Generator().manual_seed(0)
    target_mid, reference_mid = torch.randn(2, 8, 6, 6, generator=g), torch.randn(2, 8, 6, 6, generator=g)
    mask = torch.zeros(2, 1, 6, 6)
    mask[:, :, 1:4, 2:5] = 1
    mask[1, :, 0, 0] = 0.25  # a soft cell, as area downsampling gives
    _, _, prototypes = augmenter(target_mid, reference_mid, mask, torch.rand(2, 1, 6, 6, generator=g))
    projected = augmenter.projection(reference_mid)
    for b in range(2):
        m = mask[b, 0]
        inside = (projected[b] * m).sum(dim=(1, 2)) / (m.sum() + 5e-4)  # Eq. 1
        outside = (projected[b] * (1 - m)).sum(dim=(1, 2)) / ((1 - m).sum() + 5e-4)
        torch.testing.assert_close(prototypes[b, 0], inside)
        torch.testing.assert_close(prototypes[b, 1], outside)


def test_query_init_is_stored_in_checkpoints_and_checked(tmp_path):
    with pytest.raises(ValueError, match="--query-init"):
        model.VRPConfig(backbone="tiny", sam="tiny", query_init="zeros")
    config = replace(TINY, query_init="half")
    path = tmp_path / "half.pt"
    model.save_checkpoint(path, model.build_vrp_sam(config, seed=0))
    assert model.VRPConfig(**model.load_checkpoint(path)["config"]) == config
    with pytest.raises(ValueError, match="query_init: checkpoint half, requested random"):
        model.load_checkpoint(path, config=TINY)
    # A checkpoint from before the field existed rebuilds as "random", the only init there was then.
    old = torch.load(path, weights_only=True)
    del old["config"]["query_init"]
    torch.save(old, tmp_path / "old.pt")
    assert model.VRPConfig(**model.load_checkpoint(tmp_path / "old.pt")["config"]).query_init == "random"


@pytest.mark.parametrize("flag, value", [("--query-init", "zeros"), ("--loss", "focal")])
def test_unknown_choices_are_one_argparse_line(flag, value, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        train.main(TINY_RUN + [flag, value, "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("train.py: error:") or "error: argument" in error
    assert flag in error and "invalid choice" in error
    assert not (tmp_path / "run").exists()


# --- Table 13: the base set -----------------------------------------------------------------------

def test_synthetic_base_episodes_use_only_training_classes_and_training_images():
    common = dict(fold=1, num_images=80, num_episodes=60, seed=3)
    base = data.build_dataset("synthetic", split="base", **common)
    train_classes = set(data.fold_classes("synthetic", 1, "train"))
    train_ids = set(data.build_dataset("synthetic", split="train", **common).images.ids)
    assert len(base) == 60 and base.split == "base"
    assert {e.class_id for e in base.episodes} <= train_classes
    assert len({e.class_id for e in base.episodes}) > 5  # more than a novel fold's worth of classes
    for episode in base.episodes:
        assert {episode.target_id, *episode.reference_ids} <= train_ids
    item = base[0]
    assert item["class_id"] in train_classes and (item["target_mask"] == 1).any()
    # a fixed list, like the test episodes, but not the same one
    again = data.build_dataset("synthetic", split="base", **common)
    assert data.episodes_hash(again) == data.episodes_hash(base)
    assert data.episodes_hash(data.build_dataset("synthetic", split="test", **common)) != data.episodes_hash(base)


def test_pascal_base_episodes_come_from_the_training_images(tmp_path):
    names = make_pascal(tmp_path)
    val = set((tmp_path / "VOC2012/ImageSets/Segmentation/val.txt").read_text().split())
    common = dict(fold=0, data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache", min_pixels=MIN_PIXELS)
    base = data.build_dataset("pascal", split="base", num_episodes=40, **common)
    train_classes = set(data.fold_classes("pascal", 0, "train"))
    for episode in base.episodes:
        assert episode.class_id in train_classes
        for image_id in (episode.target_id, *episode.reference_ids):
            name = image_id.split("/", 1)[1]
            assert name not in val and episode.class_id in names[name]


def test_base_split_without_training_images_is_one_clear_error(tmp_path):
    make_pascal(tmp_path, train=0)
    with pytest.raises(ValueError, match="--split base .* training images"):
        data.build_dataset("pascal", split="base", fold=0, data_root=tmp_path, image_size=SIZE,
                           cache_dir=tmp_path / "cache", min_pixels=MIN_PIXELS)


def test_evaluate_split_base_refuses_a_dataset_without_training_images(tmp_path, monkeypatch, capsys):
    # No dataset here lacks training images yet (video sets will): stand one in by its absence.
    monkeypatch.setattr(data, "BASE_SPLIT_DATASETS", ("pascal",))
    checkpoint = tmp_path / "never-read.pt"
    checkpoint.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--dataset", "synthetic", "--split", "base", "--checkpoint", f"0={checkpoint}", "--folds", "0"])
    message = str(exit_info.value.code)
    assert (
        message.startswith("evaluate.py: error: --split base: synthetic has no training images") and "\n" not in message
    )


# --- through train.py and evaluate.py ----------------------------------------------------------------

def test_train_flags_reach_the_checkpoint_and_evaluate_prints_table_13(tmp_path, capsys):
    out = tmp_path / "runs" / "dice-half"
    cache = str(tmp_path / "cache")
    train.main(
        TINY_RUN
        + ["--loss", "dice", "--query-init", "half", "--num-queries", "7", "--out", str(out), "--cache-dir", cache]
    )
    assert json.loads((out / "config.json").read_text())["loss"] == "dice"
    state = model.load_checkpoint(out / "last.pt")
    assert state["config"]["query_init"] == "half" and state["config"]["num_queries"] == 7
    with pytest.raises(SystemExit, match="--loss: run dice, now bce"):  # a resumed run keeps its loss
        train.main(TINY_RUN + ["--loss", "bce", "--query-init", "half", "--num-queries", "7", "--out", str(out),
                               "--cache-dir", cache, "--resume"])
    capsys.readouterr()

    results = evaluate.main(["--runs", str(tmp_path / "runs"), "--dataset", "synthetic", "--split", "base",
                             "--folds", "0", "--episodes", "8", "--workers", "0", "--cache-dir", cache])
    printed = capsys.readouterr().out
    assert "base and novel classes (Table 13)" in printed
    row = [line for line in printed.splitlines() if line.startswith("mask")][0].split()
    base, novel = results["mask/1/base"][0], results["mask/1"][0]
    assert row == [
        "mask", "1", f"{base['miou']:.1f}", f"{base['miou']:.1f}", f"{novel['miou']:.1f}",
    ]  # fold0, mean, novel mean
    assert set(base["class_iou"]) <= set(data.fold_classes("synthetic", 0, "train"))
    assert set(novel["class_iou"]) <= set(data.fold_classes("synthetic", 0, "test"))
    saved = json.loads((out / "eval-mask-1shot-8ep-seed0-base.json").read_text())
    assert saved["split"] == "base" and saved["episodes"] == 8 and (out / "eval-mask-1shot-8ep-seed0.json").exists()


def test_the_base_set_needs_the_training_images_only(tmp_path):
    missing = [line.split(":")[0] for line in data.missing_data("coco2pascal", tmp_path, splits=("base",))]
    assert str(tmp_path / "train2014") in missing  # COCO's training images hold coco2pascal's base classes
    assert not any("val2014" in path or "VOC2012" in path for path in missing)
    assert data.missing_data("coco", tmp_path, splits=("base",)) == data.missing_data(
        "coco", tmp_path, splits=("train",)
    )


def test_seed_spread_reads_each_seeds_result_and_gives_the_sample_std(tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "seed_spread", Path(__file__).parents[1] / "benchmarks" / "seed_spread.py"
    )
    seed_spread = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed_spread)
    for folder, miou in (("e3", 69.1), ("e3-s1", 59.3), ("e3-seed2", 72.2), ("e3-s10x", 0.0)):  # e3-s10x: not a seed
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "eval-mask-1shot-1000ep-seed0.json").write_text(json.dumps({"miou": miou, "fbiou": 80.0}))
    (tmp_path / "e3-s1" / "eval-mask-1shot-1000ep-seed0-base.json").write_text(json.dumps({"miou": 70.0, "fbiou": 0}))
    table = seed_spread.main([str(tmp_path / "e3")])
    row = table[str(tmp_path / "e3")]
    assert row["seeds"] == [0, 1, 2] and row["base"] == [70.0]
    line = capsys.readouterr().out.splitlines()[1]
    assert "66.9 ± 6.7" in line and "80.0 ± 0.0" in line  # by hand: mean 66.87, sqrt(90.65 / 2) = 6.73
