"""Bad values, broken files, stale caches and interrupted writes, one class at a time:

1. every bad value is refused at parse time, naming its flag, before anything is built or written;
2. exceptions from inside libraries (DataLoader workers, pycocotools, torch.save) become one line;
3. nothing silently wrong: a stale class index, other SAM weights, a resume with another protocol;
4. no result silently replaced or lost;
5. a first run lists every missing prerequisite at once; a plain 0/255 mask reads as an object mask.
"""

import argparse
import errno
import json
import os
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cli
import data
import evaluate
import model
import prompts
import train
from test_data import MIN_PIXELS, SIZE, make_pascal, save_voc_label

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TINY = ["--dataset", "synthetic", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
        "--val-episodes", "6", "--workers", "0"]


def tree(root) -> dict:
    return (
        {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}
        if root.exists()
        else {}
    )


def parse_error(main, argv, capsys) -> str:
    """Run a script's main on argv, expecting argparse's exit 2; return its one error line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny trained synthetic run (1 epoch, 2 steps), its cache and its config.json bytes."""
    root = tmp_path_factory.mktemp("hardening")
    out = root / "runs" / "synthetic-fold0-mask-tiny"
    train.main(TINY + ["--out", str(out), "--cache-dir", str(root / "cache")])
    return root, out


# --- 1. bad values: refused at parse time, naming the flag, nothing built or written --------------

@pytest.mark.parametrize("flag, value", [
    ("--batch-size", "0"), ("--epochs", "0"), ("--image-size", "0"), ("--steps-per-epoch", "0"),
    ("--val-episodes", "0"), ("--shots", "0"), ("--num-queries", "0"), ("--workers", "-1"),
    ("--lr", "0"), ("--lr", "nan"), ("--weight-decay", "-1"), ("--seed", "-3"), ("--fold", "9"), ("--epochs", "two"),
])
def test_train_refuses_bad_values_at_parse_time_naming_the_flag(flag, value, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "build_vrp_sam", lambda *a, **k: pytest.fail("built a model"))
    out = tmp_path / "run"
    line = parse_error(train.main, TINY + ["--out", str(out), flag, value], capsys)
    assert line.startswith("train.py: error: argument " + flag)
    assert not out.exists()  # no run folder, no config.json


@pytest.mark.parametrize("flag, value", [
    ("--shots", "a"), ("--shots", "0"), ("--folds", "a"), ("--folds", "9"), ("--folds", "0,4"), ("--episodes", "0"),
    ("--label", "polygon"), ("--batch-size", "0"), ("--seed", "-1"), ("--save-vis", "-2"), ("--checkpoint", "=x"),
    ("--checkpoint", "7=a.pt"), ("--workers", "x"),
])
def test_evaluate_refuses_bad_values_at_parse_time_naming_the_flag(flag, value, tmp_path, capsys):
    line = parse_error(evaluate.main, ["--runs", str(tmp_path), flag, value], capsys)
    assert line.startswith("evaluate.py: error: argument " + flag)
    assert tree(tmp_path) == {}


def test_a_bare_checkpoint_path_serves_every_fold_and_a_missing_one_is_one_line(tmp_path):
    assert evaluate.fold_checkpoint("runs/a/best.pt") == (None, Path("runs/a/best.pt"))  # pascal-part: all four folds
    with pytest.raises(SystemExit, match=r"^evaluate.py: error: --checkpoint x: x not found$"):
        evaluate.main(["--runs", str(tmp_path), "--checkpoint", "x"])
    assert tree(tmp_path) == {}


@pytest.mark.parametrize(
    "argv", [["--demo", "--seed", "-1"], ["--demo", "--class-id", "0"], ["--demo", "--class-id", "255"]]
)
def test_prompts_cli_refuses_bad_values_at_parse_time(argv, tmp_path, capsys):
    line = parse_error(prompts.main, argv + ["--out", str(tmp_path / "o.png")], capsys)
    assert line.startswith("prompts.py: error: argument " + argv[1])
    assert tree(tmp_path) == {}


def test_list_types_parse_and_explain():
    assert cli.int_list(range(4))("2,0,2") == [2, 0]
    assert cli.choice_list(("a", "b"))("all") == ["a", "b"]
    with pytest.raises(argparse.ArgumentTypeError, match="9 is not one of 0, 1, 2, 3"):
        cli.int_list(range(4))("1,9")
    assert (
        train.parse_args(TINY).steps_per_epoch == 2
        and train.parse_args(["--dataset", "synthetic"]).steps_per_epoch is None
    )


@pytest.mark.parametrize("parser", [train.build_parser, evaluate.build_parser], ids=["train", "evaluate"])
def test_help_gives_every_flag_a_line_and_its_real_default(parser):
    parser = parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"
    text = parser.format_help()
    assert "default: None" not in text
    if parser.prog == "train.py" or "--epochs" in text:
        flat = " ".join(text.split())
        assert "synthetic 8" in flat and "pascal 100" in flat and "synthetic 128" in flat  # the per-dataset defaults


# --- 2. exceptions from inside libraries: one line ---------------------------------------------

def test_a_dataloader_worker_error_is_reported_as_its_own_message(tmp_path, monkeypatch):
    message = f"image {tmp_path / 'x.jpg'} could not be read (image file is truncated); re-download or re-extract it"

    def broken(self, image_id):
        raise OSError(message)

    monkeypatch.setattr(data.SyntheticImages, "load", broken)  # forked workers inherit it
    with pytest.raises(SystemExit) as exit_info:
        train.main(TINY + ["--workers", "1", "--out", str(tmp_path / "run"), "--no-cache"])
    assert str(exit_info.value) == f"train.py: error: {message}"


def test_a_truncated_jpeg_read_by_a_worker_is_one_line_naming_the_file(tmp_path):
    make_pascal(tmp_path / "voc")
    for jpeg in (tmp_path / "voc" / "VOC2012" / "JPEGImages").iterdir():
        jpeg.write_bytes(jpeg.read_bytes()[:200])
    dataset = data.build_dataset("pascal", split="test", fold=0, data_root=tmp_path / "voc", image_size=SIZE,
                                 min_pixels=MIN_PIXELS, num_episodes=4, cache_dir=tmp_path / "cache")
    loader = torch.utils.data.DataLoader(dataset, num_workers=1, collate_fn=data.collate_episodes)
    with pytest.raises(OSError) as error_info:
        next(iter(loader))
    line = cli.error_message(error_info.value)
    assert "\n" not in line and "Traceback" not in line and "worker" not in line
    assert line.startswith("image ") and ".jpg could not be read" in line


@pytest.mark.parametrize("content, words", [
    ([], "holds a JSON list"),
    ({"images": [], "annotations": []}, "no 'categories' list"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[0, 0, 3, 0, 3, 3]]}],
      "categories": [{"id": 2, "name": "bicycle"}]}, "category id 1"),
    ({"images": [{"id": 1}], "annotations": [{"id": 1, "category_id": 1}], "categories": [{"id": 1, "name": "person"}]},
     "lacks a field"),
])
def test_malformed_coco_json_is_one_value_error_naming_the_file(content, words, tmp_path):
    (tmp_path / "train2014").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2014.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=words) as error_info:
        data.build_dataset("coco", split="train", fold=0, data_root=tmp_path, cache_dir=tmp_path / "cache")
    assert "instances_train2014.json" in str(error_info.value)


def test_a_cache_file_of_another_shape_is_a_miss_and_is_recomputed(tmp_path):
    sam = model.build_sam("tiny")
    cache = model.EmbeddingCache(tmp_path, sam, 128)
    images = torch.randn(2, 3, 128, 128)
    a, b = cache.key("a", images[0]), cache.key("b", images[1])
    cli.write_atomic(
        cache.path(b), partial(torch.save, torch.zeros(256, 8, 8, dtype=torch.float16)), durable=True
    )  # another SAM grid
    cli.write_atomic(
        cache.path(a), partial(torch.save, torch.zeros(256, 16, 16)), durable=True
    )  # fp32: not what put() writes
    embeddings = cache.embed(sam, images, ["a", "b"])
    assert embeddings.shape == (2, 256, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(embeddings, model.sam_image_embeddings(sam, images).half().float())
    assert cache.get(b).shape == (256, 16, 16)  # rewritten


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError(
            "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed"
        ),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
)
def test_a_full_disk_while_saving_a_checkpoint_is_one_line_naming_the_path(failure, tmp_path, monkeypatch):
    def full(obj, f):
        f.write(b"partial")
        raise failure

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(OSError) as error_info:
        cli.write_atomic(tmp_path / "last.pt", partial(torch.save, {"a": 1}), durable=True)
    assert (
        str(error_info.value)
        == f"could not write {tmp_path / 'last.pt'}: no space left on device; free some space or write elsewhere"
    )
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_checkpoints_caches_and_json_share_one_file_mode(tmp_path):
    old = os.umask(0o077)
    try:
        cli.write_atomic(tmp_path / "a.pt", partial(torch.save, {"a": 1}), durable=True)
        cli.write_atomic(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert {(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {0o644}


# --- 3. nothing silently wrong --------------------------------------------------------------------

def test_a_label_replaced_after_indexing_rebuilds_the_index(tmp_path):
    make_pascal(tmp_path / "voc")
    build = lambda: data.build_dataset(
        "pascal",
        split="test",
        fold=0,
        data_root=tmp_path / "voc",
        image_size=SIZE,  # noqa: E731
        min_pixels=MIN_PIXELS,
        num_episodes=8,
        cache_dir=tmp_path / "cache",
    )
    before = build()
    label_path = tmp_path / "voc" / "VOC2012" / "SegmentationClassAug" / "2008_val000.png"
    label = np.array(Image.open(label_path))
    label[label == 1] = 7  # class 1 (test class of fold 0) becomes class 7 in this image
    save_voc_label(label_path, label)
    after = build()
    assert "voc/2008_val000" in before.images_of[1] and "voc/2008_val000" not in after.images_of[1]


def test_a_label_edited_without_changing_size_or_time_is_caught_when_read(tmp_path):
    make_pascal(tmp_path / "voc")
    dataset = data.build_dataset("pascal", split="test", fold=0, data_root=tmp_path / "voc", image_size=SIZE,
                                 min_pixels=MIN_PIXELS, num_episodes=8, cache_dir=tmp_path / "cache")
    index, episode = next((i, e) for i, e in enumerate(dataset.episodes))
    label_path = tmp_path / "voc" / "VOC2012" / "SegmentationClassAug" / f"{episode.target_id.split('/')[1]}.png"
    stat = label_path.stat()
    image = Image.open(label_path)
    label = np.array(image)
    label[label == episode.class_id] = 0
    edited = Image.fromarray(label)
    edited.putpalette(image.getpalette())
    edited.save(label_path)
    os.utime(label_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ValueError, match="label changed after the index was built"):
        dataset[index]


def test_a_runs_sam_weights_are_the_flag_else_the_runs_file_else_the_default():
    # One rule for evaluate.py, segment.py and video.py (model.run_sam_checkpoint).
    state = {"config": {"sam": "tiny"}, "args": {}}  # a run saved before args held sam_checkpoint
    assert (
        model.run_sam_checkpoint(state)
        == model.default_sam_checkpoint("tiny")
        == Path(model.__file__).parent / "checkpoints" / "sam_tiny_synthetic.pth"
    )
    state["args"]["sam_checkpoint"] = "elsewhere/sam.pth"
    assert model.run_sam_checkpoint(state) == Path("elsewhere/sam.pth")
    assert model.run_sam_checkpoint(state, Path("mine.pth")) == Path("mine.pth")
    assert model.default_sam_checkpoint("vit_b").name == "sam_vit_b_01ec64.pth"


def test_the_embedding_cache_is_keyed_by_the_sam_weights(tmp_path):
    shipped = model.build_sam("tiny", model.default_sam_checkpoint("tiny"))
    random_sam = model.build_sam("tiny")
    a = model.EmbeddingCache(tmp_path, shipped, 128)
    a.put("img", torch.ones(256, 16, 16))
    assert (
        model.EmbeddingCache(tmp_path, model.build_sam("tiny", model.default_sam_checkpoint("tiny")), 128).get("img")
        is not None
    )
    b = model.EmbeddingCache(tmp_path, random_sam, 128)
    assert b.directory != a.directory and b.get("img") is None
    with pytest.raises(ValueError, match="another SAM"):
        b.embed(shipped, torch.zeros(1, 3, 128, 128), ["img"])


def test_resume_refuses_another_validation_protocol_and_keeps_config_json(run, capsys):
    root, out = run
    config = (out / "config.json").read_bytes()
    common = TINY + ["--out", str(out), "--cache-dir", str(root / "cache"), "--resume"]
    with pytest.raises(SystemExit, match="--val-episodes: run 6, now 7"):
        train.main([a if a != "6" else "7" for a in common])
    assert (out / "config.json").read_bytes() == config
    train.main(common)  # a resume with the run's own settings (nothing left to do) still keeps it
    assert (out / "config.json").read_bytes() == config


def test_resume_refuses_other_sam_weights_under_any_name(run, tmp_path):
    root, out = run
    other = tmp_path / "sam_tiny_synthetic.pth"  # same type, same file name, other weights
    torch.save(model.build_sam("tiny").state_dict(), other)
    before = tree(out)
    with pytest.raises(SystemExit, match="other SAM weights"):
        train.main(
            TINY + ["--out", str(out), "--cache-dir", str(root / "cache"), "--resume", "--sam-checkpoint", str(other)]
        )
    assert tree(out) == before


# --- 4. results never silently replaced or lost ---------------------------------------------------

def test_results_of_other_protocols_get_other_names():
    names = {evaluate.result_name(label="mask", shots=1, episodes=1000, seed=0)}
    for change in (dict(episodes=4), dict(seed=1), dict(shots=5), dict(label="point"), dict(untrained=True),
                   dict(original_size=True), dict(sam="sam_vit_b_01ec64")):
        names.add(evaluate.result_name(**{**dict(label="mask", shots=1, episodes=1000, seed=0), **change}))
    assert len(names) == 8


def test_a_short_evaluation_does_not_replace_a_longer_one(run):
    root, out = run
    common = ["--runs", str(root / "runs"), "--workers", "0", "--cache-dir", str(root / "cache")]
    evaluate.main(common + ["--episodes", "6"])
    long_result = (out / "eval-mask-1shot-6ep-seed0.json").read_bytes()
    evaluate.main(common + ["--episodes", "2"])
    assert (out / "eval-mask-1shot-6ep-seed0.json").read_bytes() == long_result
    assert json.loads((out / "eval-mask-1shot-2ep-seed0.json").read_text())["episodes"] == 2


def test_a_result_on_other_episodes_is_kept_aside_not_replaced(run, capsys):
    root, out = run
    common = ["--runs", str(root / "runs"), "--workers", "0", "--cache-dir", str(root / "cache"), "--episodes", "3"]
    evaluate.main(common)
    path = out / "eval-mask-1shot-3ep-seed0.json"
    earlier = json.loads(path.read_text())
    path.write_text(json.dumps({**earlier, "episodes_hash": "0123456789abcdef", "miou": 12.5}))  # data changed since
    evaluate.main(common)
    kept = out / "eval-mask-1shot-3ep-seed0.episodes-0123456789abcdef.json"
    assert json.loads(kept.read_text())["miou"] == 12.5
    assert json.loads(path.read_text())["episodes_hash"] == earlier["episodes_hash"]
    assert kept.name in capsys.readouterr().out
    evaluate.main(common)  # the same episodes again: replaced in place, nothing more set aside
    assert {p.name for p in out.glob("eval-mask-1shot-3ep-seed0*")} == {path.name, kept.name}


def test_an_unwritable_result_folder_still_prints_the_table_then_fails(run, monkeypatch, capsys):
    root, out = run

    def read_only(path, obj):  # as root, chmod cannot make a folder read-only: fail like a read-only one
        raise cli.write_error(path, PermissionError(errno.EACCES, "Permission denied"))

    monkeypatch.setattr(cli, "write_json", read_only)
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(
            ["--runs", str(root / "runs"), "--workers", "0", "--cache-dir", str(root / "cache"), "--episodes", "3"]
        )
    assert "could not write" in str(exit_info.value) and str(out) in str(exit_info.value)
    assert "\n" not in str(exit_info.value)
    table = capsys.readouterr().out
    assert "fold0" in table and "mask" in table  # the results were shown before the write failed


# --- 5. a first run, and the masks people have -----------------------------------------------------

def test_a_first_run_lists_every_missing_prerequisite_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dataset", "pascal", "--fold", "1", "--data-root", str(tmp_path / "data"),
                    "--sam-checkpoint", str(tmp_path / "sam_vit_h_4b8939.pth"), "--out", str(out)])
    message = str(exit_info.value)
    for expected in ("resnet50-0676ba61.pth", "sam_vit_h_4b8939.pth", "dl.fbaipublicfiles.com/segment_anything",
                     "VOC2012/JPEGImages", "VOC2012/SegmentationClassAug", "val.txt"):
        assert expected in message
    assert "5 prerequisite(s) missing" in message and not out.exists()


def test_evaluate_checks_the_same_prerequisites_before_scoring(run, tmp_path):
    root, out = run
    with pytest.raises(SystemExit, match="(?s)1 prerequisite.*missing.*sam_tiny.pth.*pretrain_tiny_sam.py"):
        evaluate.main(
            ["--runs", str(root / "runs"), "--sam-checkpoint", str(tmp_path / "sam_tiny.pth"), "--workers", "0"]
        )


def test_a_plain_0_255_mask_reads_255_as_the_object(tmp_path, capsys):
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20, 5:30] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")  # greyscale, as any image editor saves a binary mask
    prompts.main(["--mask", str(tmp_path / "m.png"), "--kind", "mask", "--out", str(tmp_path / "o.png")])
    printed = capsys.readouterr().out
    assert "read as a binary mask (0 background, 255 object)" in printed and "object 250 px" in printed

    palette = Image.fromarray(mask)  # a VOC palette label whose only object pixels are boundary: still 255 = ignore
    palette.putpalette([0] * 765 + [224, 224, 192])
    palette.save(tmp_path / "p.png")
    with pytest.raises(SystemExit):
        prompts.main(["--mask", str(tmp_path / "p.png"), "--out", str(tmp_path / "o.png")])
    assert "no object pixel" in capsys.readouterr().err
