"""The embedded synthetic benchmark: scenes rendered from a seed, no files (README, "The embedded
synthetic benchmark").

Twenty classes, each a shape (disk, square, triangle, ring, cross) crossed with an appearance (red
solid, green stripes, blue checker, yellow dots), so that neither colour nor outline alone names a
class; fold i tests classes 5i+1..5i+5 like PASCAL-5i (``data.fold_classes``). Distractors use
colours no class has. The renderer also serves the tiny models' pre-training scripts, each from a
seed stream of its own, never the benchmark's images.

Exposes ``synthetic_scene`` (one scene from a generator), ``synthetic_class`` and the class tables,
``SyntheticScene``, and ``SyntheticImages`` (the benchmark's train / test images, an image source
for ``data.build_dataset``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

# Seed-sequence keys of the benchmark's images. numpy treats trailing zero keys as absent
# ([s, 0] == [s]), so streams are large constants that no epoch, episode or image index reaches:
# data.py's episode list uses 5_000_003, pretrain_tiny_sam.py 7_000_00x.
SYNTHETIC_STREAMS = {"train": 5_000_001, "test": 5_000_002}


SYNTHETIC_SHAPES = ("disk", "square", "triangle", "ring", "cross")
# (name, base RGB, texture). The textures make "appearance" more than a hue.
SYNTHETIC_APPEARANCES = (
    ("red", (215, 45, 40), "solid"),
    ("green", (40, 170, 60), "stripes"),
    ("blue", (40, 80, 215), "checker"),
    ("yellow", (225, 200, 40), "dots"),
)
# Distractors use colours no class has, so they are never a class by accident.
DISTRACTOR_COLOURS = ((150, 60, 170), (60, 200, 210), (235, 130, 30), (128, 128, 128), (240, 240, 240))
SYNTHETIC_NUM_CLASSES = 20


def synthetic_class(class_id: int) -> tuple[str, str]:
    """(shape, appearance name) of synthetic class `class_id` in 1..20.

    Class i (0-based) has shape i % 5 and appearance (i % 5 + i // 5) % 4: every fold of five
    consecutive classes (like PASCAL-5i) holds all five shapes and a mix of appearances, and the
    20 (shape, appearance) pairs are distinct.
    """
    if not 1 <= class_id <= SYNTHETIC_NUM_CLASSES:
        raise ValueError(f"synthetic class ids are 1..{SYNTHETIC_NUM_CLASSES}, got {class_id}")
    i = class_id - 1
    return SYNTHETIC_SHAPES[i % 5], SYNTHETIC_APPEARANCES[(i % 5 + i // 5) % 4][0]


SYNTHETIC_CLASS_NAMES = tuple(" ".join(reversed(synthetic_class(c))) for c in range(1, 21))


@dataclass(frozen=True)
class SyntheticScene:
    """One rendered scene.

    image:     (S, S, 3) uint8 RGB.
    label:     (S, S) uint8: 0 background (distractors included), 1..20 class, 255 a 1-px ignore
               ring around every class object (like PASCAL's boundary label).
    instances: one (S, S) bool mask per drawn object, class objects first, then distractors.
    classes:   class id of each instance, 0 for a distractor.
    """

    image: np.ndarray
    label: np.ndarray
    instances: tuple[np.ndarray, ...]
    classes: tuple[int, ...]


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)

    def polygon(radii_angles: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(cx + rr * math.cos(a + angle), cy + rr * math.sin(a + angle)) for rr, a in radii_angles]

    if shape == "disk":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1)
        inner = 0.55 * r
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif shape == "square":
        draw.polygon(polygon([(r, k * math.pi / 2 + math.pi / 4) for k in range(4)]), fill=1)
    elif shape == "triangle":
        draw.polygon(polygon([(r, k * 2 * math.pi / 3 - math.pi / 2) for k in range(3)]), fill=1)
    elif shape == "cross":
        half = 0.38 * r  # half the arm width
        arm = math.hypot(r, half)
        corner = math.atan2(half, r)
        for base in (0.0, math.pi / 2):
            draw.polygon(polygon([(arm, base + s) for s in (corner, math.pi - corner, math.pi + corner, -corner)]), fill=1)
    else:
        raise ValueError(f"unknown synthetic shape {shape!r}; expected one of {SYNTHETIC_SHAPES}")
    return np.asarray(canvas, dtype=bool)


def _texture(texture: str, rgb: Sequence[int], size: int, rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) float32 fill pattern: the base colour with a darker second tone."""
    base = np.clip(np.asarray(rgb, np.float32) + rng.uniform(-20, 20, 3), 0, 255)
    dark = base * 0.45
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(5.0, 8.0)
    if texture == "solid":
        second = np.zeros((size, size), bool)
    elif texture == "stripes":
        theta = rng.uniform(0, math.pi)
        second = ((xx * math.cos(theta) + yy * math.sin(theta)) // (period / 2)) % 2 == 1
    elif texture == "checker":
        second = ((xx // (period / 2)) + (yy // (period / 2))) % 2 == 1
    elif texture == "dots":
        ox, oy = rng.uniform(0, period, 2)
        second = ((xx + ox) % period - period / 2) ** 2 + ((yy + oy) % period - period / 2) ** 2 < (period / 4) ** 2
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return np.where(second[..., None], dark, base)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth, muted colour field with pixel noise: clutter without any class's colours."""
    coarse = rng.uniform(70, 150, (4, 4, 3)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float32)
    grey = field.mean(axis=2, keepdims=True)
    return 0.6 * grey + 0.4 * field  # desaturated, so class hues stand out only as objects


def synthetic_scene(
    rng: np.random.Generator,
    *,
    classes: Sequence[int],
    num_distractors: int = 2,
    size: int = 128,
) -> SyntheticScene:
    """Render a scene with one object of each class in `classes` plus `num_distractors` distractors.

    Objects are placed without overlap (class objects first, so they are always present);
    a distractor that finds no free place is dropped. Radii are 9-22% of the image side.
    """
    image = _background(size, rng)
    label = np.zeros((size, size), np.uint8)
    placed: list[tuple[float, float, float]] = []
    instances: list[np.ndarray] = []
    instance_classes: list[int] = []

    def place(min_r: float) -> tuple[float, float, float] | None:
        for attempt in range(60):
            # shrink on repeated failure so class objects always fit
            r = rng.uniform(min_r, 0.22 * size) * (0.985 ** attempt)
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            if all(math.hypot(cx - x, cy - y) > r + rr + 2 for x, y, rr in placed):
                return cx, cy, r
        return None

    for class_id in classes:
        shape, appearance = synthetic_class(class_id)
        _, rgb, texture = next(a for a in SYNTHETIC_APPEARANCES if a[0] == appearance)
        spot = place(0.09 * size) or (*rng.uniform(0.3 * size, 0.7 * size, 2), 0.08 * size)
        placed.append(spot)
        mask = _shape_mask(shape, size, *spot, angle=rng.uniform(0, 2 * math.pi))
        image[mask] = _texture(texture, rgb, size, rng)[mask]
        label[mask] = class_id
        instances.append(mask)
        instance_classes.append(int(class_id))

    for _ in range(num_distractors):
        spot = place(0.07 * size)
        if spot is None:
            continue
        placed.append(spot)
        shape = SYNTHETIC_SHAPES[rng.integers(len(SYNTHETIC_SHAPES))]
        rgb = DISTRACTOR_COLOURS[rng.integers(len(DISTRACTOR_COLOURS))]
        texture = ("solid", "stripes", "checker", "dots")[rng.integers(4)]
        mask = _shape_mask(shape, size, *spot, angle=rng.uniform(0, 2 * math.pi))
        image[mask] = _texture(texture, rgb, size, rng)[mask]
        instances.append(mask)
        instance_classes.append(0)

    # PASCAL-style ignore ring just outside each class object.
    for mask, class_id in zip(instances, instance_classes):
        if class_id:
            ring = ndimage.binary_dilation(mask) & ~mask & (label == 0)
            label[ring] = 255

    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return SyntheticScene(image=image, label=label, instances=tuple(instances), classes=tuple(instance_classes))


class SyntheticImages:
    """The embedded benchmark's images: image j of `split` is rendered from
    default_rng([seed, stream(split), j]) with 1-3 distinct classes and 0-3 distractors.

    The class list is drawn first, so the image -> classes index needs no rendering.
    Ids look like "synthetic-s0/test/00012".
    """

    def __init__(self, *, seed: int, split: str, num_images: int, scene_size: int = 128):
        if num_images < 1:
            raise ValueError(f"num_images must be positive, got {num_images}")
        self.seed, self.split, self.scene_size = int(seed), split, int(scene_size)
        prefix = f"synthetic-s{seed}" + ("" if scene_size == 128 else f"-{scene_size}px")
        self.ids = tuple(f"{prefix}/{split}/{j:05d}" for j in range(num_images))
        self._number = {image_id: j for j, image_id in enumerate(self.ids)}
        self.location = f"the synthetic {split} images of seed {seed}"
        self.classes = {i: tuple(sorted(self._layout(self._rng(j))[0])) for j, i in enumerate(self.ids)}

    def _rng(self, j: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SYNTHETIC_STREAMS[self.split], j])

    @staticmethod
    def _layout(rng: np.random.Generator) -> tuple[list[int], int]:
        """The first draws of an image's generator: its classes and its number of distractors."""
        count = int(rng.integers(1, 4))
        classes = [int(c) for c in rng.choice(SYNTHETIC_NUM_CLASSES, size=count, replace=False) + 1]
        return classes, int(rng.integers(0, 4))

    def scene(self, image_id: str) -> SyntheticScene:
        rng = self._rng(self._number[image_id])
        classes, num_distractors = self._layout(rng)
        return synthetic_scene(rng, classes=classes, num_distractors=num_distractors, size=self.scene_size)

    def load(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(S, S, 3) uint8 RGB image and its (S, S) uint8 label map (0..20, 255 rings)."""
        scene = self.scene(image_id)
        return scene.image, scene.label
