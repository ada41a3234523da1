"""Simulated user labels (paper §5.1, Appendix A): where labels may fall, how they are distributed,
that they are reproducible per episode, and that bad inputs are explained."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

import prompts
from prompts import episode_rng, simulate_annotation

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def disk_with_ignore_border(size: int = 96, radius: float = 30.0, border: float = 3.0) -> np.ndarray:
    """(size, size) uint8: a disk of 1s inside a ring of 255 (PASCAL-style boundary), 0 elsewhere."""
    ys, xs = np.mgrid[0:size, 0:size]
    distance = np.hypot(xs - size / 2, ys - size / 2)
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[distance <= radius + border] = 255
    mask[distance <= radius] = 1
    return mask


def crescent(size: int = 96) -> np.ndarray:
    """(size, size) uint8 non-convex object with 255 pixels both outside and inside its bounding box."""
    ys, xs = np.mgrid[0:size, 0:size]
    outer = np.hypot(xs - 48, ys - 48) <= 36
    bite = np.hypot(xs - 62, ys - 44) <= 28
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[outer & ~bite] = 1
    mask[outer & bite] = 255
    return mask


def distance_to_polyline(pixels_xy: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """(N,) distance of each (x, y) pixel to the polyline with (V, 2) vertices."""
    if len(vertices) == 1:
        return np.linalg.norm(pixels_xy - vertices[0], axis=1)
    start, end = vertices[:-1], vertices[1:]                      # (S, 2)
    direction = end - start
    length2 = np.maximum((direction ** 2).sum(1), 1e-12)
    offset = pixels_xy[:, None, :] - start[None]                  # (N, S, 2)
    t = np.clip((offset * direction[None]).sum(-1) / length2, 0.0, 1.0)
    nearest = start[None] + t[..., None] * direction[None]
    return np.linalg.norm(pixels_xy[:, None, :] - nearest, axis=-1).min(1)


@pytest.mark.parametrize("kind", ["point", "scribble"])
@pytest.mark.parametrize("make_mask", [disk_with_ignore_border, crescent])
def test_sparse_labels_stay_on_object_and_off_ignore(kind, make_mask):
    object_mask = make_mask()
    for seed in range(40):
        annotation = simulate_annotation(object_mask, kind, episode_rng(seed))
        assert annotation.kind == kind
        assert annotation.mask.dtype == np.uint8 and annotation.mask.shape == object_mask.shape
        assert set(np.unique(annotation.mask).tolist()) <= {0, 1}
        assert annotation.mask.any()
        assert not (annotation.mask.astype(bool) & (object_mask != 1)).any()


def test_points_are_distinct_object_pixels_and_the_label_marks_exactly_them():
    object_mask = crescent()
    for seed in range(30):
        annotation = simulate_annotation(object_mask, "point", episode_rng(seed))
        points = annotation.points
        assert points.dtype == np.int64 and points.ndim == 2 and points.shape[1] == 2
        assert len({tuple(p) for p in points.tolist()}) == len(points)
        assert (object_mask[points[:, 1], points[:, 0]] == 1).all()  # (x, y) order
        expected = np.zeros_like(annotation.mask)
        expected[points[:, 1], points[:, 0]] = 1
        np.testing.assert_array_equal(annotation.mask, expected)
        assert annotation.box is None and annotation.strokes == () and annotation.widths == ()


def test_point_count_covers_one_to_twenty_and_never_exceeds_the_area():
    object_mask = disk_with_ignore_border(size=32, radius=10)
    counts = [len(simulate_annotation(object_mask, "point", episode_rng(0, i)).points) for i in range(1500)]
    assert set(counts) == set(range(1, prompts.MAX_POINTS + 1))

    tiny = np.zeros((16, 16), dtype=np.uint8)
    tiny[4, 5] = tiny[4, 6] = tiny[9, 9] = 1
    tiny[4, 7] = 255
    tiny_counts = [len(simulate_annotation(tiny, "point", episode_rng(1, i)).points) for i in range(200)]
    assert set(tiny_counts) == {1, 2, 3}


def test_box_is_tight_filled_and_covers_ignore_pixels_inside_it():
    object_mask = crescent()
    annotation = simulate_annotation(object_mask, "box", episode_rng(0))
    ys, xs = np.nonzero(object_mask == 1)
    assert annotation.box == (xs.min(), ys.min(), xs.max(), ys.max())
    x0, y0, x1, y1 = annotation.box
    expected = np.zeros_like(annotation.mask)
    expected[y0:y1 + 1, x0:x1 + 1] = 1
    np.testing.assert_array_equal(annotation.mask, expected)
    assert (annotation.mask[object_mask == 1] == 1).all()
    # The crescent's bite (255) lies partly inside the box: a box does not know about boundaries.
    assert (annotation.mask[object_mask == 255] == 1).any()
    assert annotation.points.shape == (0, 2)


def test_mask_label_is_the_object_without_ignore_pixels():
    object_mask = disk_with_ignore_border()
    annotation = simulate_annotation(object_mask, "mask", episode_rng(0))
    np.testing.assert_array_equal(annotation.mask, (object_mask == 1).astype(np.uint8))


def test_scribbles_are_thin_connected_strokes_around_their_polylines():
    # The object fills the image, so AND-ing with it cannot cut a stroke into pieces.
    object_mask = np.ones((192, 192), dtype=np.uint8)
    allowed_widths = {2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0}
    fractions, stroke_counts = [], set()
    for seed in range(60):
        annotation = simulate_annotation(object_mask, "scribble", episode_rng(seed))
        strokes, widths = annotation.strokes, annotation.widths
        assert 1 <= len(strokes) <= prompts.MAX_STROKES and len(widths) == len(strokes)
        assert set(widths) <= allowed_widths
        stroke_counts.add(len(strokes))
        fractions.append(annotation.mask.mean())

        _, n_components = ndimage.label(annotation.mask, structure=EIGHT_CONNECTED)
        assert 1 <= n_components <= len(strokes)

        ys, xs = np.nonzero(annotation.mask)
        pixels = np.stack([xs, ys], axis=1).astype(np.float64)
        slack = np.stack([distance_to_polyline(pixels, v) - w / 2 for v, w in zip(strokes, widths)])
        assert slack.min(0).max() <= 1.0, "a labelled pixel lies further than width/2 + 1 from every stroke"

        for vertices in strokes:
            assert vertices.dtype == np.float64 and vertices.shape[1] == 2 and len(vertices) >= 7
            assert (vertices >= 0).all() and (vertices[:, 0] <= 191).all() and (vertices[:, 1] <= 191).all()
            steps = np.linalg.norm(np.diff(vertices, axis=0), axis=1)
            # max head speed of the larger preset, plus rounding the vertices to pixel centres
            assert steps.max() <= 20.0 + np.sqrt(2) + 1e-9
            np.testing.assert_array_equal(vertices, np.rint(vertices))
    assert max(fractions) < 0.5 and np.mean(fractions) < 0.15
    assert len(stroke_counts) > 8


def test_every_stroke_starts_on_a_labelled_object_pixel():
    object_mask = crescent()
    for seed in range(40):
        annotation = simulate_annotation(object_mask, "scribble", episode_rng(seed))
        starts = np.stack([v[0] for v in annotation.strokes]).astype(np.int64)
        assert len({tuple(s) for s in starts.tolist()}) == len(starts)
        assert (object_mask[starts[:, 1], starts[:, 0]] == 1).all()
        assert (annotation.mask[starts[:, 1], starts[:, 0]] == 1).all()


def test_single_pixel_object_gets_a_one_pixel_scribble():
    object_mask = np.zeros((40, 40), dtype=np.uint8)
    object_mask[20, 11] = 1
    object_mask[19:22, 10:13][object_mask[19:22, 10:13] == 0] = 255
    annotation = simulate_annotation(object_mask, "scribble", episode_rng(3))
    assert len(annotation.strokes) == 1
    np.testing.assert_array_equal(np.argwhere(annotation.mask), [[20, 11]])


@pytest.mark.parametrize("kind", prompts.LABEL_KINDS)
def test_same_seed_same_annotation(kind):
    object_mask = crescent()
    first = simulate_annotation(object_mask, kind, episode_rng(7, 2, 0))
    second = simulate_annotation(object_mask, kind, episode_rng(7, 2, 0))
    assert first == second


@pytest.mark.parametrize("kind", ["point", "scribble"])
def test_different_seeds_different_annotations(kind):
    object_mask = crescent()
    draws = [simulate_annotation(object_mask, kind, episode_rng(seed)) for seed in range(5)]
    assert all(a != b for i, a in enumerate(draws) for b in draws[i + 1:])
    assert simulate_annotation(object_mask, kind, episode_rng(7, 2, 0)) != \
        simulate_annotation(object_mask, kind, episode_rng(7, 2, 1))


def test_episode_annotation_does_not_depend_on_earlier_draws():
    object_mask = crescent()
    alone = simulate_annotation(object_mask, "scribble", episode_rng(321, 17, 0))
    for episode in range(17):  # as if other episodes (or another worker's share) ran first
        simulate_annotation(object_mask, "scribble", episode_rng(321, episode, 0))
        simulate_annotation(object_mask, "point", episode_rng(321, episode, 0))
    np.random.seed(0)
    torch.manual_seed(0)
    after = simulate_annotation(object_mask, "scribble", episode_rng(321, 17, 0))
    assert alone == after


def test_global_random_state_is_neither_used_nor_changed():
    object_mask = crescent()
    numpy_state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state().clone()
    for kind in prompts.LABEL_KINDS:
        simulate_annotation(object_mask, kind, episode_rng(0))
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


@pytest.mark.parametrize("kind", prompts.LABEL_KINDS)
def test_torch_and_bool_inputs_equal_numpy_input(kind):
    object_mask = crescent()
    from_numpy = simulate_annotation(object_mask, kind, episode_rng(5))
    from_torch = simulate_annotation(torch.from_numpy(object_mask), kind, episode_rng(5))
    from_float = simulate_annotation(torch.from_numpy(object_mask).float(), kind, episode_rng(5))
    from_bool = simulate_annotation(object_mask == 1, kind, episode_rng(5))
    assert from_numpy == from_torch == from_float == from_bool


@pytest.mark.parametrize(
    "object_mask, kind, expected_words",
    [
        (np.zeros((8, 8), np.uint8), "point", ["no object pixel", "equal to 1"]),
        (np.full((8, 8), 255, np.uint8), "box", ["no object pixel"]),
        (np.zeros((8, 8), bool), "mask", ["no object pixel"]),
        (np.array([[0, 1], [2, 1]], np.uint8), "point", ["{2}", "0, 1 and 255", "class_id"]),
        (np.array([[0.0, 0.5], [1.0, 1.0]]), "box", ["0.5", "0, 1 and 255"]),
        (np.ones((2, 8, 8), np.uint8), "scribble", ["2-D", "3-D", "(2, 8, 8)"]),
        (np.ones(8, np.uint8), "mask", ["2-D", "1-D"]),
        (np.ones((8, 8), np.uint8), "polygon", ["'polygon'", "point, scribble, box, mask"]),
    ],
)
def test_bad_inputs_raise_value_errors_that_say_what_is_accepted(object_mask, kind, expected_words):
    with pytest.raises(ValueError) as error:
        simulate_annotation(object_mask, kind, episode_rng(0))
    for words in expected_words:
        assert words in str(error.value)


def test_a_seed_instead_of_a_generator_is_refused():
    with pytest.raises(TypeError, match="episode_rng"):
        simulate_annotation(crescent(), "point", 0)
    with pytest.raises(ValueError, match="non-negative"):
        episode_rng(0, -1)


def test_cli_writes_an_overlay_of_the_label_png_size(tmp_path, capsys):
    labels = np.zeros((48, 64), dtype=np.uint8)
    labels[10:30, 8:30] = 3
    labels[10:30, 30] = 255
    labels[5:15, 40:60] = 7
    palette_png = Image.fromarray(labels, mode="P")
    palette_png.putpalette([0, 0, 0, 128, 0, 0] + [100] * (3 * 254))
    mask_path = tmp_path / "labels.png"
    palette_png.save(mask_path)

    out = tmp_path / "overlay.png"
    prompts.main(["--mask", str(mask_path), "--class-id", "3", "--kind", "mask", "--seed", "0",
                  "--out", str(out)])
    printed = capsys.readouterr().out
    assert "mask" in printed and f"{20 * 22} labelled pixels" in printed
    with Image.open(out) as image:
        assert image.mode == "RGB" and image.size == (64, 48)
        overlay = np.asarray(image)
    # Class 3 is labelled; class 7 (not the object) and the 255 column are drawn differently.
    assert (overlay[20, 20] != overlay[8, 50]).any() and (overlay[20, 20] != overlay[20, 30]).any()

    prompts.main(["--mask", str(mask_path), "--kind", "scribble", "--out", str(out)])
    assert "strokes" in capsys.readouterr().out


def test_cli_demo_and_missing_file(tmp_path, capsys):
    out = tmp_path / "demo.png"
    prompts.main(["--demo", "--kind", "point", "--out", str(out)])
    assert "points" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.size == prompts.demo_object_mask().shape[::-1]

    missing = tmp_path / "no_such_labels.png"
    with pytest.raises(SystemExit) as exit_info:
        prompts.main(["--mask", str(missing), "--out", str(out)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert str(missing) in message and "not found" in message and "Traceback" not in message

    with pytest.raises(SystemExit):
        prompts.main(["--mask", str(out), "--class-id", "9", "--out", str(tmp_path / "x.png")])
    assert "not a label map" in capsys.readouterr().err
