"""Every way into a trained model is as trustworthy as the benchmark path.

What people really hand segment.py, evaluate.py and video.py: images in every mode Pillow opens
(16-bit PNGs, float TIFFs, CMYK, ...) and arrays of every dtype, coordinates typed by hand
(negative, NaN), checkpoints whose encoder does not fit, run folders moved to another machine, and
the Python API called SAM's way. Each either reaches the network as the person means it or is
refused in one line that names the file or flag and the form expected.
"""

import logging
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import model
import segment
import train
import video
from synthetic import synthetic_scene

S = 64  # network size of the test checkpoints
SAM = model.default_sam_checkpoint("tiny")
BACKBONE = model.CHECKPOINT_DIR / "tiny_backbone_synthetic.pth"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint as train.py writes it (the frozen files' fingerprints included), a reference
    scene with an object of class 1, and its grey and colour pictures."""
    root = tmp_path_factory.mktemp("inputs")
    vrp = model.build_vrp_sam(model.VRPConfig(backbone="tiny", sam="tiny"), sam_checkpoint=SAM,
                              backbone_weights=BACKBONE, seed=0)
    args = {"dataset": "synthetic", "fold": 0, "label": "any", "image_size": S, "sam_checkpoint": str(SAM),
            "backbone_weights": str(BACKBONE), "sam_fingerprint": model.module_fingerprint(vrp.sam),
            "backbone_fingerprint": model.module_fingerprint(vrp.backbone)}
    model.save_checkpoint(root / "best.pt", vrp, args=args)
    scene = synthetic_scene(np.random.default_rng(3), classes=[1, 4], num_distractors=1)
    Image.fromarray(scene.image).save(root / "ref.png")
    Image.fromarray((scene.label == 1).astype(np.uint8) * 255).save(root / "mask.png")
    return root, scene


@pytest.fixture(scope="module")
def predictor(files):
    root, scene = files
    predictor = segment.VRPPredictor.from_checkpoint(root / "best.pt", device="cpu")
    predictor.set_references([(scene.image, {"mask": scene.label == 1})])
    return predictor


def one_line_exit(argv, match, main=segment.main):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value)
    assert "\n" not in message and re.search(match, message), message
    return message


# --- 1. images as people have them ------------------------------------------------------------------------

def grey_and_colour(scene):
    grey = np.array(Image.fromarray(scene.image).convert("L"))
    return grey, scene.image


def test_a_16_bit_png_is_the_picture_its_8_bit_version_is_not_a_white_one(files, predictor, tmp_path):
    _, scene = files
    grey, _ = grey_and_colour(scene)
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # what a camera or scanner writes
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    sixteen = segment.read_image(tmp_path / "grey16.png")
    assert np.array_equal(sixteen, np.repeat(grey[..., None], 3, axis=2))  # not clipped to uniform white
    eight, wide = predictor.predict(tmp_path / "grey8.png"), predictor.predict(tmp_path / "grey16.png")
    assert np.array_equal(eight.mask, wide.mask) and np.array_equal(eight.logits, wide.logits)


@pytest.mark.parametrize("mode,suffix", [("L", ".png"), ("LA", ".png"), ("P", ".png"), ("I;16", ".png"),
                                         ("I;16B", ".tif"), ("I", ".tif"), ("F", ".tif")])
def test_greyscale_files_of_every_depth_read_as_the_same_grey_picture(files, tmp_path, mode, suffix):
    _, scene = files
    grey, _ = grey_and_colour(scene)
    if mode == "P":  # a palette of greys: index i shows (i, i, i)
        image = Image.fromarray(grey, "P")
        image.putpalette([v for i in range(256) for v in (i, i, i)])
    elif mode == "LA":
        image = Image.merge("LA", [Image.fromarray(grey), Image.new("L", grey.shape[::-1], 128)])
    elif mode in ("I;16", "I;16B"):  # 16-bit, as a camera or scanner writes (little- or big-endian)
        wide = grey.astype(np.uint16) * 257
        image = Image.frombytes(mode, wide.shape[::-1], wide.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    elif mode == "I":  # 32-bit integer TIFF holding 16-bit data
        image = Image.fromarray(grey.astype(np.int32) * 257, "I")
    elif mode == "L":
        image = Image.fromarray(grey)
    else:  # 32-bit float TIFF in [0, 1], as scientific tools write
        image = Image.fromarray(grey.astype(np.float32) / 255, "F")
    image.save(tmp_path / f"grey{suffix}")
    assert Image.open(tmp_path / f"grey{suffix}").mode == mode
    assert np.array_equal(segment.read_image(tmp_path / f"grey{suffix}"), np.repeat(grey[..., None], 3, axis=2))


def test_32_bit_images_outside_8_and_16_bit_ranges_are_stretched_by_their_own_range(tmp_path):
    ramp = np.linspace(-1000, 3000, 40 * 30).reshape(30, 40)
    Image.fromarray(ramp.astype(np.int32), "I").save(tmp_path / "i.tif")
    Image.fromarray((ramp / 7).astype(np.float32), "F").save(tmp_path / "f.tif")
    for path in (tmp_path / "i.tif", tmp_path / "f.tif"):
        pixels = segment.read_image(path)[..., 0]
        assert pixels.min() == 0 and pixels.max() == 255 and pixels[0, 0] == 0 and pixels[-1, -1] == 255
        assert np.all(np.diff(pixels.astype(int).reshape(-1)) >= 0)  # order kept
    Image.fromarray(np.full((4, 4), 200, np.int32), "I").save(tmp_path / "i8.tif")  # 8-bit values in 32 bits: kept
    assert (segment.read_image(tmp_path / "i8.tif") == 200).all()


@pytest.mark.parametrize("mode,suffix", [("RGB", ".png"), ("RGBA", ".png"), ("P", ".png"), ("CMYK", ".tif"),
                                         ("YCbCr", ".tif"), ("LAB", ".tif"), ("HSV", None), ("1", ".png")])
def test_colour_and_bilevel_modes_read_as_the_colours_shown(files, tmp_path, mode, suffix):
    _, scene = files
    image = Image.fromarray(scene.image)
    image = image.quantize(256) if mode == "P" else image.convert(mode)  # P: an adaptive palette, as editors save
    if suffix is not None:  # HSV has no file format: it reaches segment.py as a PIL image
        image.save(tmp_path / f"picture{suffix}")
        image = tmp_path / f"picture{suffix}"
    pixels = segment.read_image(image)
    assert pixels.dtype == np.uint8 and pixels.shape == scene.image.shape
    if mode == "1":  # black and white, as shown
        assert set(np.unique(pixels).tolist()) == {0, 255}
        return
    # Palette quantisation and Pillow's LAB conversion round colours; nothing is clipped or uniform.
    difference = np.abs(pixels.astype(int) - scene.image.astype(int))
    assert difference.mean() < {"LAB": 12, "P": 3}.get(mode, 2), difference.mean()


def test_arrays_of_every_dtype_are_accepted_as_viewers_show_them_or_refused_with_the_form(files, predictor):
    _, scene = files
    rgb = scene.image
    expected = predictor.predict(rgb)
    for same in (rgb.astype(np.uint16) * 257, rgb / 255.0, rgb.astype(np.float32), rgb.astype(np.int64),
                 np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])):
        assert np.array_equal(segment.read_image(same), rgb)
    assert np.array_equal(predictor.predict(rgb.astype(np.uint16) * 257).logits, expected.logits)
    assert np.array_equal(segment.read_image(rgb[..., :1]), np.repeat(rgb[..., :1], 3, axis=2))
    binary = scene.label == 1
    assert np.array_equal(segment.read_image(binary)[..., 0], binary.astype(np.uint8) * 255)

    refusals = [(rgb * 4.0, r"float values span .*expected \[0, 1\] or \[0, 255\]"),
                (np.where(binary[..., None], np.nan, rgb / 255), "NaN or infinite"),
                (rgb.astype(np.int32) * 300, r"int32 integer values span .*0\.\.255 \(pass 16-bit data as uint16\)"),
                (rgb.transpose(2, 0, 1).copy(), r"channels last.*transpose\(1, 2, 0\)"),
                (np.zeros((6, 6, 5), np.uint8), r"expected an \(H, W\), \(H, W, 3\) or \(H, W, 4\) image array"),
                (np.zeros((0, 4, 3), np.uint8), "empty"),
                (rgb.astype(object), "dtype object")]
    for array, message in refusals:
        with pytest.raises(ValueError, match=message):
            predictor.predict(array)
    with pytest.raises(TypeError, match="expected a file path, a PIL image or an .* array, got Tensor"):
        predictor.predict(torch.from_numpy(rgb))


@pytest.mark.parametrize("mode,suffix", [("1", ".png"), ("L", ".png"), ("P", ".png"), ("LA", ".png"),
                                         ("RGBA", ".png"), ("I;16", ".png"), ("I", ".tif"), ("F", ".tif"),
                                         ("CMYK", ".tif"), ("YCbCr", ".tif"), ("LAB", ".tif")])
def test_masks_and_scribbles_in_every_mode_mark_the_pixels_drawn(files, tmp_path, mode, suffix):
    root, scene = files
    obj = scene.label == 1
    white = Image.fromarray(obj.astype(np.uint8) * 255)  # white object on black, as people draw masks
    if mode == "I;16":
        image = Image.fromarray(obj.astype(np.uint16) * 65535)
    elif mode == "I":
        image = Image.fromarray(obj.astype(np.int32) * 65535, "I")
    elif mode == "F":
        image = Image.fromarray(obj.astype(np.float32), "F")
    else:  # opaque LA / RGBA: the alpha shows nothing, the colour is the mask
        image = white.convert(mode)
    image.save(tmp_path / f"mask{suffix}")
    for kind in ("mask", "scribble"):
        reference = segment.make_reference(root / "ref.png", {kind: tmp_path / f"mask{suffix}"})
        assert np.array_equal(reference.mask, obj), (mode, kind)


def test_strokes_on_a_transparent_canvas_and_16_bit_label_values(files, tmp_path):
    root, scene = files
    obj = scene.label == 1
    canvas = np.zeros((*obj.shape, 4), np.uint8)
    canvas[obj] = (255, 0, 0, 255)  # red strokes, opaque, on a transparent canvas
    canvas[~obj, :3] = 255  # whose hidden colour is white
    Image.fromarray(canvas).save(tmp_path / "strokes.png")
    assert np.array_equal(segment.make_reference(root / "ref.png", {"scribble": tmp_path / "strokes.png"}).mask, obj)
    labels = np.where(scene.label == 255, 0, scene.label).astype(np.uint16) * 1000  # a 16-bit label map
    Image.fromarray(labels).save(tmp_path / "labels16.png")
    picked = segment.make_reference(root / "ref.png", {"mask": tmp_path / "labels16.png", "class_id": 1000})
    assert np.array_equal(picked.mask, obj)
    Image.fromarray(np.zeros(obj.shape, np.float32), "F").save(tmp_path / "blank.tif")
    with pytest.raises(SystemExit, match=r"^segment.py: error: --mask .*blank.tif has no object pixel"):
        segment.main(["--checkpoint", str(root / "best.pt"), "--reference", str(root / "ref.png"), "--mask",
                      str(tmp_path / "blank.tif"), "--targets", str(root / "ref.png"), "--out", str(tmp_path / "o")])


def test_the_cli_segments_a_16_bit_target_as_its_8_bit_version(files, tmp_path):
    root, scene = files
    grey, _ = grey_and_colour(scene)
    (tmp_path / "t").mkdir()
    Image.fromarray(grey).save(tmp_path / "t" / "eight.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "t" / "sixteen.png")
    Image.fromarray((scene.label == 1).astype(np.uint16) * 65535).save(tmp_path / "mask16.png")
    segment.main(["--checkpoint", str(root / "best.pt"), "--reference", str(root / "ref.png"), "--mask",
                  str(tmp_path / "mask16.png"), "--targets", str(tmp_path / "t"), "--out", str(tmp_path / "out"),
                  "--device", "cpu"])
    eight, sixteen = (np.array(Image.open(tmp_path / "out" / "masks" / f"{n}.png")) for n in ("eight", "sixteen"))
    assert np.array_equal(eight, sixteen)


# --- 2. coordinates typed by hand ---------------------------------------------------------------------------

def test_negative_coordinates_parse_and_are_refused_against_the_reference_size(files, tmp_path):
    root, _ = files
    for argv in (["--points", "-1,3"], ["--points=-1,3"], ["--points", "-1.5,3;4,5"], ["--box", "-1,0,20,20"]):
        args = segment.build_parser().parse_args(argv)
        assert args.annotations[0][1] in ([(-1.0, 3.0)], [(-1.5, 3.0), (4.0, 5.0)], (-1.0, 0.0, 20.0, 20.0))
    base = ["--checkpoint", str(root / "best.pt"), "--reference", str(root / "ref.png"),
            "--targets", str(root / "ref.png"), "--out", str(tmp_path / "out")]
    one_line_exit(base + ["--points", "-1,3"], r"--points -1,3 lies outside the reference .*ref.png \(128x128 pixels: "
                                                r"x must be in 0..127")
    one_line_exit(base + ["--box", "-1,0,20,20"], r"--box -1,0,20,20 is not a box inside the reference .*128x128")
    one_line_exit(base + ["--box", "20,0,10,20"], r"--box 20,0,10,20 .*the first corner must be the top left")
    one_line_exit(base + ["--points", "1e300,3"], r"--points 1e\+300,3 lies outside the reference")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag,value", [("--points", "nan,3"), ("--points", "3,inf"), ("--points", "-inf,3"),
                                        ("--points", "1e999,3"), ("--box", "0,0,inf,20"), ("--box", "nan,0,1,1")])
def test_non_finite_coordinates_are_a_usage_error_naming_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        segment.main([flag, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"segment.py: error: argument {flag}: ") and "finite numbers" in error


def test_the_api_refuses_non_finite_and_re_paired_coordinates(files):
    _, scene = files
    for value, message in (([(np.nan, 3)], "finite"), ([10, 20, 30, 40], r"expected \[\(x, y\), \.\.\.\]"),
                           ([(1e300, 3)], "lies outside")):
        with pytest.raises(ValueError, match=message):
            segment.make_reference(scene.image, {"points": value})
    with pytest.raises(ValueError, match="finite"):
        segment.make_reference(scene.image, {"box": (0, 0, float("inf"), 20)})
    assert segment.make_reference(scene.image, {"box": np.array([[2, 3, 10, 12]])}).mask.sum() == 9 * 10  # SAM's (1, 4)


# --- 3. checkpoints and runs ------------------------------------------------------------------------------------

def test_an_encoder_trained_on_another_backbone_is_refused_naming_the_parameter_and_shapes(files, tmp_path):
    root, scene = files
    tiny = model.load_checkpoint(root / "best.pt")
    vgg = model.build_vrp_sam(model.VRPConfig(backbone="vgg16", sam="tiny"))
    with pytest.raises(ValueError) as error:
        vgg.load_learnable_state_dict(tiny["model"], source="best.pt")
    assert str(error.value) == (
        "best.pt does not fit this model: feature_augmenter.projection.0.weight is (256, 160, 1, 1) in the checkpoint "
        "but (256, 768, 1, 1) in the model: its encoder was trained on tiny features (160 channels) but the model is "
        "built with backbone vgg16 (768); build the model with the checkpoint's own configuration "
        "(model.build_from_checkpoint does)")
    fewer = model.build_vrp_sam(model.VRPConfig(backbone="tiny", sam="tiny", num_queries=10))
    with pytest.raises(ValueError, match=r"with 50 queries \(--num-queries 50\) but the model is built with 10"):
        fewer.load_learnable_state_dict(tiny["model"])

    # A checkpoint whose config names another backbone than its weights: refused when read, by every script.
    tiny["config"]["backbone"] = "vgg16"
    torch.save(tiny, tmp_path / "edited.pt")
    one_line_exit(["--checkpoint", str(tmp_path / "edited.pt"), "--reference", str(root / "ref.png"), "--mask",
                   str(root / "mask.png"), "--targets", str(root / "ref.png"), "--out", str(tmp_path / "out")],
                  r"checkpoint .*edited.pt does not fit its own config: feature_augmenter.projection.0.weight is "
                  r"\(256, 160, 1, 1\) .*trained on tiny features .* its config says backbone vgg16")
    assert not (tmp_path / "out").exists()


def test_the_known_backbones_feature_channels_are_what_the_backbones_build():
    for name in ("tiny", "vgg16", "resnet50"):
        assert model.BACKBONE_MID_CHANNELS[name] == model.build_backbone(name).mid_channels
    assert set(model.BACKBONE_MID_CHANNELS) == set(model.BACKBONES)


@pytest.fixture(scope="module")
def moved_run(tmp_path_factory):
    """A tiny run trained on frozen files at one place, then its folder and those files moved
    elsewhere (another machine): the absolute paths the run recorded are gone."""
    root = tmp_path_factory.mktemp("moved")
    (root / "frozen").mkdir()
    for source in (SAM, BACKBONE):
        shutil.copy(source, root / "frozen" / source.name)
    train.main(["--dataset", "synthetic", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
                "--val-episodes", "2", "--workers", "0", "--image-size", str(S), "--no-cache", "--device", "cpu",
                "--out", str(root / "run"), "--sam-checkpoint", str(root / "frozen" / SAM.name),
                "--backbone-weights", str(root / "frozen" / BACKBONE.name)])
    trained = model.load_checkpoint(root / "run" / "best.pt")["model"]
    shutil.move(root / "run", root / "elsewhere-run")
    shutil.move(root / "frozen", root / "elsewhere-frozen")
    return root, root / "elsewhere-run" / "best.pt", root / "elsewhere-frozen", trained


def test_a_moved_run_loads_in_every_script_with_the_flags(files, moved_run, tmp_path, monkeypatch):
    root, checkpoint, frozen, trained = moved_run
    ref, _ = files
    monkeypatch.setattr(model, "CHECKPOINT_DIR", tmp_path / "no-checkpoints")  # nothing to fall back on
    flags = ["--sam-checkpoint", str(frozen / SAM.name), "--backbone-weights", str(frozen / BACKBONE.name)]
    segment_argv = ["--checkpoint", str(checkpoint), "--reference", str(ref / "ref.png"),
                    "--mask", str(ref / "mask.png"), "--targets", str(ref / "ref.png"), "--device", "cpu"]
    one_line_exit(segment_argv + ["--out", str(tmp_path / "a")],
                  r"SAM checkpoint .*/frozen/sam_tiny_synthetic.pth \(recorded by the run of .*best.pt\) not found: "
                  r"pass the run's file with --sam-checkpoint PATH")
    one_line_exit(segment_argv + ["--out", str(tmp_path / "a"), *flags[:2]],
                  r"backbone weights .*/frozen/tiny_backbone_synthetic.pth \(recorded .*\) not found: pass the run's "
                  r"file with --backbone-weights PATH")
    with pytest.raises(SystemExit, match=r"(?s)prerequisite.*frozen/tiny_backbone_synthetic.pth: --backbone-weights"):
        evaluate.main(["--dataset", "synthetic", "--checkpoint", f"0={checkpoint}", "--folds", "0", "--episodes", "2"])

    lines = segment.main(segment_argv + ["--out", str(tmp_path / "b")] + flags)
    assert len(lines) == 1 and (tmp_path / "b" / "masks" / "ref.png").is_file()
    predictor = segment.VRPPredictor.from_checkpoint(checkpoint, device="cpu", sam_checkpoint=frozen / SAM.name,
                                                     backbone_weights=frozen / BACKBONE.name)
    assert all(torch.equal(v, trained[k]) for k, v in predictor.model.learnable_state_dict().items())
    result = evaluate.main(["--dataset", "synthetic", "--checkpoint", f"0={checkpoint}", "--folds", "0",
                            "--episodes", "2", "--workers", "0", "--no-cache", "--device", "cpu", *flags])
    assert 0 <= result["mask/1"][0]["miou"] <= 100
    result = video.main(["--checkpoint", str(checkpoint), "--videos", "1", "--frames", "4-5", "--no-cache",
                         "--device", "cpu", "--out", str(tmp_path / "video"), *flags])
    assert 0 <= result["summary"]["J&F-Mean"] <= 1


def test_a_moved_run_finds_its_files_in_checkpoints_only_by_fingerprint(moved_run, tmp_path, monkeypatch, caplog):
    root, checkpoint, frozen, trained = moved_run
    state = model.load_checkpoint(checkpoint)
    fake = tmp_path / "checkpoints"
    fake.mkdir()
    monkeypatch.setattr(model, "CHECKPOINT_DIR", fake)
    for name in (SAM.name, BACKBONE.name):
        shutil.copy(frozen / name, fake / name)
    with caplog.at_level(logging.WARNING, logger="model"):
        vrp = model.build_from_checkpoint(state)
    notes = sorted(r.getMessage() for r in caplog.records)  # one line per file found again
    assert len(notes) == 2 and all("\n" not in note for note in notes)
    assert re.fullmatch(r"SAM checkpoint .*frozen/sam_tiny_synthetic.pth \(recorded by the run\) not found: using "
                        r".*/checkpoints/sam_tiny_synthetic.pth, which holds the same weights \(fingerprint \w+\)",
                        notes[0])
    assert re.match(r"backbone weights .*frozen/tiny_backbone_synthetic.pth \(recorded by the run\) not found: using "
                    r".*/checkpoints/tiny_backbone_synthetic.pth", notes[1])
    assert all(torch.equal(v, trained[k]) for k, v in vrp.learnable_state_dict().items())

    # A file of the same name with other weights is not used in its place.
    other = {k: torch.zeros_like(v) for k, v in torch.load(BACKBONE, weights_only=True).items()}
    torch.save(other, fake / BACKBONE.name)
    with pytest.raises(FileNotFoundError) as error:
        model.build_from_checkpoint(state)
    assert re.fullmatch(r"backbone weights .*frozen/tiny_backbone_synthetic.pth \(recorded by the run\) not found; "
                        r".*checkpoints/tiny_backbone_synthetic.pth has its name but other weights \(fingerprint \w+, "
                        r"the run's \w+\): pass the run's file with --backbone-weights", str(error.value))
    # Nor one the run cannot vouch for (a run saved before fingerprints were recorded).
    shutil.copy(frozen / BACKBONE.name, fake / BACKBONE.name)
    del state["args"]["backbone_fingerprint"]
    with pytest.raises(FileNotFoundError, match=r"recorded no fingerprint .* pass it with --backbone-weights .*/check"):
        model.build_from_checkpoint(state)


# --- 4. the Python API as people call it -------------------------------------------------------------------------

def test_sam_style_point_triples_are_positive_clicks_and_negative_ones_are_refused(files):
    _, scene = files
    pairs = segment.make_reference(scene.image, {"points": [(10, 20), (30, 40)]})
    triples = segment.make_reference(scene.image, {"points": [(10, 20, 1), (30, 40, 1)]})
    assert np.array_equal(triples.points, [[10, 20], [30, 40]]) and np.array_equal(triples.mask, pairs.mask)
    assert np.array_equal(segment.make_reference(scene.image, {"points": (10, 20)}).points, [[10, 20]])
    with pytest.raises(ValueError, match=r"\(30, 40, 0\) is a background click; a VRP reference marks the object only"):
        segment.make_reference(scene.image, {"points": np.array([[10, 20, 1], [30, 40, 0]])})
    with pytest.raises(ValueError, match=r"third value is its SAM label, 1 \(object\) or 0"):
        segment.make_reference(scene.image, {"points": [(10, 20, 30), (40, 50, 60)]})


def test_set_references_shows_the_expected_form_for_what_people_pass(files, predictor):
    root, scene = files
    cases = [(["ref.png"], TypeError, r"reference 1 is 'ref.png'; expected a list of \(image, annotation\) pairs"),
             ((root / "ref.png", {"mask": root / "mask.png"}), TypeError, r"got one pair: wrap it in a list"),
             ("ref.png", TypeError, "got a str"),
             ([(root / "ref.png", root / "mask.png")], TypeError, r"reference 1 is a tuple; expected"),
             ([(root / "ref.png", "mask.png")], TypeError, "expected a list of"),
             ([], ValueError, "at least one reference"),
             ([(root / "ref.png", {"mask": root / "mask.png", "class_id": "1"})], TypeError, "class_id is a label"),
             ([(root / "ref.png", {"mask": [["a"]]})], TypeError, r"an \(H, W\) array of numbers")]
    for references, error, message in cases:
        with pytest.raises(error, match=message):
            predictor.set_references(references)
    predictor.set_references([(scene.image, {"mask": scene.label == 1})])  # left as it was: usable


def test_predict_batch_of_nothing_is_nothing_and_one_image_is_not_a_batch(files, predictor):
    root, scene = files
    assert predictor.predict_batch([]) == []
    with pytest.raises(TypeError, match=r"predict_batch takes a list of images, got one str: use predict\(image\)"):
        predictor.predict_batch(str(root / "ref.png"))
    with pytest.raises(TypeError, match="predict takes one image, got a list"):
        predictor.predict([scene.image, scene.image])
    frames = np.stack([scene.image, scene.image[::-1].copy()])  # (B, H, W, 3): a video's frames
    batch = predictor.predict_batch(frames)
    assert len(batch) == 2 and np.allclose(batch[0].logits, predictor.predict(scene.image).logits, atol=1e-5)


def test_backbone_weights_other_than_the_runs_are_named_in_one_logged_line(moved_run, tmp_path, caplog):
    """--backbone-weights points a run at any file; one whose weights the encoder was not trained on
    is said (by fingerprint), the run's own file is not."""
    root, checkpoint, frozen, trained = moved_run
    state = model.load_checkpoint(checkpoint)
    other = tmp_path / "other_backbone.pth"
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in torch.load(BACKBONE, weights_only=True).items()},
               other)
    with caplog.at_level(logging.WARNING, logger="model"):
        model.build_from_checkpoint(state, sam_checkpoint=frozen / SAM.name, backbone_weights=frozen / BACKBONE.name)
    assert caplog.records == []
    with caplog.at_level(logging.WARNING, logger="model"):
        model.build_from_checkpoint(state, sam_checkpoint=frozen / SAM.name, backbone_weights=other, source="run.pt")
    (note,) = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(r"--backbone-weights .*other_backbone.pth holds other weights than the run of run.pt was "
                        r"trained with \(fingerprint \w+, the run's \w+\): its encoder learned other features; "
                        r"expect lower accuracy", note)
