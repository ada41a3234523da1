"""video.py's results folder across reruns, failures and kills, and the sequences it cannot score.

A rerun writes beside --out and takes its place only when it has finished, so whatever happens to
it (a bad frame, Ctrl-C, SIGKILL) the folder holds the earlier result whole, and the next run
tidies up and succeeds; a folder holding anything else is refused and left as it was.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import torch
import pytest
from PIL import Image

import conftest
import video
from test_video import FRAME_H, FRAME_W, _checkpoint, _two_objects, _write_davis


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(out: Path) -> list[str]:
    """What a run left beside `out`: its partial folder or the earlier result it set aside."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.fixture
def davis(tmp_path):
    """(data root, argv for video.main without --out)."""
    root = _write_davis(tmp_path / "data", {"bear": _two_objects(), "car-turn": _two_objects(4)})
    return root, ["--dataset", "davis2017", "--data-root", str(root), "--checkpoint", str(_checkpoint(tmp_path)),
                  "--no-cache", "--label", "point"]


def error_line(argv) -> str:
    return conftest.error_line(video.main, argv)


# --- sequences without an object to follow -----------------------------------------------------------

def test_a_sequence_without_objects_in_its_first_frame_is_named_and_skipped(tmp_path, capsys):
    entering = _two_objects()
    entering[0][entering[0] != 255] = 0  # frame 0: void only; the objects enter in frame 1
    root = _write_davis(tmp_path / "data", {"bear": _two_objects(), "entering": entering})
    out = tmp_path / "out"
    result = video.main(["--dataset", "davis2017", "--data-root", str(root), "--checkpoint", str(_checkpoint(tmp_path)),
                         "--no-cache", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "entering: skipped: the annotation of its first frame (00000) holds no object" in printed
    assert "2 sequences (1 skipped, no object in the first frame: entering), 2 objects" in printed
    assert result["skipped"] == ["entering"] and set(result["per_object"]) == {"bear_1", "bear_2"}
    assert json.loads((out / "results.json").read_text())["skipped"] == ["entering"]
    # its PNGs are written all background, so the toolkit finds every sequence of the list
    pngs = sorted((out / "entering").glob("*.png"))
    assert len(pngs) == 5 and all(not np.array(Image.open(p)).any() for p in pngs)


def test_no_sequence_with_an_object_is_an_error_before_anything_is_written(tmp_path):
    empty = np.zeros((3, FRAME_H, FRAME_W), np.uint8)
    root = _write_davis(tmp_path / "data", {"blank": empty, "void": empty + 255})
    out = tmp_path / "out"
    message = error_line([
        "--dataset", "davis2017", "--data-root", str(root), "--checkpoint", str(_checkpoint(tmp_path)),
        "--no-cache", "--out", str(out),
    ])
    assert "every sequence (blank, void) holds no object" in message
    assert not out.exists() and leftovers(out) == []


@pytest.mark.parametrize("sequences, expected", [(",", "--sequences ',' names no sequence"),
                                                 ("ghost", "sequence 'ghost' is not in"),
                                                 ("bear,ghost", "sequence 'ghost' is not in")])
def test_sequences_that_name_none_that_exist_are_one_line(davis, tmp_path, sequences, expected):
    _, argv = davis
    out = tmp_path / "out"
    assert expected in error_line(argv + ["--out", str(out), "--sequences", sequences])
    assert not out.exists()


def test_an_empty_split_list_is_one_line(davis, tmp_path):
    root, argv = davis
    (root / "DAVIS/ImageSets/2017/val.txt").write_text("\n")
    assert "val.txt lists no sequence" in error_line(argv + ["--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


# --- reruns into a finished folder -----------------------------------------------------------------

def test_a_rerun_over_good_input_replaces_the_result_whole(davis, tmp_path):
    _, argv = davis
    out = tmp_path / "out"
    video.main(argv + ["--out", str(out)])
    (out / "global_results-val.csv").write_text("stale")  # the toolkit's scores of the PNGs about to go
    video.main(argv + ["--out", str(out), "--sequences", "car-turn"])
    assert sorted(p.name for p in out.iterdir()) == ["car-turn", "results.json"]
    assert json.loads((out / "results.json").read_text())["sequence_names"] == ["car-turn"]
    assert leftovers(out) == []


def test_a_rerun_over_bad_input_leaves_the_earlier_result_whole(davis, tmp_path):
    root, argv = davis
    out = tmp_path / "out"
    video.main(argv + ["--out", str(out)])
    before = tree(out)
    # car-turn's frame 2 gets an annotation of another size: found only after bear has been segmented
    video.write_palette_png(
        root / "DAVIS/Annotations/480p/car-turn/00002.png", np.zeros((FRAME_H + 2, FRAME_W), np.uint8)
    )
    assert "00002.jpg is 90x60 but its annotation" in error_line(argv + ["--out", str(out)])
    assert tree(out) == before and leftovers(out) == []


def test_an_interrupted_run_leaves_the_earlier_result_and_the_next_run_succeeds(davis, tmp_path, monkeypatch):
    _, argv = davis
    out = tmp_path / "out"
    video.main(argv + ["--out", str(out)])
    before = tree(out)
    written, real_write = [], video.write_palette_png

    def write_then_interrupt(path, ids):
        real_write(path, ids)
        written.append(path)
        if len(written) == 6:  # in the second sequence
            raise KeyboardInterrupt

    monkeypatch.setattr(video, "write_palette_png", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        video.main(argv + ["--out", str(out), "--label", "box"])
    assert tree(out) == before and leftovers(out) == []
    monkeypatch.undo()
    result = video.main(argv + ["--out", str(out), "--label", "box"])
    assert json.loads((out / "results.json").read_text())["label"] == "box" == result["label"]


def _killed_run(argv: list[str], kill_after: str) -> None:
    """A forked video.main that SIGKILLs itself after the 6th PNG ("png") or right after it has set
    the earlier result aside ("set aside"): as a user's kill -9 or the machine's OOM killer would."""
    torch.set_num_threads(1)  # a forked child must not wait on the parent's OpenMP threads: it would hang
    if kill_after == "png":
        real_write, count = video.write_palette_png, []

        def write(path, ids):
            real_write(path, ids)
            count.append(path)
            if len(count) == 6:
                os.kill(os.getpid(), signal.SIGKILL)
        video.write_palette_png = write
    else:
        real_rename = os.rename

        def rename(source, destination):
            real_rename(source, destination)
            if ".replaced-" in str(destination):
                os.kill(os.getpid(), signal.SIGKILL)
        os.rename = rename
    video.main(argv)


def _join_or_kill(child, seconds: float = 60) -> None:
    """Wait for a forked child; one still alive after `seconds` is killed, so that a hang fails the
    test instead of hanging the suite (multiprocessing joins its children when the process exits)."""
    child.join(seconds)
    if child.is_alive():
        child.kill()
        child.join()


@pytest.mark.parametrize("kill_after", ["png", "set aside"])
def test_a_killed_run_is_tidied_up_by_the_next(davis, tmp_path, kill_after):
    _, argv = davis
    out = tmp_path / "out"
    video.main(argv + ["--out", str(out)])
    before = tree(out)
    child = multiprocessing.get_context("fork").Process(target=_killed_run,
                                                        args=(argv + ["--out", str(out), "--label", "box"], kill_after))
    child.start()
    _join_or_kill(child)
    assert child.exitcode == -signal.SIGKILL
    if kill_after == "png":
        assert tree(out) == before and leftovers(out) == [f".out.partial-{child.pid}"]
    else:  # between its two renames: the earlier result aside, the new one complete but not in place
        assert not out.exists() and leftovers(out) == [f".out.partial-{child.pid}", f".out.replaced-{child.pid}"]
    result = video.main(argv + ["--out", str(out), "--label", "box"])
    assert result["label"] == "box" == json.loads((out / "results.json").read_text())["label"]
    assert leftovers(out) == [] and not (out / video.PARTIAL_MARKER).exists()


def test_a_run_killed_while_swapping_gets_the_earlier_result_back_even_if_the_rerun_fails(davis, tmp_path):
    root, argv = davis
    out = tmp_path / "out"
    video.main(argv + ["--out", str(out)])
    before = tree(out)
    child = multiprocessing.get_context("fork").Process(
        target=_killed_run, args=(argv + ["--out", str(out)], "set aside")
    )
    child.start()
    _join_or_kill(child)
    video.write_palette_png(
        root / "DAVIS/Annotations/480p/car-turn/00002.png", np.zeros((FRAME_H + 2, FRAME_W), np.uint8)
    )
    error_line(argv + ["--out", str(out)])
    assert tree(out) == before and leftovers(out) == []


# --- folders that are not video.py's ---------------------------------------------------------------

def test_a_results_folder_holding_the_users_files_is_refused_and_kept(davis, tmp_path):
    _, argv = davis
    out = tmp_path / "out"
    video.main(argv + ["--out", str(out)])
    for extra in (out / "notes.txt", out / "bear" / "my-correction.png.bak"):
        extra.write_text("keep me")
        before = tree(out)
        assert f"not results of video.py ({extra})" in error_line(argv + ["--out", str(out)])
        assert tree(out) == before and leftovers(out) == []
        extra.unlink()


def test_folders_beside_out_that_are_not_a_finished_run_are_left_alone(davis, tmp_path):
    _, argv = davis
    out = tmp_path / "out"
    running = tmp_path / f".out.partial-{os.getppid()}"  # a run still going (its process is alive)
    running.mkdir()
    (running / video.PARTIAL_MARKER).write_text(str(os.getppid()))
    unmarked = tmp_path / ".out.partial-999999999"  # no marker: not made by video.py
    unmarked.mkdir()
    (unmarked / "mine.txt").write_text("keep me")
    video.main(argv + ["--out", str(out)])
    assert leftovers(out) == sorted([running.name, unmarked.name]) and (unmarked / "mine.txt").read_text() == "keep me"
