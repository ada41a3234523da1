"""GP-SAM (Table 3) and the reference-free yardsticks of evaluate.py (--method)."""

import numpy as np
import pytest
import torch

import baselines
import data
import evaluate
from model import VRPConfig, build_vrp_sam


@pytest.fixture(scope="module")
def model():
    return build_vrp_sam(VRPConfig(backbone="tiny", sam="tiny"), seed=0)  # random frozen parts: geometry only


@pytest.fixture(scope="module")
def episodes():
    return data.build_dataset("synthetic", split="test", fold=0, num_episodes=6, num_images=200)


def batch_of(dataset, n=4):
    return data.collate_episodes([dataset[i] for i in range(n)])


def test_gp_sam_points_lie_in_the_binarised_pseudo_mask_and_its_box_is_the_masks_bounding_box(model, episodes):
    batch = batch_of(episodes)
    prior = baselines.reference_prior(
        model, batch["target_image"], batch["reference_images"], batch["reference_labels"]
    )
    # min-max normalised on the feature grid, then resized bilinearly: within [0, 1], its top near 1
    assert (
        prior.shape == (4, 128, 128)
        and prior.min() >= 0
        and (prior.flatten(1).amax(1) > 0.9).all()
        and prior.max() <= 1
    )
    binary = baselines.binarise_prior(prior)
    assert torch.equal(binary, prior >= baselines.GP_THRESHOLD)
    for mask, episode in zip(binary, batch["episode"]):
        points, box = baselines.geometric_prompts(mask, np.random.default_rng([0, int(episode)]))
        assert points.shape == (baselines.GP_NUM_POINTS, 2)
        assert all(mask[int(y), int(x)] for x, y in points)
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item(), ys.max().item()]
        again, _ = baselines.geometric_prompts(mask, np.random.default_rng([0, int(episode)]))
        assert torch.equal(points, again)  # seeded per episode


def test_geometric_prompts_on_a_known_mask():
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[5:9, 10:20] = True
    mask[20, 3] = True
    points, box = baselines.geometric_prompts(mask, np.random.default_rng(0), num_points=5)
    assert box.tolist() == [3, 5, 19, 20]
    assert all(mask[int(y), int(x)] for x, y in points) and len({tuple(p.tolist()) for p in points}) == 5
    flat = torch.zeros(1, 8, 8)
    flat[0, 2, 3] = 0.2  # nothing reaches the threshold: the maximum is kept, never an empty mask
    assert baselines.binarise_prior(flat).nonzero().tolist() == [[0, 2, 3]]


@pytest.mark.parametrize("prompt", baselines.GP_PROMPTS)
def test_gp_sam_predicts_one_mask_per_episode(model, episodes, prompt):
    batch = batch_of(episodes, 2)
    run = baselines.gp_sam_predictor(model, prompt=prompt, seed=0, cache=None, device=torch.device("cpu"))
    logits = run(batch)
    assert logits.shape == (2, 128, 128) and torch.isfinite(logits).all()


def test_every_class_object_covers_the_target_and_every_object_covers_more(episodes):
    batch = batch_of(episodes, 6)
    classes = baselines.oracle_predictor(episodes, "every-class-object")(batch) > 0
    everything = baselines.oracle_predictor(episodes, "every-object")(batch) > 0
    assert (classes | ~(batch["target_mask"] == 1)).all()
    assert (everything | ~classes).all() and everything.sum() >= classes.sum()


def test_wrong_reference_episodes_change_only_the_references(episodes):
    wrong = baselines.WrongReferenceEpisodes(episodes, seed=0)
    for i in range(len(episodes)):
        right, other = episodes[i], wrong[i]
        assert torch.equal(right["target_mask"], other["target_mask"]) and right["class_id"] == other["class_id"]
        (reference,) = other["reference_ids"]
        assert right["class_id"] not in episodes.images.classes[reference]
        assert wrong.others[i].class_id != right["class_id"] and (other["reference_labels"] > 0).any()


@pytest.mark.parametrize("flags, message", [
    (["--method", "gp-sam", "--untrained"], "--untrained applies to trained encoders"),
    (["--method", "every-object", "--gp-prompt", "box"], "--gp-prompt / --gp-threshold apply to --method gp-sam only"),
])
def test_bad_method_flags_are_one_line(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--runs", str(tmp_path), "--dataset", "synthetic", *flags])
    text = str(exit_info.value)
    assert text.startswith("evaluate.py: error:") and message in text and "\n" not in text


@pytest.mark.parametrize("flags, message", [
    (["--gp-prompt", "boxes"], "argument --gp-prompt: unknown 'boxes'"),
    (["--gp-threshold", "2"], "argument --gp-threshold: expected a number in [0, 1], got 2"),
    (["--gp-threshold", "nan"], "argument --gp-threshold: expected a non-negative number, got nan"),
])
def test_bad_gp_values_are_refused_when_parsed(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--runs", str(tmp_path), "--dataset", "synthetic", "--method", "gp-sam", *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
