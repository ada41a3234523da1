"""train.py and evaluate.py through their real entry points, on the embedded synthetic benchmark."""

import json

import pytest
import torch

import data
import evaluate
import model
import train
from evaluate import IoUMeter

TINY_RUN = ["--dataset", "synthetic", "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "4",
            "--val-episodes", "8", "--workers", "0"]


# --- the metric, against hand counts -------------------------------------------------------------

def test_iou_meter_matches_hand_count():
    prediction = torch.tensor([[[1, 1, 0, 0]], [[1, 0, 0, 0]]], dtype=torch.bool)  # (B=2, 1, 4)
    target = torch.tensor([[[1, 0, 255, 0]], [[1, 1, 0, 0]]])
    meter = IoUMeter([7, 9])
    meter.update(prediction, target, [7, 9])
    # episode 1 (class 7), pixel 2 ignored: fg I=1 U=2, bg I=1 U=2. episode 2 (class 9): fg I=1 U=2, bg I=2 U=3.
    assert meter.class_iou() == {7: 50.0, 9: 50.0}
    assert meter.miou() == 50.0
    assert meter.fbiou() == pytest.approx((100 * 2 / 4 + 100 * 3 / 5) / 2)


def test_iou_meter_sums_over_episodes_of_a_class_before_dividing():
    meter = IoUMeter([1])
    full = torch.ones(1, 2, 2, dtype=torch.long)
    meter.update(torch.ones(1, 2, 2, dtype=torch.bool), full, [1])  # IoU 4/4
    meter.update(torch.zeros(1, 1, 1, dtype=torch.bool), full[:, :1, :1], [1])  # IoU 0/1
    assert meter.miou() == pytest.approx(100 * 4 / 5)  # not the mean of per-episode IoUs (50)


def test_evaluation_builds_no_autograd_graph_and_a_reused_loader_scores_alike():
    # evaluate_episodes runs under no_grad, also when train.py hands it its persistent loader.
    vrp = model.build_vrp_sam(model.VRPConfig(backbone="tiny", sam="tiny"), seed=0)
    episodes = data.build_dataset("synthetic", split="test", fold=0, num_episodes=6, num_images=200)
    classes, cpu = data.fold_classes("synthetic", 0, "test"), torch.device("cpu")
    grad_enabled = []

    def predictor(batch):
        grad_enabled.append(torch.is_grad_enabled())
        return evaluate.predict(vrp, batch, None, cpu)

    loader = evaluate.episode_loader(episodes, batch_size=4, workers=0, device=cpu)
    reused = [
        evaluate.evaluate_episodes(vrp, episodes, class_ids=classes, batch_size=4, predictor=predictor, loader=loader)
        for _ in range(2)
    ]
    assert grad_enabled == [False] * 4  # two batches, twice
    assert reused[0] == reused[1] == evaluate.evaluate_episodes(vrp, episodes, class_ids=classes, batch_size=4)


def test_classes_without_episodes_count_as_zero_like_hsnet():
    meter = IoUMeter([1, 2])
    meter.update(torch.ones(1, 2, 2, dtype=torch.bool), torch.ones(1, 2, 2, dtype=torch.long), [1])
    assert meter.miou() == 50.0 and meter.classes_without_episodes() == [2]


# --- training and evaluation through main() --------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    out = root / "runs" / "synthetic-fold0-mask-tiny"
    summary = train.main(TINY_RUN + ["--out", str(out), "--cache-dir", str(root / "cache")])
    return root, out, summary


def test_one_tiny_training_run_writes_config_metrics_and_checkpoints(trained_run):
    _, out, summary = trained_run
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "synthetic" and config["sam"] == "tiny" and config["backbone"] == "tiny"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1]
    assert all(0 <= line["miou"] <= 100 and line["loss"] > 0 for line in lines)
    assert summary["best_miou"] == max(line["miou"] for line in lines)
    state = model.load_checkpoint(out / "last.pt")
    assert state["epoch"] == 1 and set(state["config"]) >= {"backbone", "sam", "num_queries"}
    # only the learnable encoder is saved: no SAM or backbone weights
    assert not any(k.startswith(("sam.", "backbone.")) for k in state["model"])


def test_resume_continues_exactly_like_an_uninterrupted_run(
    trained_run, tmp_path, monkeypatch, die_after_first_checkpoint
):
    root, uninterrupted, _ = trained_run
    out = tmp_path / "interrupted"
    args = TINY_RUN + ["--out", str(out), "--cache-dir", str(root / "cache")]
    real_save = die_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train.main(args)
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    train.main(args + ["--resume"])

    a = model.load_checkpoint(uninterrupted / "last.pt")
    b = model.load_checkpoint(out / "last.pt")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    log = lambda run: [{k: v for k, v in json.loads(line).items() if k in ("epoch", "loss", "miou")}
                       for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert log(out) == log(uninterrupted)


def test_train_refuses_to_overwrite_a_run(trained_run, capsys):
    root, out, _ = trained_run
    with pytest.raises(SystemExit) as exit_info:
        train.main(TINY_RUN + ["--out", str(out), "--cache-dir", str(root / "cache")])
    assert "already holds a run" in str(exit_info.value) and "--resume" in str(exit_info.value)


def test_evaluate_prints_a_table_and_is_reproducible_across_batch_sizes_and_workers(trained_run, capsys):
    root, out, _ = trained_run
    common = ["--runs", str(root / "runs"), "--episodes", "12", "--cache-dir", str(root / "cache")]
    first = evaluate.main(common + ["--batch-size", "4", "--workers", "0", "--folds", "0,1"])
    table = capsys.readouterr().out
    assert "fold0" in table and "mean" in table and "FB-IoU" in table
    assert "mask fold 1 (skipped)" in table  # a fold asked for and without a run is named, never silently dropped
    second = evaluate.main(common + ["--batch-size", "3", "--workers", "2"])  # and the cache is warm now
    table = capsys.readouterr().out  # the Quick start's table: the folds nobody asked for are dashes, unnamed
    assert table.splitlines()[0].startswith("VRP-SAM on synthetic: ") and len(table.splitlines()) == 3
    assert first["mask/1"][0]["miou"] == pytest.approx(second["mask/1"][0]["miou"], abs=1e-9)
    assert first["mask/1"][0]["episodes_hash"] == second["mask/1"][0]["episodes_hash"]
    saved = json.loads((out / "eval-mask-1shot-12ep-seed0.json").read_text())
    assert saved["miou"] == pytest.approx(second["mask/1"][0]["miou"]) and saved["episodes_hash"]


def test_evaluate_five_shot_and_visualisations(trained_run, capsys):
    root, out, _ = trained_run
    result = evaluate.main(["--runs", str(root / "runs"), "--episodes", "4", "--shots", "5", "--workers", "0",
                            "--cache-dir", str(root / "cache"), "--save-vis", "2"])
    assert 0 <= result["mask/5"][0]["miou"] <= 100
    assert len(list((out / "vis-mask-5shot-4ep-seed0").glob("*.png"))) == 2


def test_evaluate_errors_are_one_clear_line(trained_run, tmp_path, capsys):
    root, out, _ = trained_run
    with pytest.raises(SystemExit, match="no runs under"):
        evaluate.main(["--runs", str(tmp_path / "nothing")])
    with pytest.raises(SystemExit, match="trained for fold 0"):
        evaluate.main(
            ["--dataset", "synthetic", "--checkpoint", f"1={out / 'last.pt'}", "--folds", "1", "--runs", str(tmp_path)]
        )
    with pytest.raises(SystemExit, match="not found"):
        evaluate.main(["--checkpoint", f"0={tmp_path / 'missing.pt'}"])
    with pytest.raises(SystemExit):
        evaluate.main(["--runs", str(root / "runs"), "--label", "polygon"])
    assert "argument --label: unknown 'polygon'" in capsys.readouterr().err
