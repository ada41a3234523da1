"""The distilled tiny SAM, the synthetic benchmark's MobileSAM (distill_tiny_sam.py): the tiny SAM's
decoder behind a smaller image encoder trained to reproduce the tiny SAM's embedding."""

import re

import numpy as np
import pytest
import torch

import distill_tiny_sam as distill
import pretrain_tiny_sam
from model import build_sam, sam_type_of_model


@pytest.fixture(scope="module")
def teacher():
    return build_sam("tiny", pretrain_tiny_sam.DEFAULT_CHECKPOINT)


@pytest.fixture(scope="module")
def shipped():
    return build_sam("tiny_distilled", distill.DEFAULT_CHECKPOINT)  # the strict loader of every SAM


def _part(sam, prefixes):
    return {k: v for k, v in sam.state_dict().items() if k.startswith(prefixes)}


def test_shipped_file_is_the_tiny_sams_decoder_bit_for_bit_behind_a_smaller_encoder(teacher, shipped):
    assert sam_type_of_model(shipped) == "tiny_distilled"
    assert distill.encoder_parameters(shipped) < distill.encoder_parameters(teacher)
    ours, theirs = _part(shipped, ("prompt_encoder.", "mask_decoder.")), _part(teacher, ("prompt_encoder.",
                                                                                        "mask_decoder."))
    assert ours.keys() == theirs.keys() and all(torch.equal(v, theirs[k]) for k, v in ours.items())
    state = torch.load(distill.DEFAULT_CHECKPOINT, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())


def test_shipped_file_segments_from_one_point_where_a_random_student_does_not(teacher, shipped):
    # seed 1: scenes neither the distillation nor its own final evaluation (seed 0) drew
    distilled = pretrain_tiny_sam.held_out_point_iou(shipped, num_scenes=16, seed=1)
    random = pretrain_tiny_sam.held_out_point_iou(distill.build_student(teacher).eval(), num_scenes=16, seed=1)
    assert distilled >= 0.7 and random < 0.3


def test_distillation_steps_lower_the_embedding_mse_and_leave_the_teacher_and_decoder_alone(teacher):
    student = distill.build_student(teacher, seed=0)
    frozen = {k: v.clone() for k, v in _part(student, ("prompt_encoder.", "mask_decoder.")).items()}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=3e-3)
    assert {n.split(".")[0] for n, p in student.named_parameters() if p.requires_grad} == {"image_encoder"}
    images = distill.sample_images(np.random.default_rng(0), 4)  # one fixed batch
    losses = [distill.distill_step(student, teacher, optimizer, images) for _ in range(12)]
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())  # the teacher gets no gradient
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())
    assert all(torch.equal(v, frozen[k]) for k, v in _part(student, ("prompt_encoder.", "mask_decoder.")).items())


def test_script_writes_a_strictly_loadable_fp16_checkpoint(tmp_path, capsys):
    out = tmp_path / "sam_tiny_distilled.pth"
    numbers = distill.main(["--steps", "2", "--batch-size", "2", "--eval-scenes", "2", "--out", str(out)])
    assert set(numbers) == {"relative_mse", "student_iou", "teacher_iou"}
    state = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert sam_type_of_model(build_sam("tiny_distilled", out)) == "tiny_distilled"
    printed = capsys.readouterr().out
    assert "teacher (tiny) 0.885M parameters, student (tiny_distilled) 0.654M" in printed
    assert "of the teacher embedding's variance" in printed and "point-prompt IoU on 2 fresh scenes: student" in printed


def test_bad_flags_and_outputs_are_one_line(tmp_path, capsys):
    student_file = tmp_path / "student.pth"
    student_file.write_bytes(distill.DEFAULT_CHECKPOINT.read_bytes())
    cases = {
        ("--out", str(tmp_path)): r"argument --out: cannot write .*; pass a file path in a writable folder",
        ("--out", str(pretrain_tiny_sam.DEFAULT_CHECKPOINT)): r"argument --out: .*sam_tiny_synthetic\.pth is the "
                                                              r"teacher \(--teacher\); pass another file",
        ("--steps", "0"): r"argument --steps: expected a positive integer, got 0",
        ("--teacher", str(tmp_path / "gone.pth")): r"argument --teacher: .*gone\.pth is not a file; .*"
                                                   r"pretrain_tiny_sam\.py",
        ("--teacher", str(student_file)): r"argument --teacher: .*student\.pth holds SAM tiny_distilled, not the "
                                          r"tiny SAM",
    }
    for argv, words in cases.items():
        with pytest.raises(SystemExit) as exit:
            distill.parse_args([*argv, "--out", str(tmp_path / "x.pth")] if argv[0] != "--out" else list(argv))
        assert exit.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("distill_tiny_sam.py: error: ")
        assert re.search(words, err), err
    assert not (tmp_path / "x.pth").exists()


def test_a_missing_file_names_the_script_that_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sam_tiny_distilled\.pth not found: make it with `python "
                                                r"distill_tiny_sam\.py`"):
        build_sam("tiny_distilled", tmp_path / "sam_tiny_distilled.pth")
