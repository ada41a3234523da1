"""The embedded synthetic benchmark: scenes rendered from a seed, no files (docs/synthetic.md).

Twenty classes, each a shape (disk, square, triangle, ring, cross) crossed with an appearance (red
solid, green stripes, blue checker, yellow dots), so that neither colour nor outline alone names a
class; fold i tests classes 5i+1..5i+5 like PASCAL-5i (``data.fold_classes``). Distractors use
colours no class has. The renderer also serves the tiny models' pre-training scripts, each from a
seed stream of its own, never the benchmark's images.

Exposes ``synthetic_scene`` (one scene from a generator), ``synthetic_class`` and the class tables,
``SyntheticScene``, and ``SyntheticImages`` (the benchmark's train / test images, an image source
for ``data.build_dataset``); ``SyntheticVideos`` (moving, scaling, occluding objects over 10-20
frames, a video source for video.py like ``data.DavisVideos``), built from
``synthetic_video_layout`` and ``render_video_frame``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from prompts import IGNORE, SEED_STREAMS

# Seed-sequence keys of the benchmark's images. numpy treats trailing zero keys as absent
# ([s, 0] == [s]), so streams are large constants that no epoch, episode or image index reaches:
# data.py's episode list uses 5_000_003, pretrain_tiny_sam.py 7_000_00x, pretrain_tiny_sam2.py 7_000_01x.


SYNTHETIC_SHAPES = ("disk", "square", "triangle", "ring", "cross")
# (name, base RGB, texture). The textures make "appearance" more than a hue.
SYNTHETIC_APPEARANCES = (
    ("red", (215, 45, 40), "solid"), ("green", (40, 170, 60), "stripes"), ("blue", (40, 80, 215), "checker"),
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
            draw.polygon(
                polygon([(arm, base + s) for s in (corner, math.pi - corner, math.pi + corner, -corner)]), fill=1
            )
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
    rng: np.random.Generator, *, classes: Sequence[int], num_distractors: int = 2, size: int = 128,
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
            label[ring] = IGNORE

    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return SyntheticScene(image=image, label=label, instances=tuple(instances), classes=tuple(instance_classes))


class SyntheticImages:
    """The embedded benchmark's images: image j of `split` is rendered from
    default_rng([seed, stream(split), j]) with 1-3 distinct classes and 0-3 distractors.

    The class list is drawn first, so the image -> classes index needs no rendering. Each process
    renders an image once and keeps it (64 KiB at 128 px): training reads every image every epoch,
    and rendering is most of what a DataLoader worker would otherwise do (about 5 ms an image).
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
        self._rendered: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _rng(self, j: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SEED_STREAMS[f"synthetic-{self.split}"], j])

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
        """(S, S, 3) uint8 RGB image and its (S, S) uint8 label map (0..20, 255 rings); copies, so a
        caller may change them without changing what the next call returns."""
        if image_id not in self._rendered:
            scene = self.scene(image_id)
            self._rendered[image_id] = scene.image, scene.label
        image, label = self._rendered[image_id]
        return image.copy(), label.copy()


# ---------------------------------------------------------------------------------------------
# Synthetic videos (for video.py, Table 16's protocol without a download): a few class objects
# and distractors that move, bounce, scale, spin and pass in front of each other over 10-20
# frames. Each class object is an instance with its own id (1..n), and two of them may share a
# class, so that, as in DAVIS, following one instance is more than finding its class.
# ---------------------------------------------------------------------------------------------



@dataclass(frozen=True)
class VideoObject:
    """One moving object. Position, size and angle at frame t:
    centre = start + t * velocity, bounced back into the middle 80% of the image;
    radius = radius0 * (1 + scale_amplitude * sin(2π t / scale_period)); angle = angle0 + t * spin."""

    object_id: int  # 1..n for class objects, 0 for distractors (background in the annotation)
    class_id: int  # 0 for distractors
    shape: str
    rgb: tuple[int, int, int]
    texture: str
    texture_seed: int
    start: tuple[float, float]
    velocity: tuple[float, float]
    radius0: float
    scale_amplitude: float
    scale_period: float
    angle0: float
    spin: float


@dataclass(frozen=True)
class VideoLayout:
    """A video's objects, back to front (later ones occlude earlier ones), and its frame count."""

    objects: tuple[VideoObject, ...]
    background_seed: int
    num_frames: int


def _bounce(x: float, low: float, high: float) -> float:
    """x reflected into [low, high], like a ball between two walls."""
    span = high - low
    y = (x - low) % (2 * span)
    return low + (y if y <= span else 2 * span - y)


def synthetic_video_layout(rng: np.random.Generator, *, classes: Sequence[int], num_distractors: int,
                           num_frames: int, size: int = 128) -> VideoLayout:
    """Draw the objects of a video: one class object per entry of `classes` (repeats allowed: two
    instances of a class) and `num_distractors` distractors, placed without overlap in frame 0 so
    every class object is fully visible there; speeds of 1-3.5 px per frame, sizes swinging by
    up to 30%, a random depth order."""
    placed: list[tuple[float, float, float]] = []
    specs = []

    def place(low: float, high: float) -> tuple[float, float, float] | None:
        for attempt in range(80):
            r = rng.uniform(low, high) * size * (0.985 ** attempt)
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            if all(math.hypot(cx - x, cy - y) > r + rr + 2 for x, y, rr in placed):
                return cx, cy, r
        return None

    for object_id, class_id in enumerate(classes, start=1):
        spot = place(0.10, 0.17) or (*rng.uniform(0.3 * size, 0.7 * size, 2), 0.08 * size)
        shape, appearance = synthetic_class(class_id)
        _, rgb, texture = next(a for a in SYNTHETIC_APPEARANCES if a[0] == appearance)
        specs.append((object_id, int(class_id), shape, rgb, texture, spot))
        placed.append(spot)
    for _ in range(num_distractors):
        spot = place(0.07, 0.14)
        if spot is None:
            continue
        shape = SYNTHETIC_SHAPES[rng.integers(len(SYNTHETIC_SHAPES))]
        rgb = DISTRACTOR_COLOURS[rng.integers(len(DISTRACTOR_COLOURS))]
        texture = ("solid", "stripes", "checker", "dots")[rng.integers(4)]
        specs.append((0, 0, shape, rgb, texture, spot))
        placed.append(spot)

    objects = []
    for object_id, class_id, shape, rgb, texture, (cx, cy, r) in specs:
        speed, heading = rng.uniform(1.0, 3.5), rng.uniform(0, 2 * math.pi)
        objects.append(VideoObject(
            object_id=object_id, class_id=class_id, shape=shape, rgb=tuple(rgb), texture=texture,
            texture_seed=int(rng.integers(2 ** 31)), start=(float(cx), float(cy)),
            velocity=(speed * math.cos(heading), speed * math.sin(heading)), radius0=float(r),
            scale_amplitude=float(rng.uniform(0, 0.3)), scale_period=float(rng.uniform(8, 20)),
            angle0=float(rng.uniform(0, 2 * math.pi)), spin=float(rng.uniform(-0.15, 0.15))))
    order = rng.permutation(len(objects))
    return VideoLayout(objects=tuple(objects[i] for i in order), background_seed=int(rng.integers(2 ** 31)),
                       num_frames=int(num_frames))


def render_video_frame(layout: VideoLayout, t: int, *, size: int = 128,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Frame t of a video: (S, S, 3) uint8 RGB and (S, S) uint8 annotation (0 background and
    distractors, 1..n the visible part of each class object). rng: the frame's pixel noise."""
    image = _background(size, np.random.default_rng(layout.background_seed))
    annotation = np.zeros((size, size), np.uint8)
    for obj in layout.objects:  # back to front
        cx = _bounce(obj.start[0] + t * obj.velocity[0], 0.1 * size, 0.9 * size)
        cy = _bounce(obj.start[1] + t * obj.velocity[1], 0.1 * size, 0.9 * size)
        r = obj.radius0 * (1 + obj.scale_amplitude * math.sin(2 * math.pi * t / obj.scale_period))
        mask = _shape_mask(obj.shape, size, cx, cy, r, obj.angle0 + t * obj.spin)
        # the pattern moves with the object
        pattern = _texture(obj.texture, obj.rgb, size, np.random.default_rng(obj.texture_seed))
        pattern = np.roll(pattern, (round(cy - obj.start[1]), round(cx - obj.start[0])), axis=(0, 1))
        image[mask] = pattern[mask]
        annotation[mask] = obj.object_id
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return image, annotation


class SyntheticVideos:
    """A video source like data.DavisVideos, rendered from a seed: video j is drawn from
    default_rng([seed, layout stream, j]), its frame t's noise from default_rng([seed, noise stream, j, t]).

    classes: the classes its objects are drawn from (video.py uses a fold's test classes, unseen
    in training). Each video has 2-3 class objects (in 40% of videos the first two share a class),
    1-3 distractors and num_frames[0]..num_frames[1] frames of size x size pixels.
    Sequences are named "video000", ...; frames "00000", ... as in DAVIS.
    """

    def __init__(self, *, classes: Sequence[int], seed: int = 0, num_videos: int = 30,
                 num_frames: tuple[int, int] = (10, 20), size: int = 128):
        if num_videos < 1:
            raise ValueError(f"num_videos must be positive, got {num_videos}")
        if len(set(classes)) < 3 or not all(1 <= c <= SYNTHETIC_NUM_CLASSES for c in classes):
            raise ValueError(f"classes must be at least 3 distinct synthetic class ids, got {list(classes)}")
        if not 3 <= num_frames[0] <= num_frames[1]:
            raise ValueError(f"num_frames must be (low, high) with 3 <= low <= high, got {num_frames}")
        self.classes, self.seed, self.size, self.num_frames = (
            tuple(int(c) for c in classes), int(seed), int(size), num_frames,
        )
        self.sequences = tuple(f"video{j:03d}" for j in range(num_videos))
        # the cache key names everything that decides the pixels (v1: this renderer)
        self.name = f"synthetic-video-v1-s{seed}-c{'.'.join(map(str, self.classes))}-{size}px"
        self.location = f"the synthetic videos of seed {seed}"
        self._layouts = {s: self._layout(j) for j, s in enumerate(self.sequences)}

    def _layout(self, j: int) -> VideoLayout:
        rng = np.random.default_rng([self.seed, SEED_STREAMS["video-layout"], j])
        count = int(rng.integers(2, 4))
        chosen = [int(c) for c in rng.choice(self.classes, size=count, replace=False)]
        if rng.random() < 0.4:
            chosen[1] = chosen[0]  # two instances of one class
        num_frames = int(rng.integers(self.num_frames[0], self.num_frames[1] + 1))
        return synthetic_video_layout(rng, classes=chosen, num_distractors=int(rng.integers(1, 4)),
                                      num_frames=num_frames, size=self.size)

    def layout(self, sequence: str) -> VideoLayout:
        return self._layouts[sequence]

    def frame_ids(self, sequence: str) -> tuple[str, ...]:
        return tuple(f"{t:05d}" for t in range(self._layouts[sequence].num_frames))

    def image_id(self, sequence: str, index: int) -> str:
        return f"{self.name}/{sequence}/{index:05d}"

    def load_frame(self, sequence: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(S, S, 3) uint8 RGB frame and its (S, S) uint8 annotation (0 background, 1..n objects)."""
        j = self.sequences.index(sequence)
        rng = np.random.default_rng([self.seed, SEED_STREAMS["video-noise"], j, index])
        return render_video_frame(self._layouts[sequence], index, size=self.size, rng=rng)
