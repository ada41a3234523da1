"""segment.py: segmenting one's own images from annotated references (paper Figs. 1 and 5).

A tiny VRP-SAM (tiny backbone, the shipped tiny SAM, an encoder from a fixed seed) saved as a
train.py-style checkpoint; references and targets are synthetic scenes written as real files.
"""

import re
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import data
import evaluate
import model
import segment
from synthetic import synthetic_scene

S = 96  # network size of the test checkpoint; the scenes are 128 px, so "original size" differs from it
SAM = model.default_sam_checkpoint("tiny")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint (trained with mask labels), one reference with its mask, three targets."""
    root = tmp_path_factory.mktemp("segment")
    vrp = model.build_vrp_sam(model.VRPConfig(backbone="tiny", sam="tiny"), sam_checkpoint=SAM, seed=0)
    args = {"dataset": "synthetic", "fold": 0, "label": "mask", "image_size": S, "sam_checkpoint": str(SAM),
            "backbone_weights": None}
    model.save_checkpoint(root / "best.pt", vrp, args=args)
    model.save_checkpoint(root / "any.pt", vrp, args={**args, "label": "any"})
    rng = np.random.default_rng(0)
    reference = synthetic_scene(rng, classes=[1, 6], num_distractors=2)
    Image.fromarray(reference.image).save(root / "ref.png")
    Image.fromarray(reference.label).save(root / "ref_label.png")  # 0, 1, 6 and 255 rings: --class-id picks one
    (root / "targets").mkdir()
    for i in range(3):
        Image.fromarray(synthetic_scene(rng, classes=[1, 3]).image).save(root / "targets" / f"frame{i:02d}.png")
    return root, reference


def run(files, tmp_path, *extra, checkpoint="best.pt", targets=None):
    root, _ = files
    out = tmp_path / "out"
    argv = ["--checkpoint", str(root / checkpoint), "--targets", str(targets or root / "targets"), "--out", str(out),
            "--device", "cpu", *extra]
    lines = segment.main(argv)
    return out, lines


def mask_ref(files):
    root, _ = files
    return ["--reference", str(root / "ref.png"), "--mask", str(root / "ref_label.png"), "--class-id", "1"]


# --- the model split: reference half once, target half per target -----------------------------------

def _prompts_before_the_split(vrp, target_images, reference_images, reference_labels):
    """VRPSAM.prompt_embeddings as it was written before encode_references existed."""
    b, k = reference_images.shape[:2]
    target_mid, target_last = vrp.backbone.mid_features(target_images)
    target_high = vrp.backbone.high_features(target_last)
    reference_mid, reference_last = vrp.backbone.mid_features(reference_images.flatten(0, 1))
    reference_mask = model.downsample_label(
        reference_labels.flatten(0, 1), reference_mid.shape[-2:], vrp.config.label_downsample
    )
    reference_high = vrp.backbone.high_features(reference_last * reference_mask)
    target_high = target_high.repeat_interleave(k, dim=0)
    target_pseudo_mask = model.pseudo_mask(
        target_high, reference_high, reference_mask, norm=vrp.config.pseudo_mask_norm
    )
    prompts = vrp.encoder(target_mid.repeat_interleave(k, dim=0), reference_mid, reference_mask, target_pseudo_mask)
    return prompts.reshape(b, k * prompts.shape[1], prompts.shape[2])


@torch.no_grad()
def test_split_prompt_embeddings_are_bit_identical_and_references_can_be_shared():
    vrp = model.build_vrp_sam(model.VRPConfig(backbone="tiny", sam="tiny"), seed=0).eval()
    g = torch.Generator().manual_seed(0)
    targets, references = torch.randn(3, 3, 64, 64, generator=g), torch.randn(3, 2, 3, 64, 64, generator=g)
    labels = (torch.rand(3, 2, 64, 64, generator=g) > 0.7).float()
    assert torch.equal(vrp.prompt_embeddings(targets, references, labels),
                       _prompts_before_the_split(vrp, targets, references, labels))
    # One set of references, encoded once, serves a batch of targets as if each had its own copy.
    shared = vrp.encode_references(references[:1], labels[:1])
    expected = vrp.prompt_embeddings(
        targets, references[:1].expand(3, -1, -1, -1, -1), labels[:1].expand(3, -1, -1, -1)
    )
    torch.testing.assert_close(vrp.target_prompt_embeddings(targets, shared), expected, rtol=1e-5, atol=1e-5)
    assert shared.cat(shared).shots == 4


# --- segment.py's mask is evaluate.py's prediction for the same episode ------------------------------------

def test_segment_equals_evaluate_on_a_synthetic_episode(files, tmp_path):
    root, _ = files
    state = model.load_checkpoint(root / "best.pt")
    vrp = model.build_from_checkpoint(state).eval()
    dataset = data.build_dataset("synthetic", split="test", fold=0, image_size=S, num_episodes=1, original_size=True)
    item = dataset[0]
    batch = data.collate_episodes([item])
    with torch.no_grad():
        expected = evaluate.predict(vrp, batch, None, torch.device("cpu"))[0]  # (S, S) logits
    original = item["target_mask_original"].shape
    expected_original = model.upsample_logits(expected[None, None], original)[0, 0] > 0  # evaluate --original-size

    # The same episode as files a person would have: images, and the reference's label PNG.
    images = dataset.images
    target, _ = images.load(item["target_id"])
    reference, reference_label = images.load(item["reference_ids"][0])
    Image.fromarray(target).save(tmp_path / "target.png")
    Image.fromarray(reference).save(tmp_path / "reference.png")
    Image.fromarray(reference_label).save(tmp_path / "reference_label.png")

    predictor = segment.VRPPredictor.from_checkpoint(root / "best.pt", device="cpu")
    predictor.set_references(
        [(tmp_path / "reference.png", {"mask": tmp_path / "reference_label.png", "class_id": item["class_id"]})]
    )
    prediction = predictor.predict(tmp_path / "target.png")
    assert np.array_equal(prediction.network_logits, expected.numpy())  # at the network size, bit for bit
    assert prediction.mask.shape == original == (128, 128) != (S, S)
    assert np.array_equal(prediction.mask, expected_original.numpy())  # and resized to the original size

    out, lines = run(files, tmp_path, "--reference", str(tmp_path / "reference.png"), "--mask",
                     str(tmp_path / "reference_label.png"), "--class-id", str(item["class_id"]),
                     targets=tmp_path / "target.png")
    written = np.array(Image.open(out / "masks" / "target.png")) > 0
    assert np.array_equal(written, expected_original.numpy())
    assert lines[0]["area"] == pytest.approx(expected_original.float().mean().item(), abs=1e-6)


# --- the four annotation kinds, k-shot, sizes and modes ------------------------------------------------------

def test_each_annotation_kind_reaches_the_network_as_training_labels_did(files):
    _, scene = files
    obj = scene.label == 1
    ys, xs = np.nonzero(obj)
    points = segment.make_reference(scene.image, {"points": [(xs[0], ys[0]), (xs[-1], ys[-1])]})
    label = points.network_label(64)
    assert label.sum() == 2 and label[int((ys[0] + 0.5) / 2), int((xs[0] + 0.5) / 2)] == 1  # single pixels, scaled
    box = segment.make_reference(scene.image, {"box": (xs.min(), ys.min(), xs.max(), ys.max())})
    assert box.mask.sum() == (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    stroke = np.zeros_like(obj)
    stroke[ys[len(ys) // 2], xs.min():xs.max()] = True  # a 1-pixel stroke
    scribble = segment.make_reference(scene.image, {"scribble": stroke})
    assert scribble.network_label(32).sum() > 0  # thin strokes survive the downscaling
    mask = segment.make_reference(scene.image, {"mask": scene.label, "class_id": 1})
    assert np.array_equal(mask.mask, obj) and mask.kind == "mask"


@pytest.mark.parametrize("kind", ["points", "box", "scribble", "mask"])
def test_cli_accepts_each_annotation_kind_and_warns_for_untrained_kinds(files, tmp_path, capsys, kind):
    root, scene = files
    ys, xs = np.nonzero(scene.label == 1)
    stroke = np.zeros((128, 128, 4), np.uint8)  # RGBA: strokes opaque on a transparent canvas
    stroke[ys[len(ys) // 2], xs.min():xs.max()] = 255
    Image.fromarray(stroke).save(tmp_path / "scribble.png")
    Image.fromarray((scene.label == 1).astype(np.uint8) * 255).save(tmp_path / "mask.png")
    value = {"points": f"{xs[0]},{ys[0]};{xs[-1]},{ys[-1]}", "box": f"{xs.min()},{ys.min()},{xs.max()},{ys.max()}",
             "scribble": str(tmp_path / "scribble.png"), "mask": str(tmp_path / "mask.png")}[kind]
    out, lines = run(files, tmp_path, "--reference", str(root / "ref.png"), f"--{kind}", value, "--batch-size", "2")
    assert [line["file"] for line in lines] == [str(p) for p in sorted((root / "targets").iterdir())]
    for line in lines:
        assert 0 <= line["area"] <= 1 and line["seconds"] > 0
        assert line["mean_probability"] is None or 0.5 < line["mean_probability"] <= 1  # mask = probability > 0.5
        assert Image.open(line["mask"]).size == (128, 128)
    assert (out / "results.jsonl").read_text().count("\n") == 3
    assert len(list((out / "overlays").iterdir())) == 3
    stderr = capsys.readouterr().err
    if kind == "mask":
        assert "warning" not in stderr
    else:
        assert stderr.count("warning") == 1 and "trained with mask" in stderr


def test_a_checkpoint_trained_with_any_kind_does_not_warn(files):
    root, scene = files
    predictor = segment.VRPPredictor.from_checkpoint(root / "any.pt", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predictor.set_references([(scene.image, {"points": [(10, 10)]})])


def test_k_shot_concatenates_k_times_50_prompts_like_the_model(files):
    root, scene = files
    predictor = segment.VRPPredictor.from_checkpoint(root / "best.pt", device="cpu")
    second = synthetic_scene(np.random.default_rng(5), classes=[1])
    predictor.set_references([(scene.image, {"mask": scene.label, "class_id": 1}),
                              (second.image, {"mask": second.label, "class_id": 1})])
    target = np.array(Image.open(root / "targets" / "frame00.png"))
    prediction = predictor.predict(target)
    images = torch.stack([torch.from_numpy(data.image_array(x, S)) for x in (scene.image, second.image)])[None]
    labels = torch.stack([torch.from_numpy(r.network_label(S)) for r in predictor.references])[None]
    with torch.no_grad():
        network_target = torch.from_numpy(data.image_array(target, S))[None]
        assert predictor.model.prompt_embeddings(network_target, images, labels).shape[1] == 100
        embeddings = model.embed_targets(predictor.model.sam, network_target, ["target"], None)  # fp16-rounded
        expected = predictor.model(network_target, images, labels, image_embeddings=embeddings)[0]
    assert np.array_equal(prediction.network_logits, expected.numpy())


def test_targets_of_any_size_mode_and_orientation_come_back_at_their_own_size(files, tmp_path):
    root, _ = files
    base = Image.open(root / "targets" / "frame00.png")
    folder = tmp_path / "photos"
    folder.mkdir()
    base.resize((160, 90)).convert("RGBA").save(folder / "a_rgba.png")
    base.resize((70, 130)).convert("L").save(folder / "b_grey.png")
    base.resize((100, 100)).convert("P").save(folder / "c_palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; shown rotated by 90°
    base.resize((120, 80)).save(folder / "d_rotated.jpg", exif=exif)
    (folder / "notes.txt").write_text("not an image")  # folders yield their images only
    out, lines = run(files, tmp_path, *mask_ref(files), targets=folder)
    sizes = {line["file"].rsplit("/", 1)[1]: Image.open(line["mask"]).size for line in lines}
    assert sizes == {
        "a_rgba.png": (160, 90), "b_grey.png": (70, 130), "c_palette.png": (100, 100), "d_rotated.jpg": (80, 120),
    }
    assert Image.open(out / "overlays" / "a_rgba.png").mode == "RGB"


def test_propagate_adds_the_previous_frame_as_a_mask_reference(files, tmp_path, monkeypatch):
    shots = []
    real = model.VRPSAM.target_prompt_embeddings
    monkeypatch.setattr(model.VRPSAM, "target_prompt_embeddings",
                        lambda self, t, r: shots.append(r.shots) or real(self, t, r))
    _, lines = run(files, tmp_path, *mask_ref(files), "--propagate")
    assert [line["propagated"] for line in lines] == [False] + [shots[i] == 2 for i in range(1, 3)]
    assert shots[0] == 1 and lines[1]["propagated"]  # the first frame's prediction is not empty here


def test_existing_outputs_are_kept_unless_overwrite(files, tmp_path):
    out, _ = run(files, tmp_path, *mask_ref(files))
    before = (out / "masks" / "frame00.png").read_bytes()
    (out / "results.jsonl").write_text("mine\n")
    with pytest.raises(SystemExit, match="exists.*--overwrite"):
        run(files, tmp_path, *mask_ref(files))
    assert (out / "results.jsonl").read_text() == "mine\n" and (out / "masks" / "frame00.png").read_bytes() == before
    run(files, tmp_path, *mask_ref(files), "--overwrite")
    assert (out / "results.jsonl").read_text().count("\n") == 3


# --- bad input: one line, non-zero exit, nothing written -----------------------------------------------------

def _bad(files, tmp_path, match, *argv, targets=None, checkpoint="best.pt"):
    with pytest.raises(SystemExit) as exit_info:
        run(files, tmp_path, *argv, targets=targets, checkpoint=checkpoint)
    message = str(exit_info.value)
    assert message.startswith("segment.py: error: ") and "\n" not in message
    assert re.search(match, message), message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))


def test_bad_images_and_folders(files, tmp_path):
    root, _ = files
    (tmp_path / "broken.png").write_bytes((root / "ref.png").read_bytes()[:200])  # truncated
    (tmp_path / "empty").mkdir()
    _bad(files, tmp_path, r"image .*broken.png could not be read", "--reference", str(tmp_path / "broken.png"),
         "--mask", str(root / "ref_label.png"))
    _bad(files, tmp_path, r"image .*broken.png could not be read", *mask_ref(files), targets=tmp_path / "broken.png")
    _bad(files, tmp_path, r"--targets .*empty: the folder holds no image", *mask_ref(files), targets=tmp_path / "empty")
    _bad(files, tmp_path, r"matches no image", *mask_ref(files), targets=tmp_path / "*.jpg")


def test_bad_annotations(files, tmp_path):
    root, _ = files
    ref = ["--reference", str(root / "ref.png")]
    Image.new("L", (128, 128)).save(tmp_path / "blank.png")
    Image.new("L", (100, 128), 255).save(tmp_path / "narrow.png")
    _bad(files, tmp_path, r"--mask .*blank.png has no object pixel", *ref, "--mask", str(tmp_path / "blank.png"))
    _bad(files, tmp_path, r"no pixel has class id 9; the values present are \[1, 6, 255\]", *ref,
         "--mask", str(root / "ref_label.png"), "--class-id", "9")
    _bad(
        files, tmp_path, r"--points 130,5 lies outside the reference .*ref.png \(128x128 pixels", *ref, "--points",
        "5,5;130,5",
    )
    _bad(
        files, tmp_path, r"--box 10,10,128,40 is not a box inside the reference .*128x128", *ref, "--box",
        "10,10,128,40",
    )
    _bad(files, tmp_path, r"--scribble .*narrow.png is 100x128 but the reference .*ref.png is 128x128", *ref,
         "--scribble", str(tmp_path / "narrow.png"))
    _bad(
        files, tmp_path, r"--mask .*narrow.png is 100x128 but the reference", *ref, "--mask",
        str(tmp_path / "narrow.png"),
    )
    _bad(files, tmp_path, r"2 --reference image\(s\) but 1 annotation", *ref, *ref, "--points", "5,5")
    with pytest.raises(SystemExit):  # argparse: a malformed point list is a usage error
        run(files, tmp_path, *ref, "--points", "5;5")


def test_bad_checkpoints_and_output_folders(files, tmp_path):
    root, _ = files
    (tmp_path / "corrupt.pt").write_bytes((root / "best.pt").read_bytes()[:1000])
    torch.save(torch.load(SAM, weights_only=True), tmp_path / "sam.pt")  # a SAM state_dict, not ours
    _bad(
        files, tmp_path, r"checkpoint .*missing.pt not found", *mask_ref(files), checkpoint=str(tmp_path / "missing.pt")
    )
    _bad(files, tmp_path, r"corrupt.pt could not be read", *mask_ref(files), checkpoint=str(tmp_path / "corrupt.pt"))
    _bad(files, tmp_path, r"sam.pt is not a VRP-SAM checkpoint", *mask_ref(files), checkpoint=str(tmp_path / "sam.pt"))
    state = model.load_checkpoint(root / "best.pt")
    state["args"]["sam_checkpoint"] = str(tmp_path / "moved" / "sam_tiny_synthetic.pth")  # the run's SAM file is gone
    torch.save(state, tmp_path / "moved.pt")
    _bad(
        files, tmp_path, r"SAM checkpoint .*moved.*not found.*--sam-checkpoint", *mask_ref(files),
        checkpoint=str(tmp_path / "moved.pt"),
    )
    assert not (tmp_path / "out").exists()  # the model is built before the output folder is made
    (tmp_path / "file").write_text("")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(SystemExit, match=r"--out .*file(/sub)?: .*file is a file, not a folder"):
            segment.main(["--checkpoint", str(root / "best.pt"), *mask_ref(files), "--targets", str(root / "targets"),
                          "--out", str(out)])


def test_demo_without_its_checkpoint_says_how_to_train_it(tmp_path):
    with pytest.raises(
        SystemExit, match=r"--demo needs .*best.pt: train it first with `python train.py --dataset synthetic`"
    ):
        segment.main(
            ["--demo", "--checkpoint", str(tmp_path / "runs" / "best.pt"), "--out", str(tmp_path / "demo.png")]
        )


def test_demo_writes_one_contact_sheet(files, tmp_path, capsys):
    root, _ = files
    result = segment.main(
        ["--demo", "--checkpoint", str(root / "best.pt"), "--out", str(tmp_path / "demo.png"), "--device", "cpu"]
    )
    sheet = Image.open(tmp_path / "demo.png")
    assert sheet.width == 5 * S + 4 * 3 and 0 <= result["mean_iou"] <= 100  # reference + 4 targets per row
    assert list(tmp_path.iterdir()) == [tmp_path / "demo.png"]
    with pytest.raises(SystemExit, match="exists"):
        segment.main(["--demo", "--checkpoint", str(root / "best.pt"), "--out", str(tmp_path / "demo.png")])


def test_embedding_cache_is_keyed_by_pixels_not_file_names(files, tmp_path):
    root, _ = files
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes((root / "targets" / "frame00.png").read_bytes())
    cache = ["--cache-dir", str(tmp_path / "cache")]
    out, cold = run(files, tmp_path, *mask_ref(files), *cache, targets=folder)
    _, warm = run(files, tmp_path, *mask_ref(files), *cache, "--overwrite", targets=folder)
    assert [line["area"] for line in warm] == [line["area"] for line in cold]
    # Another picture under the same name: the cache must not serve the old one's embedding.
    (folder / "a.png").write_bytes((root / "targets" / "frame01.png").read_bytes())
    _, changed = run(files, tmp_path, *mask_ref(files), *cache, "--overwrite", targets=folder)
    fresh_out = tmp_path / "fresh"
    segment.main([
        "--checkpoint", str(root / "best.pt"), *mask_ref(files), "--targets", str(folder), "--out", str(fresh_out),
        "--cache-dir", str(tmp_path / "fresh-cache"), "--device", "cpu",
    ])
    assert np.array_equal(
        np.array(Image.open(out / "masks" / "a.png")), np.array(Image.open(fresh_out / "masks" / "a.png"))
    )
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 2


def test_demo_without_out_rewrites_its_own_picture_beside_the_checkpoint(files, tmp_path):
    """The Quick start runs `python segment.py --demo` on a fresh clone, then perhaps again: the
    demo's own picture (demo.png beside the checkpoint) is its output to rewrite, not the user's."""
    root, _ = files
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(root / "best.pt", run / "best.pt")
    for _ in range(2):
        result = segment.main(["--demo", "--checkpoint", str(run / "best.pt"), "--device", "cpu"])
        assert result["out"] == str(run / "demo.png") and (run / "demo.png").is_file()
