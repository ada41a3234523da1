"""Simulated user labels for the reference image (paper §3.2, §5.1 "Datasets", Appendix A).

VRP-SAM is trained and evaluated with four kinds of visual reference prompt, all simulated from the
reference's ground-truth object mask:

- ``point``: 1-20 clicks on the object, drawn uniformly without replacement from its pixels;
- ``scribble``: 1-20 free-form strokes, the random-walk brush strokes of Yu et al. 2019
  ("Free-Form Image Inpainting with Gated Convolution") with SEEM's ``rand_curve`` /
  ``rand_curve_small`` presets, each starting on an object pixel and clipped to the object;
- ``box``: the object's tight bounding box, filled;
- ``mask``: the object mask itself.

Exposes ``LABEL_KINDS``, ``MAX_POINTS``, ``MAX_STROKES``, the ``Annotation`` record,
``simulate_annotation(object_mask, kind, rng)`` and ``episode_rng(seed, *keys)``. Every random
number comes from the ``numpy.random.Generator`` passed in, so an evaluation episode's label
depends only on ``episode_rng(seed, episode_index, reference_index)``.

Run as a script to look at one simulated label drawn over a label PNG::

    python prompts.py --demo --kind scribble --seed 0 --out overlay.png
    python prompts.py --mask SegmentationClass/2007_000032.png --class-id 1 --kind point --out overlay.png
"""

from __future__ import annotations

import argparse
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from PIL import Image, ImageDraw

import cli

LABEL_KINDS = ("point", "scribble", "box", "mask")
MAX_POINTS = 20
MAX_STROKES = 20
IGNORE = 255  # the label value of pixels that are neither object nor background (PASCAL's object
# boundaries, DAVIS's void): never part of an object, left out of every loss and metric.

# The keys of every seeded random stream (np.random.default_rng([seed, key, ...])): one place, so no
# two streams ever share a key. tests/test_prompts.py checks that they are distinct.
SEED_STREAMS = {
    "synthetic-train": 5_000_001, "synthetic-test": 5_000_002,  # synthetic.SyntheticImages' scenes
    "episode-list": 5_000_003, "label-kind": 5_000_004,  # data.EvaluationEpisodes
    "video-layout": 5_000_011, "video-noise": 5_000_012,  # synthetic.SyntheticVideos
    "part-episode-list": 5_000_021, "part-label-kind": 5_000_022, "part-training": 5_000_023,  # pascal_part.py
    "fabricated-parts": 5_000_024,  # benchmarks/make_pascal_part.py
    "tiny-sam-train": 7_000_001, "tiny-sam-held-out": 7_000_002,  # pretrain_tiny_sam.py
    "tiny-sam2-train": 7_000_011, "tiny-sam2-video-train": 7_000_012,  # pretrain_tiny_sam2.py
    "tiny-sam2-video-held-out": 7_000_013,  # (its held-out scenes are pretrain_tiny_sam.py's)
    "tiny-sam-distill-train": 7_000_021,  # distill_tiny_sam.py (its held-out scenes are pretrain_tiny_sam.py's)
    "demo": 7_100_001,  # segment.py --demo
    "tiny-backbone-train": 8_000_001, "tiny-backbone-held-out": 8_000_002,  # pretrain_tiny_backbone.py
    "gp-sam": 9_000_001, "wrong-reference": 9_000_002,  # baselines.py
}


@dataclass(frozen=True)
class StrokePreset:
    """One setting of the free-form stroke generator (parameter names of SEEM's presets).

    n_vertex_bound: (low, high) the stroke takes ``integers(low, high)`` random-walk steps, so it
        is a polyline of that many + 1 vertices (high exclusive, as in the original generator).
    max_head_speed: the head's speed (pixels per step) is clipped to [0, max_head_speed].
    max_head_acceleration: (speed, angle) the largest change of speed (px) and heading (rad) per step.
    brush_width_bound: (low, high) the brush width is ``integers(int(low), int(high))`` pixels.
    """

    n_vertex_bound: tuple[int, int]
    max_head_speed: float
    max_head_acceleration: tuple[float, float]
    brush_width_bound: tuple[float, float]


# The two presets SEEM (and the VRP-SAM code) draw from with probability 0.5 each. The original
# generator's other fields (maxInitSpeed, nMovePointRatio, maxPiontMove, maxLineAcceleration) only
# move a finished stroke to make the next frame of a video mask; see _stroke_vertices.
STROKE_PRESETS: tuple[tuple[str, StrokePreset], ...] = (
    ("rand_curve", StrokePreset(n_vertex_bound=(10, 30), max_head_speed=20.0,
                                max_head_acceleration=(15.0, 0.5), brush_width_bound=(3, 10))),
    ("rand_curve_small", StrokePreset(n_vertex_bound=(6, 22), max_head_speed=12.0,
                                      max_head_acceleration=(8.0, 0.5), brush_width_bound=(2.5, 5))),
)


@dataclass(frozen=True, eq=False)
class Annotation:
    """A simulated user label of one reference object.

    kind: one of LABEL_KINDS.
    mask: (H, W) uint8 in {0, 1}, the label as the VRP encoder consumes it: the clicked pixels,
        the strokes clipped to the object, the filled box, or the object.
    points: (P, 2) int64 (x, y) pixel coordinates of the clicks; shape (0, 2) unless kind == "point".
    box: (x0, y0, x1, y1) inclusive pixel bounds, only for kind == "box", else None.
    strokes: for kind == "scribble", one (V, 2) float64 (x, y) polyline per stroke as drawn (the
        random walk's vertices rounded to pixel centres), its first vertex the (labelled) object
        pixel the stroke starts at; empty otherwise.
    widths: brush width in pixels of each stroke, aligned with ``strokes``.
    """

    kind: str
    mask: np.ndarray
    points: np.ndarray
    box: tuple[int, int, int, int] | None
    strokes: tuple[np.ndarray, ...]
    widths: tuple[float, ...]

    def __eq__(self, other: object) -> bool:
        # The generated __eq__ would compare arrays with ==, whose truth value is ambiguous.
        if not isinstance(other, Annotation):
            return NotImplemented
        return (
            self.kind == other.kind
            and np.array_equal(self.mask, other.mask)
            and np.array_equal(self.points, other.points)
            and self.box == other.box
            and len(self.strokes) == len(other.strokes)
            and all(np.array_equal(a, b) for a, b in zip(self.strokes, other.strokes))
            and self.widths == other.widths
        )


def episode_rng(seed: int, *keys: int) -> np.random.Generator:
    """The generator for one draw, keyed by what it is for, not by how many draws came before.

    Evaluation uses ``episode_rng(seed, episode_index, reference_index)``, so an episode's
    annotation is the same whatever the batch size, worker count or episode order.
    """
    for value in (seed, *keys):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(
                f"episode_rng: seed and keys must be non-negative integers, got {(seed, *keys)!r}"
            )
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def simulate_annotation(object_mask: Any, kind: str, rng: np.random.Generator) -> Annotation:
    """Simulate the user label of one object (paper §5.1; Appendix A).

    object_mask: (H, W) numpy array or torch tensor, bool or with values in {0, 1, 255}; the object
        is the pixels equal to 1 and 255 marks "ignore" pixels (PASCAL boundaries), never labelled
        as object by a point or a scribble. A box is a box: ignore pixels inside it are labelled.
    kind: one of LABEL_KINDS.
    rng: the only source of randomness (see episode_rng).

    Raises ValueError, saying what is accepted, for an unknown kind, a mask that is not 2-D, values
    outside {0, 1, 255}, or an object without a pixel.
    """
    if kind not in LABEL_KINDS:
        raise ValueError(f"unknown label kind {kind!r}: expected one of {', '.join(LABEL_KINDS)}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. prompts.episode_rng(seed, episode)), "
            f"got {type(rng).__name__}"
        )
    obj = _object_pixels(object_mask)
    if kind == "point":
        return _simulate_points(obj, rng)
    if kind == "scribble":
        return _simulate_scribble(obj, rng)
    if kind == "box":
        return _simulate_box(obj)
    return Annotation(kind="mask", mask=obj.astype(np.uint8), points=_no_points(),
                      box=None, strokes=(), widths=())


def _object_pixels(object_mask: Any) -> np.ndarray:
    """(H, W) bool, True on the object; validates the input as simulate_annotation documents."""
    if hasattr(object_mask, "detach"):  # a torch tensor, without making torch a dependency here
        object_mask = object_mask.detach().cpu().numpy()
    mask = np.asarray(object_mask)
    if mask.ndim != 2:
        raise ValueError(
            f"object_mask must be 2-D (H, W), got {mask.ndim}-D with shape {tuple(mask.shape)}; "
            "pass one object's mask, not a batch or an image with channels"
        )
    if mask.dtype == np.bool_:
        obj = mask
    elif mask.dtype.kind in "uif":
        obj = mask == 1
        valid = obj | (mask == 0) | (mask == IGNORE)
        if not valid.all():
            bad = np.unique(mask[~valid])
            shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
            raise ValueError(
                f"object_mask has values {{{shown}}} besides 0, 1 and {IGNORE}: expected a "
                f"binary mask (bool, or 0/1 with {IGNORE} = ignore); for a class-label map "
                "pass (labels == class_id) with the 255 pixels kept"
            )
    else:
        raise ValueError(
            f"object_mask has dtype {mask.dtype}: expected bool or an integer/float 0/1/255 mask"
        )
    if not obj.any():
        raise ValueError(
            f"object_mask of shape {tuple(mask.shape)} has no object pixel (no value equal to 1): "
            "a label can only be simulated for an object with at least one pixel"
        )
    return obj


def _no_points() -> np.ndarray:
    return np.zeros((0, 2), dtype=np.int64)


def _simulate_points(obj: np.ndarray, rng: np.random.Generator) -> Annotation:
    """1..min(MAX_POINTS, area) clicks, uniformly without replacement on the object."""
    flat = np.flatnonzero(obj)
    n_points = int(rng.integers(1, min(MAX_POINTS, flat.size) + 1))
    chosen = flat[rng.choice(flat.size, size=n_points, replace=False)]
    ys, xs = np.divmod(chosen, obj.shape[1])
    label = np.zeros(obj.shape, dtype=np.uint8)
    label[ys, xs] = 1
    points = np.stack([xs, ys], axis=1).astype(np.int64)
    return Annotation(kind="point", mask=label, points=points, box=None, strokes=(), widths=())


def _simulate_scribble(obj: np.ndarray, rng: np.random.Generator) -> Annotation:
    """1..min(MAX_STROKES, area) free-form strokes from distinct object pixels, AND-ed with the object.

    One preset per annotation, as in the VRP-SAM and SEEM code; each stroke draws its own length,
    width and random walk.
    """
    height, width = obj.shape
    _, preset = STROKE_PRESETS[int(rng.integers(len(STROKE_PRESETS)))]
    flat = np.flatnonzero(obj)
    n_strokes = int(rng.integers(1, min(MAX_STROKES, flat.size) + 1))
    start_ys, start_xs = np.divmod(flat[rng.choice(flat.size, size=n_strokes, replace=False)], width)

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    strokes, widths = [], []
    for x, y in zip(start_xs.tolist(), start_ys.tolist()):
        brush = int(rng.integers(int(preset.brush_width_bound[0]), int(preset.brush_width_bound[1])))
        vertices = _stroke_vertices(x, y, preset, width=width, height=height, rng=rng)
        _draw_stroke(draw, vertices, brush)
        strokes.append(vertices)
        widths.append(float(brush))

    label = np.asarray(canvas, dtype=np.uint8) & obj
    # Tiny brushes can rasterise without the centre pixel; the click that started a stroke is
    # on the object by construction and is always part of the label.
    label[start_ys, start_xs] = 1
    return Annotation(kind="scribble", mask=label.astype(np.uint8), points=_no_points(), box=None,
                      strokes=tuple(strokes), widths=tuple(widths))


def _stroke_vertices(x: int, y: int, preset: StrokePreset, *, width: int, height: int,
                     rng: np.random.Generator) -> np.ndarray:
    """(V, 2) float64 (x, y) vertices of one stroke's random walk (Yu et al. 2019, Alg. 1).

    The head starts at (x, y) with a uniform heading and a uniform speed in [0, max_head_speed];
    each step adds a uniform speed change and heading change bounded by max_head_acceleration,
    clips the speed to [0, max_head_speed], moves, and clips the head to the image. Unlike the
    original video-mask generator, the finished stroke is not then translated and jittered as
    the next video frame, so its first vertex stays on the clicked object pixel. The walk runs in
    continuous coordinates; the returned vertices are rounded to pixel centres.
    """
    n_steps = int(rng.integers(*preset.n_vertex_bound))
    max_speed = preset.max_head_speed
    d_speed, d_angle = preset.max_head_acceleration
    angle = float(rng.uniform(0.0, 2.0 * math.pi))
    speed = float(rng.uniform(0.0, max_speed))
    speed_changes = rng.uniform(-d_speed, d_speed, size=n_steps).tolist()
    angle_changes = rng.uniform(-d_angle, d_angle, size=n_steps).tolist()

    vertices = np.empty((n_steps + 1, 2), dtype=np.float64)
    vertices[0] = (x, y)
    head_x, head_y = float(x), float(y)
    for step in range(n_steps):
        speed = min(max(speed + speed_changes[step], 0.0), max_speed)
        angle += angle_changes[step]
        head_x = min(max(head_x + speed * math.cos(angle), 0.0), width - 1.0)
        head_y = min(max(head_y + speed * math.sin(angle), 0.0), height - 1.0)
        vertices[step + 1] = (head_x, head_y)
    # PIL rasterises a wide line from integer coordinates; rounding here makes the returned
    # polyline the one actually drawn, so every labelled pixel lies within width/2 + 1 of it.
    return np.rint(vertices)


def _draw_stroke(draw: ImageDraw.ImageDraw, vertices: np.ndarray, brush: int) -> None:
    """Draw a polyline with a round brush of ``brush`` pixels: curved joints, disc at each vertex."""
    xy = [tuple(v) for v in vertices.tolist()]
    draw.line(xy, fill=1, width=brush, joint="curve")
    # Discs at the vertices give round caps and cover sharp turns the joint leaves open; their
    # radius is the authors' (SEEM's) brush // 2 - 1, a pixel under the line's half width.
    radius = max(brush // 2 - 1, 0)
    for vx, vy in xy:
        draw.ellipse((vx - radius, vy - radius, vx + radius, vy + radius), fill=1)


def _simulate_box(obj: np.ndarray) -> Annotation:
    """The tight bounding box, filled; ignore pixels inside it are part of the box label."""
    rows = np.flatnonzero(obj.any(axis=1))
    cols = np.flatnonzero(obj.any(axis=0))
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]), int(rows[0]), int(rows[-1])
    label = np.zeros(obj.shape, dtype=np.uint8)
    label[y0:y1 + 1, x0:x1 + 1] = 1
    return Annotation(kind="box", mask=label, points=_no_points(), box=(x0, y0, x1, y1),
                      strokes=(), widths=())


# --- pictures: masks drawn over images, in the colours every script uses -------------------------

ANNOTATION_COLOUR = (60, 255, 60)  # a reference's annotation: green
PREDICTION_COLOUR = (255, 0, 255)  # a predicted mask: magenta
TRUTH_COLOUR = (0, 230, 255)  # the ground truth: cyan


def tint_mask(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """(H, W, 3) uint8 `image` with the (H, W) bool `mask` tinted and outlined in `colour`; the
    outline stays readable on objects of any colour."""
    out = image.astype(np.float32)
    out[mask] = 0.55 * out[mask] + 0.45 * np.asarray(colour, np.float32)
    outline = ndimage.binary_dilation(mask, iterations=2) & ~mask
    out[outline] = colour
    return out.astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 (H, W) or (H, W, 3) array as PNG bytes, fast to write (pictures are for looking at)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# --- command line: draw one simulated label over a label PNG ------------------------------------

_BACKGROUND = np.array((24, 24, 24), dtype=np.uint8)
_OBJECT = np.array((60, 110, 180), dtype=np.uint8)
_IGNORE = np.array((128, 128, 128), dtype=np.uint8)
_LABEL = np.array((255, 210, 0), dtype=np.uint8)


def render_overlay(object_mask: np.ndarray, annotation: Annotation) -> np.ndarray:
    """(H, W, 3) uint8 picture of a 0/1/255 object mask with its annotation drawn on top.

    Object tinted blue, ignore pixels grey, the label in yellow: solid for strokes, half-blended
    for dense labels (box, mask) so the object stays visible, and points as small discs.
    """
    mask = np.asarray(object_mask)
    picture = np.broadcast_to(_BACKGROUND, mask.shape + (3,)).copy()
    picture[mask == 1] = _OBJECT
    picture[mask == IGNORE] = _IGNORE
    labelled = annotation.mask.astype(bool)
    if annotation.kind in ("box", "mask"):
        picture[labelled] = picture[labelled] // 2 + _LABEL // 2
    else:
        picture[labelled] = _LABEL
    image = Image.fromarray(picture)
    draw = ImageDraw.Draw(image)
    if annotation.box is not None:
        draw.rectangle(annotation.box, outline=tuple(_LABEL.tolist()), width=2)
    radius = max(2, min(mask.shape) // 128)
    for x, y in annotation.points.tolist():
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=tuple(_LABEL.tolist()))
    return np.asarray(image)


def demo_object_mask(height: int = 384, width: int = 512) -> np.ndarray:
    """(H, W) uint8 example object: a filled ellipse (1) with a 255 "ignore" border, 0 elsewhere."""
    ys, xs = np.mgrid[0:height, 0:width]
    radius = ((xs - 0.55 * width) / (0.32 * width)) ** 2 + ((ys - 0.5 * height) / (0.3 * height)) ** 2
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[radius <= 1.08] = IGNORE
    mask[radius <= 1.0] = 1
    return mask


def _object_mask_from_png(parser: argparse.ArgumentParser, path: Path, class_id: int | None) -> tuple[np.ndarray, str]:
    """(H, W) uint8 0/1/255 object mask from a label PNG, and how the file was read.

    A palette PNG (VOC style) or a grayscale one with class ids is a label map: 0 background,
    255 ignore. A non-palette PNG whose only values are 0 and 255 is an ordinary binary mask, its
    255 pixels the object (without --class-id; with it, the file is read as a label map).
    """
    if not path.is_file():
        parser.error(f"--mask {path}: file not found (expected a label PNG such as "
                     "VOC2012/SegmentationClass/2007_000032.png; or use --demo)")
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "1", "I", "I;16"):
                parser.error(f"--mask {path}: image mode {image.mode} is not a label map; expected a "
                             "palette (P) or grayscale (L) PNG of class ids, 255 = ignore")
            palette = image.mode == "P"
            labels = np.asarray(image).astype(np.int64)
    except OSError as error:
        parser.error(f"--mask {path}: cannot read it as an image ({error})")
    if not palette and class_id is None and set(np.unique(labels).tolist()) == {0, IGNORE}:
        reading = f"a binary mask (0 background, {IGNORE} object)"
        return (labels == IGNORE).astype(np.uint8), reading
    target = f"class {class_id}" if class_id is not None else "every other value"
    reading = f"a label map (0 background, {target} object, {IGNORE} ignore)"
    ignore = labels == IGNORE
    if class_id is None:
        obj = (labels != 0) & ~ignore
        if not obj.any():
            parser.error(f"--mask {path}: no object pixel (every pixel is 0 or {IGNORE})")
    else:
        obj = labels == class_id
        if not obj.any():
            present = sorted(set(np.unique(labels).tolist()) - {0, IGNORE})
            parser.error(f"--mask {path}: no pixel has class id {class_id}; "
                         f"class ids present: {present or 'none'}")
    mask = np.zeros(labels.shape, dtype=np.uint8)
    mask[ignore] = IGNORE
    mask[obj] = 1
    return mask, reading


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(
        prog="prompts.py",
        description="Draw one simulated user label (point / scribble / box / mask) over a label PNG.",
        formatter_class=cli.HelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--mask", type=Path, help="label PNG: 0 background, class ids, 255 ignore")
    source.add_argument("--demo", action="store_true", help="use a built-in ellipse object with a 255 border")
    parser.add_argument("--class-id", type=cli.int_range(1, IGNORE - 1), default=None,
                        help="object = pixels of this class (default: every non-zero, non-255 pixel; "
                             "in a plain 0/255 mask, the 255 pixels)")
    parser.add_argument("--kind", choices=LABEL_KINDS, default="scribble", help="simulated label kind")
    parser.add_argument("--seed", type=cli.nonnegative_int, default=0, help="same seed, same label")
    parser.add_argument("--out", type=Path, default=Path("overlay.png"), help="RGB overlay PNG to write")
    args = parser.parse_args(argv)

    if args.demo:
        object_mask, reading = demo_object_mask(), "the demo ellipse (1 object, 255 ignore border)"
    else:
        object_mask, reading = _object_mask_from_png(parser, args.mask, args.class_id)
        print(f"{args.mask}: read as {reading}")
    annotation = simulate_annotation(object_mask, args.kind, episode_rng(args.seed))
    cli.write_atomic(args.out, png_bytes(render_overlay(object_mask, annotation)))

    labelled = int(annotation.mask.sum())
    area = int((object_mask == 1).sum())
    if annotation.kind == "point":
        what = f"{len(annotation.points)} points"
    elif annotation.kind == "scribble":
        what = (f"{len(annotation.strokes)} strokes, brush {min(annotation.widths):g}-"
                f"{max(annotation.widths):g} px")
    elif annotation.kind == "box":
        what = "box (x0, y0, x1, y1) = {}".format(annotation.box)
    else:
        what = "the object mask"
    print(f"{annotation.kind}: {what}; {labelled} labelled pixels "
          f"(object {area} px, image {object_mask.shape[1]}x{object_mask.shape[0]}) -> {args.out}")


if __name__ == "__main__":
    main()
