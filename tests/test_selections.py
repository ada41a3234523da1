"""evaluate.py's choice of runs: a selection that matches no run is an error that says what was asked
and what there is, never a table of dashes with exit status 0 (video.py's empty selections:
tests/test_video_reruns.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cli
import conftest
import data
import evaluate
import model
import train


def make_run(runs: Path, name: str, **config) -> Path:
    """A run folder as select_checkpoints sees it: train.py's config.json beside a best.pt."""
    folder = runs / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"dataset": "synthetic", "backbone": "tiny", **config}))
    (folder / "best.pt").write_bytes(b"")  # never read: the selection fails first
    return folder


@pytest.fixture
def runs(tmp_path):
    make_run(tmp_path / "runs", "mask0", fold=0, label="mask")
    make_run(tmp_path / "runs", "mask1", fold=1, label="mask")
    make_run(tmp_path / "runs", "any1", fold=1, label="any")
    return tmp_path / "runs"


def error_line(argv) -> str:
    return conftest.error_line(evaluate.main, argv)


THERE_ARE = "there are synthetic any-trained tiny (fold 1); synthetic mask-trained tiny (fold 0, 1)"


@pytest.mark.parametrize("flags, asked, train", [
    (["--trained-label", "point"], "--label mask --trained-label point --folds 0,1,2,3", "--label point --fold 0"),
    (["--folds", "2,3"], "--label mask --folds 2,3", "--label mask --fold 2"),
    (["--label", "box", "--folds", "0"], "--label box --folds 0", "--label box --fold 0"),
    (["--backbone", "resnet50"], "--folds 0,1,2,3 --backbone resnet50", "--label mask --fold 0"),
])
def test_a_selection_no_run_matches_names_what_was_asked_and_what_there_is(runs, flags, asked, train):
    message = error_line(["--runs", str(runs)] + flags)
    assert f"no run under {runs} for --dataset synthetic " in message and asked in message
    assert THERE_ARE in message and f"python train.py --dataset synthetic {train}" in message
    assert not list(runs.rglob("eval-*.json"))


def test_runs_of_another_dataset_are_listed(runs):
    message = error_line(["--runs", str(runs), "--dataset", "pascal"])
    assert "for --dataset pascal --label mask" in message and THERE_ARE in message


def test_checkpoints_given_for_other_folds_are_listed(tmp_path):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"")
    message = error_line(["--runs", str(tmp_path / "none"), "--dataset", "synthetic", "--checkpoint", f"1={checkpoint}",
                          "--folds", "0"])
    assert "--folds 0" in message and "there are --checkpoint for fold 1" in message


def test_a_config_json_that_is_not_json_is_named(runs):
    (runs / "mask1" / "config.json").write_text('{"dataset": "synth')
    assert f"{runs / 'mask1' / 'config.json'} is not valid JSON" in error_line(["--runs", str(runs)])


def test_a_config_json_of_another_tool_is_passed_over(runs):
    for name, config in (("other", {"dataset": "synthetic", "fold": 2}), ("list", [1, 2])):  # no label, backbone
        (runs / name).mkdir()
        (runs / name / "config.json").write_text(json.dumps(config))
    message = error_line(["--runs", str(runs), "--folds", "2"])  # not a KeyError's traceback
    assert message.endswith(f"--folds 2; {THERE_ARE}: choose among them, or train one "
                            "(python train.py --dataset synthetic --label mask --fold 2)")


def test_a_newer_run_killed_before_its_first_checkpoint_does_not_hide_a_finished_one(tmp_path):
    finished = make_run(tmp_path / "runs", "finished", fold=0, label="mask")
    killed = make_run(tmp_path / "runs", "killed", fold=0, label="mask")
    (killed / "best.pt").unlink()  # killed in epoch 0: a config.json and nothing else
    os.utime(finished, (1, 1))  # the finished run is the older one
    args = evaluate.build_parser().parse_args(["--runs", str(tmp_path / "runs"), "--dataset", "synthetic"])
    assert evaluate.select_checkpoints(args, ["mask"], [0]) == {("mask", 0): finished / "best.pt"}
    (finished / "best.pt").unlink()  # neither has a checkpoint: one line naming the newest run
    os.utime(finished, (1, 1))  # (the unlink touched the folder)
    with pytest.raises(FileNotFoundError, match=f"{killed} holds no best.pt or last.pt"):
        evaluate.select_checkpoints(args, ["mask"], [0])


# --- every run found, one table per dataset and setting (python evaluate.py --shots 5) -------------

def fabricate_run(root: Path, argv: list[str]) -> Path:
    """A run in the folder train.py's default --out names (under root), as train.py lays it out:
    its config.json and a best.pt of the untrained encoder, with the run's own arguments."""
    args = train.parse_args(argv + ["--workers", "0"])
    args.out = root / args.out
    vrp = model.build_vrp_sam(train.model_config(args), sam_checkpoint=args.sam_checkpoint,
                              backbone_weights=args.backbone_weights, seed=args.seed)
    model.save_checkpoint(args.out / "best.pt", vrp, epoch=0, best_miou=0.0, args=train.jsonable(args))
    cli.write_json(args.out / "config.json", train.jsonable(args))
    return args.out


def make_pascal_test_images(root: Path) -> Path:
    """VOC2012's layout with 6 test (val) images of each of fold 0's novel classes 1-5, one object
    of 2304 pixels each (above data.MIN_OBJECT_PIXELS): enough for 5-shot episodes."""
    voc = root / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(30):
        name, label = f"2008_{i:06d}", np.zeros((64, 64), np.uint8)
        label[8 + i % 8:56 + i % 8, 4:52] = i % 5 + 1
        Image.fromarray(label).save(voc / "SegmentationClassAug" / f"{name}.png")
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
        names.append(name)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(n + "\n" for n in names))
    return root


def test_every_run_found_is_scored_one_table_per_dataset_and_setting(tmp_path, capsys, monkeypatch):
    pascal_root = make_pascal_test_images(tmp_path / "data")
    tiny = ["--backbone", "tiny", "--sam", "tiny", "--backbone-weights", str(model.CHECKPOINT_DIR /
            "tiny_backbone_synthetic.pth"), "--image-size", "64", "--data-root", str(pascal_root)]
    runs = {"synthetic": fabricate_run(tmp_path, ["--dataset", "synthetic"]),  # the Quick start's
            "synthetic, --loss bce": fabricate_run(tmp_path, ["--dataset", "synthetic", "--loss", "bce"]),
            "pascal": fabricate_run(tmp_path, ["--dataset", "pascal", *tiny])}
    assert runs["synthetic"] == tmp_path / cli.MAIN_JOB_CHECKPOINT.parent
    assert runs["synthetic, --loss bce"].name == "synthetic-fold0-mask-tiny-loss-bce"
    common = ["--runs", str(tmp_path / "runs"), "--shots", "5", "--episodes", "4", "--workers", "0",
              "--cache-dir", str(tmp_path / "cache")]

    results = evaluate.main(common)  # no --dataset: every run
    printed = capsys.readouterr().out
    titles = [line.split(":")[0] for line in printed.splitlines() if line.startswith("VRP-SAM on ")]
    assert titles == ["VRP-SAM on pascal", "VRP-SAM on synthetic", "VRP-SAM on synthetic, --loss bce"]
    assert set(results) == set(runs)
    for name, run in runs.items():  # each table names its run, and scores it
        table = printed.split(f"VRP-SAM on {name}:")[1].split("\n\n")[0]
        assert f"  mask fold 0: {run / 'best.pt'}\n" in table + "\n"
        assert results[name]["mask/5"][0]["checkpoint"] == str(run / "best.pt")
        assert json.loads((run / "eval-mask-5shot-4ep-seed0.json").read_text())["episodes"] == 4
    assert "skipped" not in printed and "over the folds evaluated only" not in printed  # folds nobody asked for

    evaluate.main(common + ["--dataset", "synthetic"])  # --dataset narrows: its two settings
    titles = [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("VRP-SAM")]
    assert titles == ["VRP-SAM on synthetic", "VRP-SAM on synthetic, --loss bce"]
    evaluate.main(common + ["--dataset", "pascal", "--folds", "0,1"])  # one table: as before, asked folds named
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == f"no checkpoint under {tmp_path / 'runs'} for: mask fold 1 (skipped)"
    assert "mask fold 0:" not in printed and printed.rstrip().endswith("over the folds evaluated only")

    monkeypatch.setattr(data, "BASE_SPLIT_DATASETS", ("synthetic",))  # pascal stands in for a test-only dataset
    evaluate.main(common + ["--split", "base", "--shots", "1", "--episodes", "2"])  # Table 13 of every run that has a base set
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "--split base: pascal has no training images, so no base set (Table 13): skipped"
    assert [line.split(":")[0] for line in printed if line.startswith("VRP-SAM")] == [
        "VRP-SAM on synthetic", "VRP-SAM on synthetic, --loss bce"]
