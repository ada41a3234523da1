"""Segment your own images from an annotated reference: the use VRP-SAM is made for (paper Figs. 1, 5).

A person marks an object once, in one reference image (a mask, a few points, a box or a scribble:
the four kinds of §3.2), and a trained VRP encoder segments the same class in any number of target
images. k references give Table 7's k×50 prompts.

    python segment.py --checkpoint runs/pascal-fold0-mask-resnet50/best.pt \\
        --reference ref.jpg --mask ref.png --targets photos/ --out segmented/
    python segment.py --checkpoint ... --reference a.jpg --points "120,80;140,95" \\
        --reference b.jpg --box 10,20,200,180 --targets "frames/*.jpg" --out segmented/
    python segment.py --demo            # synthetic scenes, with the README's main-job checkpoint

Writes, per target, masks/<name>.png (0 / 255 at the target's own size), overlays/<name>.png (the
references with their annotation in green | the target with its mask in magenta) and one line of
results.jsonl. `--propagate` (beyond the paper, as Matcher and SegGPT do for video) adds each
frame's prediction as one more mask reference for the next frame. Images and annotation PNGs may be
in any mode Pillow opens, 16-bit and float ones included: each is read as an image viewer shows it
(read_image). Coordinates may be negative (`--points -1,3`): a point or box outside the reference
is refused, never clipped. A run folder moved to another machine is used with --sam-checkpoint and
--backbone-weights (or finds its files in checkpoints/ by fingerprint: model.find_moved_file).
`--sam` prompts another SAM of the run's decoder group (a ViT-H run on MobileSAM: `--sam vit_t`).

Exposes `VRPPredictor` (set references once, predict many targets; in the spirit of SAM's
SamPredictor), `Prediction`, `read_image` and `main`.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import math
import os
import re
import sys
import tempfile
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps, ImageSequence
from scipy import ndimage
from tqdm import tqdm

import cli
import data
from model import (
    SAM_TYPES, EmbeddingCache, ReferenceFeatures, VRPSAM, autocast, build_from_checkpoint, embed_targets, decode_masks,
    load_checkpoint, sam_family, sam_switch_problem, upsample_logits,
)
from prompts import (
    ANNOTATION_COLOUR, IGNORE, SEED_STREAMS, PREDICTION_COLOUR, png_bytes, simulate_annotation, tint_mask,
)
from synthetic import SYNTHETIC_CLASS_NAMES, SYNTHETIC_NUM_CLASSES, SyntheticScene, synthetic_scene
from video import (
    PARTIAL_MARKER, MemorySegmenter, check_output_folder, is_sam2, memory_logits, replace_atomically,
    tidy_interrupted_runs,
)

ROOT = Path(__file__).resolve().parent
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# The user's annotation kinds (CLI flags, API dict keys) and the training label kind each one is.
ANNOTATION_KINDS = {"mask": "mask", "points": "point", "box": "box", "scribble": "scribble"}

ImageLike = Union[str, Path, Image.Image, np.ndarray]
# --memory with --video (SAM 2 runs): VRP seeds SAM 2's memory in frame 0 ("first"), or also prompts every frame.
SEGMENT_MEMORY_MODES = ("first", "every")
# The video length SAM 2's memory is told for a stream of unknown length: with 16 or more frames it
# reads at most max_obj_ptrs_in_encoder (16) frames' pointers, so its masks are then those of any length.
MEMORY_STREAM_LENGTH = 16


# ---------------------------------------------------------------------------------------------
# Reading images and annotations as a person gives them.
# ---------------------------------------------------------------------------------------------

def read_image(source: ImageLike, name: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a file, a PIL image or an array, upright (EXIF orientation applied):
    the picture a person sees in an image viewer, whatever the mode or dtype.

    - 8-bit modes (1, L, LA, P, PA, RGB, RGBA, RGBX, CMYK, YCbCr, LAB, HSV, ...): Pillow's
      conversion to RGB. Alpha is dropped: the colours under transparent pixels are used as stored.
    - 16-bit greyscale (I;16, I;16B, ... and uint16 arrays): value / 257, rounded, so the full
      0..65535 range maps onto 0..255 as viewers show it (an 8-bit image saved as 16 bits, v * 257,
      comes back exactly).
    - 32-bit integer 'I' and float 'F' images (TIFFs): see _to_uint8 (kept where already in 0..255;
      'I' up to 65535 is 16-bit data, / 257; 'F' in [0, 1] is * 255; otherwise min-max stretched to
      0..255, as viewers show data with no fixed range).
    - arrays (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), channels last: bool (True = 255), uint8,
      uint16 (/ 257), other integers in 0..255, floats in [0, 1] (* 255) or [0, 255]; anything else
      is refused with the form expected (ValueError), as are NaN and infinite values. Other types
      are a TypeError.
    An image that cannot be read, or a mode Pillow cannot show as RGB, is refused in one line naming it.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name or "image array")
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source, name or "image")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"{name or 'image'}: expected a file path, a PIL image or an (H, W, 3) uint8 array, "
                        f"got {type(source).__name__}")
    path = Path(source)
    try:
        with Image.open(path) as pil:
            return _pil_to_rgb(pil, f"image {path}")
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} not found") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"image {path} is a folder, not an image file") from None
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"image {path} could not be read ({error}); is it a complete image file?") from error


# Pillow's one-band modes of more than 8 bits: their values, not Pillow's clipping conversion, are scaled to 8 bits.
_WIDE_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;16S")


def _pil_to_rgb(pil: Image.Image, name: str, *, upright: bool = True) -> np.ndarray:
    """read_image for a PIL image; upright: apply its EXIF orientation (not for annotations, drawn on
    the image as stored)."""
    pil = ImageOps.exif_transpose(pil) if upright else pil
    if pil.mode in _WIDE_MODES:
        grey = _to_uint8(np.asarray(pil), name, stretch=True)
        return np.repeat(grey[..., None], 3, axis=2)
    try:
        return np.array(pil.convert("RGB"))
    except ValueError:  # a mode Pillow converts to RGB only by way of RGBA (La, ...)
        try:
            return np.array(pil.convert("RGBA").convert("RGB"))
        except ValueError:
            raise ValueError(f"{name}: Pillow cannot show mode {pil.mode} as RGB; "
                             "save it as an 8-bit RGB or greyscale PNG or JPEG") from None


def _to_uint8(array: np.ndarray, name: str, *, stretch: bool = False) -> np.ndarray:
    """`array` (any shape) as uint8 values as a viewer shows them: bool True = 255; uint8 as is;
    uint16 / 257 (rounded); other integers kept when in 0..255; floats * 255 when in [0, 1], kept
    (rounded) when in [0, 255]. Other values are refused (ValueError naming `name` and the forms
    accepted) unless `stretch` (Pillow's 32-bit 'I' and 'F' images, which have no fixed range):
    then integers up to 65535 are 16-bit data (/ 257) and anything else is min-max stretched to 0..255."""
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "uif":
        raise ValueError(f"{name}: expected numbers (uint8, uint16, bool or float), got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values: expected finite numbers in [0, 1] or [0, 255]")
    low, high = array.min(), array.max()
    sixteen_bit = array.dtype.kind == "u" and array.dtype.itemsize == 2
    if array.dtype.kind in "iu" and not sixteen_bit and 0 <= low and high <= 255:
        return array.astype(np.uint8)
    if sixteen_bit or (stretch and array.dtype.kind in "iu" and 0 <= low and high <= 65535):
        return np.rint(array.astype(np.float64) / 257).astype(np.uint8)
    if array.dtype.kind == "f" and 0 <= low and high <= 255:
        return np.rint(array.astype(np.float64) * (255 if high <= 1 else 1)).astype(np.uint8)
    if not stretch:
        kind = "float" if array.dtype.kind == "f" else f"{array.dtype} integer"
        wanted = "[0, 1] or [0, 255]" if array.dtype.kind == "f" else "0..255 (pass 16-bit data as uint16)"
        raise ValueError(f"{name}: {kind} values span {low}..{high}; expected {wanted}, or a uint8 array")
    span = float(high) - float(low)
    scaled = (array.astype(np.float64) - float(low)) * (255 / span if span else 0)
    return np.rint(scaled).astype(np.uint8)


def _array_to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    shape = array.shape
    if array.ndim == 3 and shape[2] not in (1, 3, 4) and shape[0] in (1, 3, 4):
        raise ValueError(f"{name}: expected channels last, (H, W, 3), got {shape}: pass array.transpose(1, 2, 0)")
    if array.ndim not in (2, 3) or (array.ndim == 3 and shape[2] not in (1, 3, 4)):
        raise ValueError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image array, got shape {shape}")
    pixels = _to_uint8(np.asarray(array), name)
    if pixels.ndim == 2 or pixels.shape[2] == 1:
        return np.repeat(pixels.reshape(shape[0], shape[1], 1), 3, axis=2)
    return np.ascontiguousarray(pixels[..., :3])  # alpha dropped, as for files


# ---------------------------------------------------------------------------------------------
# Videos (--video): a folder of frames, an animated image or a video file, read one frame at a time.
# ---------------------------------------------------------------------------------------------

VIDEO_FORMS = ("a folder of frames (image files, taken in name order), an animated GIF / PNG / WebP, "
               "or a video file ffmpeg decodes (mp4, mov, avi, mkv, webm, ...)")


class VideoFrames:
    """The frames of a video, read lazily so that a long video is never held whole: a folder of
    image files in name order ("folder"), an animated image read by Pillow ("animation"), or a
    video file decoded by PyAV's ffmpeg ("file"). open_video makes one after checking every frame.

    names: one per frame, for its mask file (a folder's file stems, else 00000, 00001, ...);
    size: (width, height), the same for every frame. Iterating yields (H, W, 3) uint8 RGB frames.
    """

    def __init__(self, path: Path, kind: str, names: list[str], size: tuple[int, int],
                 files: list[Path] | None = None) -> None:
        self.path, self.kind, self.names, self.size, self.files = path, kind, names, size, files

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.kind == "folder":
            for file in self.files:
                yield read_image(file)
        elif self.kind == "animation":
            with Image.open(self.path) as pil:
                for frame in ImageSequence.Iterator(pil):
                    yield _pil_to_rgb(frame, f"--video {self.path}", upright=False)
        else:
            import av  # PyAV loads only for video files

            with av.open(str(self.path)) as container:
                for frame in container.decode(video=0):
                    yield frame.to_ndarray(format="rgb24")


def open_video(path: str | Path) -> VideoFrames:
    """The VideoFrames of `path` (see VIDEO_FORMS), after decoding every frame once: a file that
    cannot be decoded, a folder without images, a video without frames or frames of different
    sizes are refused in one line naming --video."""
    path = Path(path)
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, SyntaxError, Image.DecompressionBombError)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise ValueError(f"--video {path}: the folder holds no image ({', '.join(IMAGE_SUFFIXES)}); "
                             f"give {VIDEO_FORMS}")
        stems = [p.stem for p in files]
        if len(set(stems)) < len(stems):
            twice = next(s for s in stems if stems.count(s) > 1)
            raise ValueError(f"--video {path}: two frames are named {twice} (with different suffixes), and their "
                             "masks would share one file; keep one of them")
        video = VideoFrames(path, "folder", stems, (0, 0), files)
        named = zip((f.name for f in files), video)  # read_image names a frame it cannot read
    elif not path.exists():
        raise FileNotFoundError(f"--video {path}: no such file or folder; give {VIDEO_FORMS}")
    else:
        animation = path.suffix.lower() in IMAGE_SUFFIXES
        if not animation:
            try:
                import av  # PyAV loads only for video files
            except ImportError as error:
                raise ImportError(f"--video {path}: video files need PyAV ({error}): pip install -r requirements.txt") \
                    from error
            errors += (av.error.FFmpegError,)
        video = VideoFrames(path, "animation" if animation else "file", [], (0, 0))
        named = ((f"frame {t}", frame) for t, frame in enumerate(video))
    first, count = None, 0
    try:
        for name, frame in named:
            h, w = frame.shape[:2]
            if first is None:
                first, video.size = name, (w, h)
            elif (w, h) != video.size:
                raise ValueError(f"--video {path}: {name} is {w}x{h} but {first} is {video.size[0]}x{video.size[1]}; "
                                 "every frame of a video must have one size (resize them to one)")
            count += 1
    except errors as error:  # Pillow's and ffmpeg's decoding errors, whatever the cause: one line
        raise ValueError(f"--video {path} could not be decoded ({type(error).__name__}: {error}); "
                         f"give {VIDEO_FORMS}") from error
    if count == 0:
        raise ValueError(f"--video {path} holds no frame; give {VIDEO_FORMS}")
    if video.kind != "folder":
        video.names = [f"{t:05d}" for t in range(count)]
    return video


def _read_label_image(source, kind: str, class_id: int | None) -> tuple[np.ndarray, str]:
    """(H, W) bool object pixels of a mask / scribble given as a PNG path, a PIL image or an array,
    and its name for messages. In every mode, the object is what a person sees drawn:

    - with class_id: the pixels equal to it in a one-band label image (palette, greyscale, 16-bit);
    - with an alpha channel that is not uniform (strokes on a transparent canvas): alpha > 0;
    - one band (1, L, P, I;16, I, F, 2-D arrays of any dtype): non-zero pixels (a palette PNG's
      index 0 is its background, as in VOC labels);
    - colour (RGB, CMYK, YCbCr, LAB, HSV, an opaque RGBA, 3- or 4-channel arrays): non-black pixels
      as shown (in YCbCr, LAB and HSV: a lightness band Y, L or V above 0; black is not zero in the others).
    """
    if isinstance(source, (str, os.PathLike)):
        path, name = Path(source), f"--{kind} {source}"
        try:
            with Image.open(path) as pil:
                pil.load()
                return _object_pixels(pil, name, class_id), name
        except FileNotFoundError:
            raise FileNotFoundError(f"{name}: file not found") from None
        except (OSError, Image.DecompressionBombError) as error:
            raise ValueError(f"{name} could not be read as an image ({error})") from error
    name = f"the {kind} annotation"
    if not isinstance(source, (Image.Image, np.ndarray)):
        try:
            array = np.asarray(source)
        except (TypeError, ValueError):
            array = None
        if array is None or array.dtype == object:
            raise TypeError(f"{name}: expected a PNG path, a PIL image or an (H, W) array, "
                            f"got a {type(source).__name__}")
        source = array
    return _object_pixels(source, name, class_id), name


_ONE_BAND_MODES = ("1", "L", "P", *_WIDE_MODES)
_LIGHTNESS_BAND = {"YCbCr": 0, "LAB": 0, "HSV": 2}  # Y, L and V: 0 exactly where the pixel is black


def _object_pixels(source: Image.Image | np.ndarray, name: str, class_id: int | None) -> np.ndarray:
    if isinstance(source, Image.Image):
        mode, array = source.mode, np.asarray(source)
    else:
        array = source
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise ValueError(f"{name}: expected an (H, W) array (or (H, W, 3), (H, W, 4)), got shape {array.shape}")
        mode = "L" if array.ndim == 2 else "RGB" if array.shape[2] == 3 else "RGBA"
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected an (H, W) array of numbers (bool, uint8, ...), got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    if class_id is not None:
        if array.ndim != 2:
            raise ValueError(f"{name}: --class-id needs a one-band label image (palette or greyscale), got mode {mode}")
        obj = array == class_id
        if not obj.any():
            present = sorted(set(np.unique(array).tolist()) - {0})
            raise ValueError(f"{name}: no pixel has class id {class_id}; the values present are {present or 'only 0'}")
        return obj
    alpha = array[..., -1] if mode in ("LA", "La", "PA", "RGBA", "RGBa") else None
    if alpha is not None and alpha.min() != alpha.max():
        obj = alpha > 0
    elif mode in _ONE_BAND_MODES or mode in ("LA", "La", "PA"):  # a uniform alpha shows nothing: the band is the mask
        obj = (array if array.ndim == 2 else array[..., 0]) != 0
    elif mode in ("RGB", "RGBA", "RGBa", "RGBX"):
        obj = array[..., :3].any(axis=2)
    elif mode in _LIGHTNESS_BAND:  # black is not (0, 0, 0) in these modes, but its lightness is 0
        obj = array[..., _LIGHTNESS_BAND[mode]] != 0
    else:  # CMYK, ...: as shown in RGB
        obj = _pil_to_rgb(source, name, upright=False).any(axis=2)
    if not obj.any():
        raise ValueError(f"{name} has no object pixel (every pixel is black or 0): mark the object with "
                         "white or coloured pixels")
    return obj


@dataclass
class Reference:
    """One annotated reference at its own size: image (H, W, 3) uint8, kind (a key of
    ANNOTATION_KINDS), mask (H, W) bool (the annotated pixels: clicks, strokes, box, object) and,
    for points, their (x, y) coordinates."""

    image: np.ndarray
    kind: str
    mask: np.ndarray
    points: np.ndarray | None = None

    def network_label(self, size: int) -> np.ndarray:
        """(S, S) float32 in {0, 1}: the annotation as the VRP encoder saw it in training, where
        labels were simulated at S x S (data.py): points stay single pixels, masks and boxes are
        resized with nearest neighbour (keeping the cells a tiny object touches, as data.py), and
        scribbles keep every cell a stroke touches so thin strokes survive."""
        h, w = self.mask.shape
        label = np.zeros((size, size), np.float32)
        if self.kind == "points":
            xs = np.minimum((self.points[:, 0] + 0.5) * size / w, size - 1).astype(int)
            ys = np.minimum((self.points[:, 1] + 0.5) * size / h, size - 1).astype(int)
            label[ys, xs] = 1
            return label
        touched = data.resize_soft(self.mask, size) > 0
        if self.kind == "scribble":
            return touched.astype(np.float32)
        nearest = data.resize_mask(self.mask.astype(np.uint8), size).astype(bool)
        return (nearest if nearest.any() else touched).astype(np.float32)


def make_reference(image: ImageLike, annotation: dict, *, name: str | None = None) -> Reference:
    """A Reference from an image and an annotation dict with one of the keys
    "mask" / "scribble" (a PNG path, a PIL image or an (H, W) array; "class_id" optional for masks),
    "points" ([(x, y), ...] pixel coordinates; SAM-style (x, y, 1) triples are accepted, label 1
    being a click on the object) or "box" ((x0, y0, x1, y1), inclusive pixels).

    Coordinates must be finite and inside the reference: a point or box outside it is refused, not
    clipped, since it means another image or a typo rather than an object at the edge.
    """
    name = name or (str(image) if isinstance(image, (str, os.PathLike)) else "image")
    if not isinstance(annotation, dict):
        raise TypeError(f"reference {name}: the annotation is a dict such as {{'points': [(x, y)]}} or "
                        f"{{'mask': 'mask.png'}}, got {type(annotation).__name__}")
    kinds = [k for k in annotation if k in ANNOTATION_KINDS]
    if len(kinds) != 1 or set(annotation) - {kinds[0], "class_id"}:
        raise ValueError(
            f"reference {name}: an annotation is a dict with one of the keys {', '.join(ANNOTATION_KINDS)} "
            f"(and 'class_id' with 'mask'), got keys {sorted(annotation)}"
        )
    kind, value = kinds[0], annotation[kinds[0]]
    class_id = annotation.get("class_id")
    if class_id is not None and kind != "mask":
        raise ValueError(f"reference {name}: class_id goes with a mask annotation, not with {kind}")
    integer = isinstance(class_id, (int, np.integer)) and not isinstance(class_id, bool)
    if class_id is not None and not (integer and class_id >= 0):
        raise TypeError(f"reference {name}: class_id is a label value, an integer >= 0; got {class_id!r}")
    pixels = read_image(image, name)
    h, w = pixels.shape[:2]
    size_text = f"{w}x{h} pixels: x must be in 0..{w - 1}, y in 0..{h - 1}"
    if kind in ("mask", "scribble"):
        obj, label_name = _read_label_image(value, kind, class_id)
        if obj.shape != (h, w):
            raise ValueError(f"{label_name} is {obj.shape[1]}x{obj.shape[0]} but the reference {name} is {w}x{h}: "
                             f"the {kind} must be drawn on an image of the reference's size")
        return Reference(pixels, kind, obj)
    if kind == "points":
        points = np.rint(_points_array(value, name))
        outside = [(x, y) for x, y in points.tolist() if not (0 <= x < w and 0 <= y < h)]
        if outside:
            x, y = outside[0]
            raise ValueError(f"--points {x:g},{y:g} lies outside the reference {name} ({size_text})")
        points = points.astype(np.int64)
        mask = np.zeros((h, w), bool)
        mask[points[:, 1], points[:, 0]] = True
        return Reference(pixels, kind, mask, points)
    box = np.rint(_coordinates(value, name, "box", "(x0, y0, x1, y1)", ((4,), (1, 4))))  # SAM's boxes are (1, 4)
    x0, y0, x1, y1 = box.reshape(-1).tolist()
    shown = f"--box {x0:g},{y0:g},{x1:g},{y1:g}"
    if x0 > x1 or y0 > y1:
        raise ValueError(f"{shown} for the reference {name}: the first corner must be the top left "
                         "(x0 <= x1, y0 <= y1)")
    if not (0 <= x0 and x1 < w and 0 <= y0 and y1 < h):
        raise ValueError(f"{shown} is not a box inside the reference {name} ({size_text})")
    mask = np.zeros((h, w), bool)
    mask[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = True
    return Reference(pixels, kind, mask)


def _coordinates(value, name: str, kind: str, form: str, shapes: Sequence[tuple]) -> np.ndarray:
    """value as a finite float64 array of one of `shapes` (-1: any length >= 1), or a one-line error."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"--{kind} for reference {name}: expected {form} numbers, got {value!r}") from None
    fits = any(array.ndim == len(shape) and all(n in (-1, m) for n, m in zip(shape, array.shape)) for shape in shapes)
    if not fits or array.size == 0:
        raise ValueError(f"--{kind} for reference {name}: expected {form}, got an array of shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"--{kind} for reference {name}: coordinates must be finite numbers, got {value!r}")
    return array


def _points_array(value, name: str) -> np.ndarray:
    """(N, 2) float64 (x, y) from [(x, y), ...], one (x, y), or SAM-style (x, y, label) triples.

    Label 1 (a click on the object) is what VRP-SAM's point references are; a label 0 (background)
    click has no counterpart in a VRP reference, which marks the object only (§3.2), so it is refused."""
    form = "[(x, y), ...] pixel coordinates (or SAM-style (x, y, 1) triples)"
    array = _coordinates(value, name, "points", form, ((2,), (3,), (-1, 2), (-1, 3)))
    array = array.reshape(-1, array.shape[-1])
    if array.shape[1] == 3:
        labels = array[:, 2]
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"--points for reference {name}: a point's third value is its SAM label, 1 (object) or 0 "
                             f"(background); got {sorted(set(labels.tolist()) - {0.0, 1.0})}")
        if (labels == 0).any():
            x, y = array[labels == 0][0, :2]
            raise ValueError(f"--points for reference {name}: ({x:g}, {y:g}, 0) is a background click; a VRP reference "
                             "marks the object only (its encoder learnt from object clicks), so background points "
                             "cannot be expressed: drop them, or mark the object with a mask, box or scribble")
        array = array[:, :2]
    return array


# ---------------------------------------------------------------------------------------------
# The predictor: references once, targets many.
# ---------------------------------------------------------------------------------------------

@dataclass
class Prediction:
    """A target's segmentation at its own size: mask (H, W) bool, logits (H, W) float32
    (mask = logits > 0), and the network-size logits (S, S) they were resized from."""

    mask: np.ndarray
    logits: np.ndarray
    network_logits: np.ndarray

    @property
    def area(self) -> float:
        """Fraction of the target's pixels in the mask."""
        return float(self.mask.mean())

    @property
    def mean_probability(self) -> float | None:
        """Mean foreground probability sigmoid(logit) over the mask's pixels (None for an empty mask)."""
        return float((1 / (1 + np.exp(-self.logits[self.mask].astype(np.float64)))).mean()) if self.mask.any() else None


class VRPPredictor:
    """Segment targets from annotated references with a trained VRP-SAM:

        predictor = VRPPredictor.from_checkpoint("runs/synthetic-fold0-mask-tiny/best.pt")
        predictor.set_references([("ref.png", {"points": [(40, 52)]})])
        result = predictor.predict("target.jpg")       # result.mask (H, W) bool, result.logits (H, W)

    The references' frozen features and annotations are computed once by set_references
    (VRPSAM.encode_references); each target then costs its own backbone, SAM embedding and
    decoder pass. Images are resized to the network's S x S like data.py, and logits are resized
    back to each target's size with model.upsample_logits (align_corners=True), then > 0.
    """

    def __init__(self, model: VRPSAM, *, image_size: int, trained_label: str | None = None,
                 cache: EmbeddingCache | None = None) -> None:
        """model: a VRPSAM with its trained encoder; image_size: S, the size it was trained at;
        trained_label: the annotation kind it was trained with (train.py --label; None or 'any'
        accepts every kind silently); cache: SAM embeddings of targets on disk, made for model.sam."""
        self.model = model.eval()
        self.image_size = int(image_size)
        self.trained_label = trained_label
        self.cache = cache
        self.device = next(model.learnable_parameters()).device
        self.references: list[Reference] = []
        self._features: ReferenceFeatures | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device | None = None, sam: str | None = None,
                        sam_checkpoint: str | Path | None = None, backbone_weights: str | Path | None = None,
                        cache_dir: str | Path | None = None) -> "VRPPredictor":
        """The predictor of a train.py checkpoint; its frozen parts come from the run's arguments
        (model.build_from_checkpoint), or from sam_checkpoint / backbone_weights when given (a run
        folder moved to another machine). sam: another SAM type than the run's, of its decoder
        group (e.g. "vit_t", MobileSAM, for a vit_h run; model.check_sam_switch), with its weights
        from sam_checkpoint or its official file in checkpoints/."""
        state = load_checkpoint(path)
        return cls.from_state(state, device=device, sam=sam, sam_checkpoint=sam_checkpoint,
                              backbone_weights=backbone_weights, cache_dir=cache_dir, source=str(path))

    @classmethod
    def from_state(cls, state: dict, *, device=None, sam=None, sam_checkpoint=None, backbone_weights=None,
                   cache_dir=None, source: str = "the checkpoint") -> "VRPPredictor":
        """from_checkpoint for a checkpoint already read with model.load_checkpoint (source: its path, for messages)."""
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        run = state.get("args", {})
        model = build_from_checkpoint(state, sam=sam, sam_checkpoint=sam_checkpoint, backbone_weights=backbone_weights,
                                      source=source).to(device)
        image_size = int(run.get("image_size") or 512)
        cache = EmbeddingCache(cache_dir, model.sam, image_size) if cache_dir is not None else None
        return cls(model, image_size=image_size, trained_label=run.get("label"), cache=cache)

    def _network_image(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(data.image_array(image, self.image_size))  # (3, S, S), as in training

    @torch.no_grad()
    def _encode(self, references: Sequence[Reference]) -> ReferenceFeatures:
        images = torch.stack([self._network_image(r.image) for r in references])[None].to(
            self.device
        )  # (1, k, 3, S, S)
        labels = torch.stack([torch.from_numpy(r.network_label(self.image_size)) for r in references])[None].to(
            self.device
        )
        with autocast(self.device):
            return self.model.encode_references(images, labels)

    def set_references(self, references: Sequence[tuple[ImageLike, dict] | Reference], *, warn: bool = True) -> None:
        """k annotated references, a list of (image, annotation dict: see make_reference) pairs or
        Reference objects, e.g. [("ref.png", {"points": [(40, 52)]})]. Anything else is a TypeError
        showing that form. Warns (once per reference) when an annotation kind differs from the
        checkpoint's training kind; warn=False leaves that to the caller (kind_mismatches)."""
        made = [r if isinstance(r, Reference) else make_reference(*r) for r in _reference_pairs(references)]
        if warn:
            for message in self.kind_mismatches(made):
                warnings.warn(message, stacklevel=2)
        self.references = made
        self._features = self._encode(made)

    def kind_mismatches(self, references: Sequence[Reference]) -> list[str]:
        """One message per reference whose annotation kind is not the checkpoint's training kind
        (train.py --label; a checkpoint trained with 'any' accepts every kind)."""
        return [f"reference {n} is annotated with {r.kind} but this checkpoint was trained with "
                f"{self.trained_label} annotations (train.py --label {self.trained_label}); expect lower accuracy"
                for n, r in enumerate(references, 1)
                if self.trained_label not in (None, "any", ANNOTATION_KINDS[r.kind])]

    @torch.no_grad()
    def predict_batch(
        self, images: Sequence[ImageLike], *, extra_reference: Reference | None = None
    ) -> list[Prediction]:
        """One Prediction per target image (any size, mode, orientation: see read_image), in one
        network batch; images: a list of them (or a (B, H, W, 3) array); an empty list gives [].
        extra_reference: one more reference for this call only (--propagate's previous frame)."""
        if self._features is None:
            raise RuntimeError("call set_references before predict")
        if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim != 4):
            raise TypeError(f"predict_batch takes a list of images, got one {type(images).__name__}: "
                            "use predict(image), or predict_batch([image])")
        if extra_reference is not None and not isinstance(extra_reference, Reference):
            raise TypeError("extra_reference must be a segment.Reference (make_reference), "
                            f"got {type(extra_reference).__name__}")
        pixels = [read_image(image, f"target {n}") for n, image in enumerate(images, 1)]
        if not pixels:
            return []
        features = self._features if extra_reference is None else self._features.cat(self._encode([extra_reference]))
        targets = torch.stack([self._network_image(p) for p in pixels])  # (B, 3, S, S)
        ids = ["segment"] * len(targets)  # the cache keys each one by its exact pixels (EmbeddingCache.key)
        targets = targets.to(self.device)
        with autocast(self.device):
            embeddings = embed_targets(self.model.sam, targets, ids, self.cache)
            prompts = self.model.target_prompt_embeddings(targets, features)  # (B, k·N, 256)
            low_res = decode_masks(self.model.sam, embeddings, prompts)  # (B, 1, 4h, 4w)
            logits = upsample_logits(low_res, targets.shape[-2:])[:, 0]  # (B, S, S), as VRPSAM.forward
        logits = logits.float().cpu()
        predictions = []
        for p, network in zip(pixels, logits):
            full = upsample_logits(network[None, None], p.shape[:2])[0, 0]  # as evaluate.py --original-size
            predictions.append(Prediction(mask=(full > 0).numpy(), logits=full.numpy(), network_logits=network.numpy()))
        return predictions

    def predict_video(self, frames: Iterable[ImageLike], *, memory: str | None = None, propagate: bool = False,
                      num_frames: int | None = None) -> Iterator[Prediction]:
        """One Prediction per frame of a video, in order, lazily (a long video is never held whole):
        frames is any iterable of images (VideoFrames, a list of paths or arrays, a generator).

        memory None: each frame is segmented by VRP alone, from the references; propagate adds the
            previous frame with its predicted mask as one more reference (beyond the paper).
        memory "first" (a SAM 2 model): VRP segments frame 0, then SAM 2's memory follows what it
            found through the later frames (video.MemorySegmenter); "every": VRP's prompts are given
            on every later frame too, so the class prompt and the instance memory decide together.
        num_frames: the video's length (len(frames) when it has one), which SAM 2's memory reads; for
            a stream of unknown length leave it None (any length >= 16 gives the same masks).
        With memory, an object VRP does not find in frame 0 leaves SAM 2's memory nothing to follow
        ("every": VRP's prompts on the later frames may still find it); segment.py --video warns.
        """
        if self._features is None:
            raise RuntimeError("call set_references before predict_video")
        if memory not in (None, *SEGMENT_MEMORY_MODES):
            raise ValueError(f"memory must be None or one of {SEGMENT_MEMORY_MODES}, got {memory!r}")
        if memory is not None and propagate:
            raise ValueError("memory and propagate both carry earlier frames forward: choose one")
        if memory is not None and sam_family(self.model.sam) != "sam2":
            raise ValueError(f"memory={memory!r} needs SAM 2's memory, and this model's SAM has none (SAM 1 / "
                             "MobileSAM): use a checkpoint trained with --sam sam2_tiny or --sam sam2.1_*")
        if memory is None:
            previous: Reference | None = None
            for n, frame in enumerate(frames):
                pixels = read_image(frame, f"frame {n}")
                prediction = self.predict(pixels, extra_reference=previous)
                if propagate:  # the frame and its prediction become a mask reference for the next frame
                    previous = Reference(pixels, "mask", prediction.mask) if prediction.mask.any() else None
                yield prediction
            return
        if num_frames is None:
            num_frames = len(frames) if hasattr(frames, "__len__") else MEMORY_STREAM_LENGTH
        follower = None
        for n, frame in enumerate(frames):
            pixels = read_image(frame, f"frame {n}")
            network = self._network_image(pixels)
            if follower is None:  # frame 0: VRP finds the object; its mask seeds SAM 2's memory
                prediction = self.predict(pixels)
                follower = MemorySegmenter(self.model, num_frames=num_frames,
                                           references=self._features if memory == "every" else None)
                follower.start(network, torch.from_numpy(prediction.mask)[None])
                yield prediction
                continue
            low_res = follower.step(network)  # (1, 1, s, s)
            full = memory_logits(low_res, pixels.shape[:2])[0]
            yield Prediction(mask=(full > 0).numpy(), logits=full.numpy(),
                             network_logits=memory_logits(low_res, (self.image_size,) * 2)[0].numpy())

    def predict(self, image: ImageLike, **kwargs) -> Prediction:
        """The Prediction of one target image (a path, a PIL image or an array: see read_image)."""
        if isinstance(image, (list, tuple)):
            raise TypeError(f"predict takes one image, got a {type(image).__name__}: use predict_batch for several")
        return self.predict_batch([image], **kwargs)[0]


def _reference_pairs(references) -> list:
    """set_references' argument as a list of Reference objects or (image, annotation dict) pairs;
    a TypeError showing the expected form otherwise."""
    form = 'a list of (image, annotation) pairs or Reference objects, e.g. [("ref.png", {"points": [(40, 52)]})]'
    if isinstance(references, Reference):
        raise TypeError(f"set_references takes {form}; got one Reference: wrap it in a list, [reference]")
    if isinstance(references, (str, os.PathLike, dict, Image.Image, np.ndarray)) or not hasattr(references, "__iter__"):
        raise TypeError(f"set_references takes {form}; got a {type(references).__name__}")
    references = list(references)
    one_pair = len(references) == 2 and isinstance(references[1], dict)
    if one_pair and not isinstance(references[0], (Reference, tuple, list)):
        raise TypeError(f"set_references takes {form}; got one pair: wrap it in a list, [(image, annotation)]")
    if not references:
        raise ValueError(f"set_references needs at least one reference: {form}")
    for n, reference in enumerate(references, 1):
        if isinstance(reference, Reference):
            continue
        if not isinstance(reference, (tuple, list)) or len(reference) != 2 or not isinstance(reference[1], dict):
            shown = repr(reference) if isinstance(reference, (str, os.PathLike)) else f"a {type(reference).__name__}"
            raise TypeError(f"set_references: reference {n} is {shown}; expected {form}")
    return references


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------

def _panel(image: np.ndarray, mask: np.ndarray, colour, height: int, grow: int = 0) -> np.ndarray:
    """image with mask tinted and outlined (prompts.tint_mask), resized to `height` first."""
    h, w = mask.shape
    width = max(1, round(w * height / h))
    small = np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR if height < h else Image.NEAREST))
    small_mask = np.array(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)) > 0
    if grow:
        small_mask = ndimage.binary_dilation(small_mask, iterations=grow)
    return tint_mask(small, small_mask, colour)


def overlay_picture(references: Sequence[Reference], target: np.ndarray, prediction: Prediction) -> np.ndarray:
    """References with their annotation (green) | the target with its mask (magenta), like
    evaluate.py --save-vis; panels share one height (the target's, within 256..768 px)."""
    height = int(np.clip(target.shape[0], 256, 768))
    panels = []
    for r in references:
        # sparse annotations are grown so that points and thin strokes show at any size
        panels.append(
            _panel(
                r.image, r.mask, ANNOTATION_COLOUR, height,
                grow=max(1, height // 100) if r.kind in ("points", "scribble") else 0,
            )
        )
    panels.append(_panel(target, prediction.mask, PREDICTION_COLOUR, height))
    gap = np.full((height, 4, 3), 255, np.uint8)
    return np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

class _Annotation(argparse.Action):
    """--mask / --points / --box / --scribble append (kind, value) in command-line order, so the
    i-th annotation belongs to the i-th --reference; --class-id attaches to the last --mask."""

    def __call__(self, parser, namespace, value, option_string=None):
        annotations = list(getattr(namespace, "annotations", None) or [])
        kind = option_string.lstrip("-").replace("-", "_")
        if kind == "class_id":
            if not annotations or annotations[-1][0] != "mask" or annotations[-1][2] is not None:
                parser.error(f"--class-id {value}: it must follow the --mask PNG it picks a label value of")
            annotations[-1] = ("mask", annotations[-1][1], value)
        else:
            annotations.append((kind, value, None))
        namespace.annotations = annotations


def _numbers(text: str) -> list[float]:
    """Comma-separated finite numbers (negative ones too); ValueError for anything else."""
    values = [float(v) for v in text.split(",")]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(text)
    return values


def _parse_points(text: str) -> list[tuple[float, float]]:
    try:
        points = [tuple(_numbers(pair)) for pair in text.replace(" ", "").split(";") if pair]
    except ValueError:
        points = []
    if not points or any(len(p) != 2 for p in points):
        raise argparse.ArgumentTypeError(f"{text!r}: expected x,y pairs of finite numbers (pixels) separated by ';', "
                                         "e.g. --points \"120,80;140,95\"")
    return points


def _parse_box(text: str) -> tuple[float, ...]:
    try:
        box = tuple(_numbers(text.replace(" ", "")))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise argparse.ArgumentTypeError(f"{text!r}: expected x0,y0,x1,y1, finite numbers (pixels, inclusive), "
                                         "e.g. --box 10,20,200,180")
    return box


# Flags whose value may start with '-' (a negative coordinate): see _Parser.
_COORDINATE_FLAGS = ("--points", "--box")


class _Parser(cli.ArgumentParser):
    """argparse reads `--points -1,3` as two options ("-1,3" looks like one, not like a negative
    number), so a value after --points / --box that starts with '-' and a number is attached
    to its flag (`--points=-1,3`, which argparse always reads as a value) before parsing. A
    negative coordinate then reaches make_reference, which says it lies outside the reference."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else [str(a) for a in args]
        attached: list[str] = []
        for arg in args:
            if attached and attached[-1] in _COORDINATE_FLAGS and re.match(r"-(\d|\.|inf|nan)", arg, re.IGNORECASE):
                attached[-1] = f"{attached[-1]}={arg}"
            else:
                attached.append(arg)
        return super().parse_known_args(attached, namespace)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="segment.py", formatter_class=cli.HelpFormatter,
                     description="Segment images from annotated reference images with a trained VRP-SAM.")
    group = parser.add_argument_group("model")
    group.add_argument(
        "--checkpoint", type=Path, default=None, help="best.pt of a train.py run (--demo: the main job's)"
    )
    cli.add_run_sam_args(group, SAM_TYPES)
    cli.add_runtime_args(group, workers=False, cache=None, no_cache=False)
    group = parser.add_argument_group("references (each --reference followed by one annotation, in order)")
    group.add_argument(
        "--reference", type=Path, action="append", default=[], help="reference image (repeat for k-shot)"
    )
    group.add_argument("--mask", type=Path, action=_Annotation, help="PNG of the reference's size: non-zero = object")
    group.add_argument(
        "--class-id", type=cli.positive_int, action=_Annotation, help="with --mask: the object is this label value"
    )
    group.add_argument("--points", type=_parse_points, action=_Annotation,
                       help="clicks on the object: \"x,y;x,y\" (pixels inside the reference; outside ones are refused)")
    group.add_argument("--box", type=_parse_box, action=_Annotation,
                       help="the object's box: x0,y0,x1,y1 (inclusive pixels inside the reference; not clipped)")
    group.add_argument(
        "--scribble", type=Path, action=_Annotation, help="strokes on an empty PNG of the reference's size"
    )
    group = parser.add_argument_group("targets and output")
    group.add_argument("--targets", nargs="+", default=[], help="image files, globs or folders (sorted by name)")
    group.add_argument("--out", type=Path, default=None,
                       help="output folder (--demo: the PNG to write; default: demo.png beside the checkpoint)")
    group.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    group.add_argument(
        "--propagate",
        action="store_true",
        help="video: also use the previous frame's prediction as a mask reference (beyond the paper; one frame "
        "at a time)",
    )
    group.add_argument("--batch-size", type=cli.positive_int, default=8, help="targets per network batch")
    group = parser.add_argument_group("video (instead of --targets)")
    group.add_argument("--video", type=Path, default=None,
                       help="segment every frame of a video, in order: a folder of frames (name order), an animated "
                            "GIF / PNG / WebP or a video file (mp4, mov, avi, mkv, webm); writes masks/<frame>.png, "
                            "overlay.gif and results.jsonl")
    group.add_argument("--memory", choices=SEGMENT_MEMORY_MODES, default=None,
                       help="with --video, on a run trained with a SAM 2: VRP finds the object in the first frame and "
                            "SAM 2's memory follows it (first), with VRP's prompts on every frame too (every)")
    group = parser.add_argument_group("demo")
    group.add_argument("--demo", action="store_true", help="segment synthetic scenes and write one contact sheet")
    group.add_argument("--seed", type=cli.nonnegative_int, default=0, help="--demo: seed of the scenes")
    return parser


def expand_targets(items: Sequence[str]) -> list[Path]:
    """Files as given; folders and globs expand to their image files, sorted by name."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                raise ValueError(f"--targets {item}: the folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            found = [path]
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"--targets {item}: the pattern matches no image file")
        else:
            raise FileNotFoundError(f"--targets {item}: no such file or folder")
        paths.extend(found)
    return paths


def _check_out_folder(folder: Path) -> None:
    """Refuse an output folder that cannot be made or written, without creating anything yet."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OSError(f"--out {folder}: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OSError(f"--out {folder}: {existing} is not writable; choose another --out")


def _make_out_folder(folder: Path) -> None:
    """Create `folder` and prove a file can be written there (os.access cannot see every refusal)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OSError(f"--out {folder}: cannot write there ({error.strerror or error}); choose another --out") from None


def check_references(args: argparse.Namespace, *, targets: str) -> tuple[dict, list[Reference]]:
    """The checkpoint and the references with their annotations, checked before any model is built
    or file written; `targets`: how this mode's targets are given, for the message when --out is missing."""
    if not args.reference:
        raise ValueError(
            "give at least one --reference image with its annotation (--mask, --points, --box or --scribble)"
        )
    annotations = getattr(args, "annotations", None) or []
    if len(annotations) != len(args.reference):
        raise ValueError(
            f"{len(args.reference)} --reference image(s) but {len(annotations)} annotation(s): follow each "
            "--reference with one --mask, --points, --box or --scribble"
        )
    if args.out is None:
        raise ValueError(f"give --out, the folder the masks, {targets} and results.jsonl go to")
    if args.checkpoint is None:
        raise ValueError("give --checkpoint, a best.pt written by train.py")
    state = load_checkpoint(args.checkpoint)
    if args.sam is not None and (problem := sam_switch_problem(state["config"]["sam"], args.sam,
                                                               source=str(args.checkpoint))):
        raise ValueError(problem)  # before any target is read or file written
    references = []
    for image, (kind, value, class_id) in zip(args.reference, annotations):
        annotation = {kind: value} if class_id is None else {kind: value, "class_id": class_id}
        references.append(make_reference(image, annotation, name=str(image)))
    return state, references


def check_inputs(args: argparse.Namespace) -> tuple[dict, list[Reference], list[Path], dict[Path, dict[str, Path]]]:
    """Everything a run needs, checked before any model is built or file written: the checkpoint,
    the references with their annotations, every target decoded once, the output paths."""
    if not args.targets:
        raise ValueError("give --targets (image files, globs or folders), or --video")
    if args.memory is not None:
        raise ValueError(f"--memory {args.memory} follows an object through a video: give --video instead of --targets")
    state, references = check_references(args, targets="overlays")
    targets = expand_targets(args.targets)
    outputs, names = {}, {}
    for path in tqdm(targets, desc="checking targets", leave=False, disable=len(targets) < 50):
        read_image(path)  # an unreadable target stops the run before anything is written
        if path.stem in names:
            raise ValueError(f"--targets {names[path.stem]} and {path} would both write {path.stem}.png: "
                             "segment them into separate --out folders")
        names[path.stem] = path
        outputs[path] = {
            "mask": args.out / "masks" / f"{path.stem}.png", "overlay": args.out / "overlays" / f"{path.stem}.png",
        }
    _check_out_folder(args.out)
    existing = [p for paths in outputs.values() for p in paths.values() if p.exists()]
    if (args.out / "results.jsonl").exists():
        existing.insert(0, args.out / "results.jsonl")
    if existing and not args.overwrite:
        raise FileExistsError(f"{existing[0]} exists ({len(existing)} output file(s) in {args.out} would be replaced): "
                              "pass --overwrite, or choose another --out")
    return state, references, targets, outputs


def segment(args: argparse.Namespace) -> list[dict]:
    state, references, targets, outputs = check_inputs(args)
    predictor = VRPPredictor.from_state(state, device=args.device, sam=args.sam, sam_checkpoint=args.sam_checkpoint,
                                        backbone_weights=args.backbone_weights, cache_dir=args.cache_dir,
                                        source=str(args.checkpoint))
    _make_out_folder(args.out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor.set_references(references)
    for warning in caught:
        print(f"segment.py: warning: {warning.message}", file=sys.stderr)
    batch_size = 1 if args.propagate else args.batch_size
    lines: list[dict] = []
    previous: Reference | None = None
    bar = tqdm(total=len(targets), desc="segment", unit="target", dynamic_ncols=True)
    for start in range(0, len(targets), batch_size):
        began = time.perf_counter()
        batch = targets[start:start + batch_size]
        images = [read_image(path) for path in batch]
        predictions = predictor.predict_batch(images, extra_reference=previous)
        for path, image, prediction in zip(batch, images, predictions):
            cli.write_atomic(outputs[path]["mask"], png_bytes(prediction.mask.astype(np.uint8) * 255))
            cli.write_atomic(outputs[path]["overlay"], png_bytes(overlay_picture(references, image, prediction)))
        seconds = (time.perf_counter() - began) / len(batch)
        for path, prediction in zip(batch, predictions):
            line = {
                "file": str(path),
                "mask": str(outputs[path]["mask"]),
                "area": round(prediction.area, 6),
                "mean_probability": (
                    None if prediction.mean_probability is None else round(prediction.mean_probability, 6)
                ),
                "seconds": round(seconds, 4),
            }
            if args.propagate:
                line["propagated"] = previous is not None
            lines.append(line)
        if args.propagate:  # the frame and its prediction become a mask reference for the next frame
            previous = Reference(images[-1], "mask", predictions[-1].mask) if predictions[-1].mask.any() else None
        # rewritten whole after every batch: always a complete file of the targets done so far
        cli.write_atomic(args.out / "results.jsonl", "".join(json.dumps(line) + "\n" for line in lines).encode())
        bar.update(len(batch))
    bar.close()
    total = sum(line["seconds"] for line in lines)
    print(
        f"segmented {len(lines)} target(s) in {total:.1f} s ({len(lines) / max(total, 1e-9):.2f} targets/s) "
        f"-> {args.out}"
    )
    return lines


# ---------------------------------------------------------------------------------------------
# --video: every frame of a video, one mask each, and an overlay GIF
# ---------------------------------------------------------------------------------------------

VIDEO_RESULTS = "results.jsonl"  # written last: a folder holding it is a finished --video result
OVERLAY_GIF = "overlay.gif"
GIF_FRAME_MS = 100  # 10 frames per second, whatever the source's rate
GIF_HEIGHT = (128, 240)  # the overlay's panels are this tall: the frame's height, kept within these bounds


def video_foreign_entries(folder: Path) -> list[Path]:
    """What in `folder` segment.py --video did not write (video.replace_atomically's rule for it):
    anything but masks/ (PNG files only), overlay.gif, results.jsonl and the partial-run marker. A
    folder without results.jsonl holds no finished result, so everything in it is foreign."""
    entries = sorted(folder.iterdir())
    if not (folder / VIDEO_RESULTS).is_file():
        return entries
    foreign = []
    for entry in entries:
        if entry.is_symlink():
            foreign.append(entry)
        elif entry.is_file() and entry.name in (VIDEO_RESULTS, OVERLAY_GIF, PARTIAL_MARKER):
            continue
        elif entry.is_dir() and entry.name == "masks":
            foreign += [f for f in sorted(entry.iterdir()) if f.suffix != ".png" or not f.is_file() or f.is_symlink()]
        else:
            foreign.append(entry)
    return foreign


def check_video_inputs(args: argparse.Namespace) -> tuple[dict, list[Reference], VideoFrames]:
    """segment.py --video's arguments, checked before any model is built or file written: the
    checkpoint (and, with --memory, that its SAM has a memory), the references, every frame of the
    video decoded once, and the output folder."""
    if args.targets:
        raise ValueError("--video and --targets: give one (--video segments a video's frames, in order)")
    if args.memory is not None and args.propagate:
        raise ValueError(f"--memory {args.memory} and --propagate both carry earlier frames forward; choose one: "
                         "--propagate adds the previous frame as a VRP reference, --memory follows the object with "
                         "SAM 2's memory")
    state, references = check_references(args, targets="overlay.gif")
    sam = args.sam or state["config"]["sam"]
    if args.memory is not None and not is_sam2(sam):
        raise ValueError(f"--memory {args.memory}: {args.checkpoint} was trained on --sam {sam}, which has no memory "
                         "(SAM 1 / MobileSAM); leave --memory out to segment each frame with VRP alone, or use a run "
                         "trained on a SAM 2 (train.py --sam sam2_tiny, or --sam sam2.1_hiera_t on real data)")
    frames = open_video(args.video)
    _check_out_folder(args.out)
    for note in tidy_interrupted_runs(args.out, video_foreign_entries, VIDEO_RESULTS):
        print(note)
    check_output_folder(args.out, video_foreign_entries, "segment.py --video")
    if (args.out / VIDEO_RESULTS).exists() and not args.overwrite:
        raise FileExistsError(f"--out {args.out} holds an earlier --video result: pass --overwrite to replace it "
                              "whole, or choose another --out")
    return state, references, frames


def overlay_frame(references: Sequence[Reference], frame: np.ndarray, mask: np.ndarray) -> Image.Image:
    """One frame of overlay.gif: the references with their annotation (green) | the frame with its
    mask (magenta), GIF_HEIGHT tall, as a palette image (a GIF's frames are)."""
    height = int(np.clip(frame.shape[0], *GIF_HEIGHT))
    panels = [_panel(r.image, r.mask, ANNOTATION_COLOUR, height,
                     grow=max(1, height // 100) if r.kind in ("points", "scribble") else 0) for r in references]
    panels.append(_panel(frame, mask, PREDICTION_COLOUR, height))
    gap = np.full((height, 4, 3), 255, np.uint8)
    strip = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
    return Image.fromarray(strip).quantize(colors=255, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)


def segment_video(args: argparse.Namespace) -> list[dict]:
    """segment.py --video: a mask per frame (masks/<frame>.png, 0 / 255 at the frame's size), the
    overlay GIF and one results.jsonl line per frame, written beside --out and swapped in whole
    when every frame is done (video.replace_atomically), so a failed or killed run leaves the
    earlier result as it was. The frames are read one at a time; the GIF's small palette frames are
    the only thing kept for every frame."""
    state, references, frames = check_video_inputs(args)
    predictor = VRPPredictor.from_state(state, device=args.device, sam=args.sam, sam_checkpoint=args.sam_checkpoint,
                                        backbone_weights=args.backbone_weights, cache_dir=args.cache_dir,
                                        source=str(args.checkpoint))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor.set_references(references)
    for warning in caught:
        print(f"segment.py: warning: {warning.message}", file=sys.stderr)
    read: deque[np.ndarray] = deque()  # the frames predict_video has read and not yet given back

    def reading() -> Iterator[np.ndarray]:
        for pixels in frames:
            read.append(pixels)
            yield pixels

    lines: list[dict] = []
    gif: list[Image.Image] = []
    predictions = predictor.predict_video(reading(), memory=args.memory, propagate=args.propagate,
                                          num_frames=len(frames))
    with replace_atomically(args.out, video_foreign_entries, "segment.py --video") as partial:
        began = time.perf_counter()
        for name, prediction in tqdm(zip(frames.names, predictions), total=len(frames), desc="segment video",
                                     unit="frame", dynamic_ncols=True):
            seconds = time.perf_counter() - began
            pixels = read.popleft()
            cli.write_atomic(partial / "masks" / f"{name}.png", png_bytes(prediction.mask.astype(np.uint8) * 255))
            gif.append(overlay_frame(references, pixels, prediction.mask))
            lines.append({"frame": name, "mask": str(args.out / "masks" / f"{name}.png"),
                          "area": round(prediction.area, 6),
                          "mean_probability": (None if prediction.mean_probability is None
                                               else round(prediction.mean_probability, 6)),
                          "seconds": round(seconds, 4), "memory": args.memory, "propagate": args.propagate})
            if args.memory and len(lines) == 1 and not prediction.mask.any():
                print(f"segment.py: warning: VRP found nothing in the first frame ({name}), so SAM 2's memory has "
                      "nothing to follow" + ("" if args.memory == "every" else "; --memory every also gives VRP's "
                                             "prompts on every later frame"), file=sys.stderr)
            began = time.perf_counter()
        buffer = io.BytesIO()
        gif[0].save(buffer, format="GIF", save_all=True, append_images=gif[1:], duration=GIF_FRAME_MS, loop=0)
        cli.write_atomic(partial / OVERLAY_GIF, buffer.getvalue())
        cli.write_atomic(partial / VIDEO_RESULTS, "".join(json.dumps(line) + "\n" for line in lines).encode())
    total = sum(line["seconds"] for line in lines)
    how = (f"SAM 2 memory ({args.memory})" if args.memory
           else "VRP per frame" + (" + previous" if args.propagate else ""))
    print(f"segmented {len(lines)} frame(s) of {args.video} ({how}) in {total:.1f} s "
          f"({total / max(len(lines), 1):.3f} s per frame) -> {args.out} (masks/, {OVERLAY_GIF}, {VIDEO_RESULTS})")
    return lines


# ---------------------------------------------------------------------------------------------
# --demo: synthetic scenes, no download
# ---------------------------------------------------------------------------------------------

DEMO_TARGETS = 4  # target scenes per class in the demo (and the web page's demo)


def demo_scenes(class_id: int, seed: int, *, size: int) -> tuple[SyntheticScene, list[SyntheticScene]]:
    """The demo's scenes of one class: a reference holding one object of `class_id` among
    distractors, and DEMO_TARGETS targets holding it among 1-2 other classes; from the demo's seed
    stream and the class, so the web page (app.py) shows the scenes `--demo` draws."""
    rng = np.random.default_rng([seed, SEED_STREAMS["demo"], class_id])
    reference = synthetic_scene(rng, classes=[class_id], num_distractors=2, size=size)
    targets = []
    for _ in range(DEMO_TARGETS):
        others = rng.choice([c for c in range(1, SYNTHETIC_NUM_CLASSES + 1) if c != class_id],
                            size=rng.integers(1, 3), replace=False)
        targets.append(synthetic_scene(rng, classes=[class_id, *others.tolist()][::rng.choice([1, -1])],
                                       num_distractors=int(rng.integers(0, 3)), size=size))
    return reference, targets


def demo(args: argparse.Namespace) -> dict:
    """Segment fresh synthetic scenes of the checkpoint's novel classes and write one contact sheet:
    a row per class, the annotated reference then the targets with their predicted masks."""
    checkpoint = args.checkpoint or cli.MAIN_JOB_CHECKPOINT
    out = args.out or checkpoint.parent / "demo.png"  # the demo's own picture: rewritten by each demo
    if not checkpoint.exists():
        raise FileNotFoundError(f"--demo needs {checkpoint}: train it first with `python train.py --dataset synthetic` "
                                "(about 8 minutes on 2 CPU cores)")
    if args.out is not None and out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists: pass --overwrite to replace it, or --out another PNG")
    state = load_checkpoint(checkpoint)
    run = state.get("args", {})
    if run.get("dataset") != "synthetic":
        raise ValueError(f"--demo segments synthetic scenes, but {checkpoint} was trained on {run.get('dataset')!r}: "
                         "pass a synthetic run's checkpoint")
    if args.sam not in (None, state["config"]["sam"]):
        problem = sam_switch_problem(state["config"]["sam"], args.sam, source=str(checkpoint))
        if problem:
            raise ValueError(problem)
        out = args.out or checkpoint.parent / f"demo-{args.sam}.png"  # the run's own demo.png is left alone
    _check_out_folder(out.parent)
    predictor = VRPPredictor.from_state(state, device=args.device, sam=args.sam, sam_checkpoint=args.sam_checkpoint,
                                        backbone_weights=args.backbone_weights, source=str(checkpoint))
    _make_out_folder(out.parent)
    kind = run.get("label", "mask")
    kind = "mask" if kind == "any" else kind
    size = int(run.get("image_size", 128))
    rows, ious = [], []
    classes = data.fold_classes("synthetic", int(run.get("fold", 0)), "test")
    for class_id in classes:
        reference, scenes = demo_scenes(class_id, args.seed, size=size)
        rng = np.random.default_rng([args.seed, SEED_STREAMS["demo"], class_id, 1])  # the simulated annotation
        object_mask = np.where(reference.label == IGNORE, IGNORE, reference.label == class_id)
        annotation = simulate_annotation(object_mask, kind, rng)
        value = {"point": {"points": annotation.points}, "box": {"box": annotation.box},
                 "scribble": {"scribble": annotation.mask}, "mask": {"mask": annotation.mask}}[kind]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predictor.set_references([(reference.image, value)])
        predictions = predictor.predict_batch([s.image for s in scenes])
        panels = [_panel(reference.image, predictor.references[0].mask, ANNOTATION_COLOUR, size,
                         grow=1 if kind in ("point", "scribble") else 0)]
        for scene, prediction in zip(scenes, predictions):
            truth, valid = scene.label == class_id, scene.label != IGNORE
            ious.append((prediction.mask & truth & valid).sum() / max(((prediction.mask | truth) & valid).sum(), 1))
            panels.append(_panel(scene.image, prediction.mask, PREDICTION_COLOUR, size))
        row = np.concatenate([x for p in panels for x in (p, np.full((size, 3, 3), 255, np.uint8))][:-1], axis=1)
        caption = Image.new("RGB", (row.shape[1], 14), (255, 255, 255))
        ImageDraw.Draw(caption).text((2, 1), f"{SYNTHETIC_CLASS_NAMES[class_id - 1]}: reference ({kind})  ->  targets",
                                     fill=(0, 0, 0))
        rows.extend([np.asarray(caption), row, np.full((3, row.shape[1], 3), 255, np.uint8)])
    sheet = Image.fromarray(np.concatenate(rows[:-1], axis=0)).quantize(colors=128, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    cli.write_atomic(out, buffer.getvalue())
    miou = 100 * float(np.mean(ious))
    print(f"demo: {len(ious)} targets of {len(classes)} novel classes, mean IoU {miou:.1f}% "
          f"({checkpoint}, {kind} references) -> {out}")
    return {"out": str(out), "mean_iou": miou}


def main(argv=None):
    args = build_parser().parse_args(argv)
    return cli.run_main("segment.py", demo if args.demo else segment_video if args.video else segment, args)


if __name__ == "__main__":
    main()
