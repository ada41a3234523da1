"""train.py's default run folder (cli.run_folder): runs of other settings never share one, so every
`python train.py ...` in README.md and docs/ runs as written after the others (a folder that already
holds a run is refused), and the runs of the defaults keep the names the pages quote."""

from __future__ import annotations

from pathlib import Path

import pytest

import cli
import model
import train
from test_docs import COMMANDS, parse_command

TRAIN_COMMANDS = [command for command in COMMANDS if command.script == "train.py"]
# What does not change the run: where its files are written or read, on what, and whether it resumes.
NOT_THE_RUN = {"out", "resume", "device", "workers", "cache_dir", "no_cache", "data_root"}
FILES = {"sam_checkpoint", "backbone_weights"}  # the same file, however the command writes it


def the_run(args) -> dict:
    """A resolved train.py namespace's settings: two commands with equal ones train the same run."""
    settings = {key: value for key, value in vars(args).items() if key not in NOT_THE_RUN}
    for key in FILES:
        if settings[key] not in (None, "imagenet", "random"):
            settings[key] = Path(settings[key]).resolve()
    return settings


def test_no_two_documented_training_commands_share_a_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # one runs/ for all of them, as after following every page in turn
    assert len(TRAIN_COMMANDS) > 30
    folders: dict[Path, tuple] = {}
    for command in TRAIN_COMMANDS:
        args = train.resolve_args(parse_command(command.argv))
        if args.out.is_absolute():  # a page's shared filesystem (/shared/runs/...): kept inside tmp_path
            args.out = tmp_path / "absolute" / args.out.relative_to(args.out.anchor)
        folder, run = args.out.resolve(), the_run(args)
        assert folder.is_relative_to(tmp_path.resolve())
        if folder in folders:  # only the same run again (the same command on two pages, or --resume)
            other, other_run = folders[folder]
            differ = sorted(key for key in run if run[key] != other_run.get(key))
            assert not differ, (f"{command.page}:{command.line} `{command.text}` and {other.page}:{other.line} "
                                f"`{other.text}` are other runs (--{', --'.join(differ)}) in one folder, {args.out}")
        else:
            assert args.resume is False, f"{command.page}:{command.line}: --resume of a run no page started"
            assert train.load_resume_state(args, train.model_config(args)) is None  # not refused: a new folder
            folder.mkdir(parents=True)
            (folder / "last.pt").write_bytes(b"")  # now it holds a run: train.py refuses to start another here
            folders[folder] = (command, run)


@pytest.mark.parametrize("argv, folder", [
    (["--dataset", "synthetic"], cli.MAIN_JOB_CHECKPOINT.parent),  # the Quick start's, quoted everywhere
    (["--dataset", "synthetic", "--fold", "0", "--seed", "0", "--epochs", "8"], cli.MAIN_JOB_CHECKPOINT.parent),
    (["--dataset", "synthetic", "--backbone-weights", str(model.CHECKPOINT_DIR / "tiny_backbone_synthetic.pth")],
     cli.MAIN_JOB_CHECKPOINT.parent),  # its own default file, named
    (["--dataset", "pascal", "--fold", "0"], Path("runs/pascal-fold0-mask-resnet50")),
    (["--dataset", "pascal", "--fold", "1", "--label", "point"], Path("runs/pascal-fold1-point-resnet50")),
    (["--dataset", "pascal", "--loss", "bce"], Path("runs/pascal-fold0-mask-resnet50-loss-bce")),
    (["--dataset", "pascal", "--query-init", "bp", "--num-queries", "10"],
     Path("runs/pascal-fold0-mask-resnet50-q10-init-bp")),  # in cli.RUN_SETTINGS' order
    (["--dataset", "coco", "--backbone", "vgg16"], Path("runs/coco-fold0-mask-vgg16")),  # its ImageNet weights
    (["--dataset", "pascal", "--sam", "vit_b"], Path("runs/pascal-fold0-mask-resnet50-sam-vit_b")),
    (["--dataset", "pascal", "--sam", "vit_b", "--sam-checkpoint", "elsewhere/sam_vit_b_01ec64.pth"],
     Path("runs/pascal-fold0-mask-resnet50-sam-vit_b-samfile-sam_vit_b_01ec64")),
    (["--dataset", "synthetic", "--backbone-weights", "checkpoints/tiny_backbone_pixel.pth", "--lr", "1e-3"],
     Path("runs/synthetic-fold0-mask-tiny-weights-tiny_backbone_pixel-lr0.001")),
    (["--dataset", "pascal", "--seed", "2", "--out", "mine"], Path("mine")),  # --out is the user's
])
def test_the_default_folder_names_what_differs_from_the_datasets_defaults(argv, folder, monkeypatch):
    monkeypatch.chdir(model.CHECKPOINT_DIR.parent)  # where the pages' relative paths point
    assert train.parse_args(argv).out == folder


def test_every_sam_has_a_folder_of_its_own_without_further_code():
    # a SAM type added to model.SAM_TYPES needs no entry anywhere: its tag is made from its name
    folders = {train.parse_args(["--dataset", "pascal", "--sam", sam]).out for sam in model.SAM_TYPES}
    assert len(folders) == len(model.SAM_TYPES)
    assert cli.run_folder("pascal", 2, "box", "resnet50", {"sam": "sam2.1_hiera_l", "seed": 1}) == Path(
        "runs/pascal-fold2-box-resnet50-sam-sam2.1_hiera_l-seed1")
    with pytest.raises(ValueError, match="no_such_flag not in cli.RUN_SETTINGS"):
        cli.run_folder("pascal", 0, "mask", "resnet50", {"no_such_flag": 1})
