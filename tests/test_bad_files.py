"""Wrong files and wrong values, said in one line by every script:

1. a file given for a checkpoint (or SAM / backbone weights) that is not one: a text file, random
   bytes, a cut-short torch file, a pickle of objects weights_only refuses, an empty file, a folder.
   The line says what the file is and what to pass instead; nothing in it is unpickled, and
   torch's advice to load it with weights_only=False is never passed on;
2. a bad flag value: argparse's error in one line that names the flag and points at --help,
   without the usage block, exit status 2."""

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import app
import cli
import evaluate
import model
import prepare
import pretrain_tiny_backbone
import pretrain_tiny_sam
import prompts
import segment
import train
import video


class RunsCode:
    """Unpickling this would create a folder: a stand-in for a file that runs code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


# kind -> what the one line says the file is
KINDS = {"text": "is a text file", "random": "is a file of unknown kind", "truncated": "is cut short or damaged",
         "refused": "holding other objects than tensors", "empty": "it is empty", "folder": "is a folder"}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_files")
    files = {kind: root / f"{kind}.pt" for kind in KINDS}
    files["text"].write_text("# VRP-SAM, reproduced\n\nNot a checkpoint.\n")
    files["random"].write_bytes(bytes([7]) + np.random.default_rng(0).bytes(4095))  # 7: no magic number starts so
    torch.save({"model": {"w": torch.zeros(64, 64)}}, root / "whole.pt")
    files["truncated"].write_bytes((root / "whole.pt").read_bytes()[:1000])  # a copy or download cut short
    torch.save({"model": RunsCode(root / "code_ran")}, files["refused"])
    files["empty"].write_bytes(b"")
    files["folder"].mkdir()
    return files


def assert_one_safe_line(text: str, path: Path, kind: str) -> None:
    assert "\n" not in text.strip(), text
    assert str(path) in text and KINDS[kind] in text, text
    assert "weights_only" not in text and "Traceback" not in text, text


@pytest.mark.parametrize("kind", KINDS)
def test_a_file_that_is_no_checkpoint_is_one_line_saying_what_it_is(kind, bad_files):
    with pytest.raises(ValueError) as error:
        model.load_checkpoint(bad_files[kind])
    assert_one_safe_line(str(error.value), bad_files[kind], kind)
    assert "not a VRP-SAM checkpoint written by train.py" in str(error.value) or "could not be read as" in str(
        error.value)
    assert error.value.__cause__ is None and error.value.__context__ is None  # torch's text is not even chained
    assert not (bad_files["refused"].parent / "code_ran").exists()  # nothing in the file was run
    if kind == "refused":
        assert "mkdir" in str(error.value)  # the refused global is named


def test_sam_and_backbone_files_name_their_own_flag(bad_files):
    with pytest.raises(ValueError) as error:
        model.build_sam("tiny", bad_files["text"])
    assert_one_safe_line(str(error.value), bad_files["text"], "text")
    assert "not a SAM tiny checkpoint" in str(error.value) and "--sam-checkpoint" in str(error.value)
    for name in ("tiny", "resnet50"):
        with pytest.raises(ValueError) as error:
            model.build_backbone(name, weights=bad_files["refused"])
        assert_one_safe_line(str(error.value), bad_files["refused"], "refused")
        assert "backbone weights (a state_dict file)" in str(error.value) and "--backbone-weights" in str(error.value)


SCRIPTS = {"segment.py": (segment.main, ["--demo"]), "evaluate.py": (evaluate.main, []),
           "app.py": (app.main, ["--port", "0"]), "video.py": (video.main, [])}


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_script_says_a_bad_checkpoint_in_one_line(script, kind, bad_files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing written here either
    main, argv = SCRIPTS[script]
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--checkpoint", str(bad_files[kind])])
    message = exit_info.value.code  # sys.exit(message): exit status 1, the message on stderr
    assert isinstance(message, str) and message.startswith(f"{script}: error: "), message
    assert_one_safe_line(message, bad_files[kind], kind)
    captured = capsys.readouterr()
    assert "weights_only" not in captured.out + captured.err
    assert list(tmp_path.iterdir()) == []


# --- 2. argparse errors: one line --------------------------------------------------------------

BAD_VALUES = {
    "train.py": (train.main, ["--batch-size", "0"], "argument --batch-size: expected a positive integer, got 0"),
    "evaluate.py": (evaluate.main, ["--shots", "a"], "argument --shots: "),
    "segment.py": (segment.main, ["--batch-size", "-2"], "argument --batch-size: "),
    "video.py": (video.main, ["--videos", "0"], "argument --videos: expected a positive integer, got 0"),
    "app.py": (app.main, ["--port", "70000"], "argument --port: expected an integer from 0 to 65535, got 70000"),
    "prompts.py": (prompts.main, ["--demo", "--seed", "x"], "argument --seed: "),
    "prepare.py pascal": (prepare.main, ["pascal", "--voc"], "argument --voc: expected one argument"),
    "pretrain_tiny_backbone.py": (pretrain_tiny_backbone.main, ["--steps", "0"], "argument --steps: "),
    "pretrain_tiny_sam.py": (pretrain_tiny_sam.main, ["--lr", "nan"], "argument --lr: "),
}


@pytest.mark.parametrize("prog", BAD_VALUES)
def test_a_bad_value_is_one_line_naming_the_flag_and_pointing_at_help(prog, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main, argv, says = BAD_VALUES[prog]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{prog}: error: {says}") and captured.err.endswith(f" (see {prog} --help)\n")
    assert captured.err.count("\n") == 1 and "usage:" not in captured.err
    assert list(tmp_path.iterdir()) == []


def test_a_multi_line_message_becomes_one_line(capsys):
    def two_lines(text: str) -> str:
        raise argparse.ArgumentTypeError("first\nsecond")

    parser = cli.ArgumentParser(prog="x.py")
    parser.add_argument("--n", type=two_lines)
    with pytest.raises(SystemExit):
        parser.parse_args(["--n", "1"])
    assert capsys.readouterr().err == "x.py: error: argument --n: first second (see x.py --help)\n"
