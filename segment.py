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
frame's prediction as one more mask reference for the next frame.

Exposes `VRPPredictor` (set references once, predict many targets; in the spirit of SAM's
SamPredictor), `Prediction`, `read_image` and `main`.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps
from scipy import ndimage
from tqdm import tqdm

import cli
import data
from model import (EmbeddingCache, ReferenceFeatures, VRPSAM, autocast, build_from_checkpoint, embed_targets, decode_masks, load_checkpoint,
                   upsample_logits)
from prompts import ANNOTATION_COLOUR, IGNORE, SEED_STREAMS, PREDICTION_COLOUR, png_bytes, simulate_annotation, tint_mask
from synthetic import SYNTHETIC_CLASS_NAMES, SYNTHETIC_NUM_CLASSES, synthetic_scene

ROOT = Path(__file__).resolve().parent
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# The user's annotation kinds (CLI flags, API dict keys) and the training label kind each one is.
ANNOTATION_KINDS = {"mask": "mask", "points": "point", "box": "box", "scribble": "scribble"}
DEMO_CHECKPOINT = Path("runs/synthetic-fold0-mask-tiny/best.pt")  # what `python train.py --dataset synthetic` writes

ImageLike = Union[str, Path, Image.Image, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Reading images and annotations as a person gives them.
# ---------------------------------------------------------------------------------------------

def read_image(source: ImageLike, name: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a file, a PIL image or an array, upright (EXIF orientation applied).

    Any mode is accepted: greyscale and palette images are expanded to RGB, alpha is dropped.
    """
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] not in (1, 3, 4)):
            raise ValueError(f"{name or 'image'}: expected an (H, W), (H, W, 3) or (H, W, 4) uint8 array, "
                             f"got {source.dtype} {source.shape}")
        source = Image.fromarray(source[..., 0] if source.ndim == 3 and source.shape[2] == 1 else source)
    if isinstance(source, Image.Image):
        return np.array(ImageOps.exif_transpose(source).convert("RGB"))
    path = Path(source)
    try:
        with Image.open(path) as pil:
            return np.array(ImageOps.exif_transpose(pil).convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} not found") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"image {path} could not be read ({error}); is it a complete image file?") from error


def _read_label_image(source, kind: str, class_id: int | None) -> tuple[np.ndarray, str]:
    """(H, W) bool object pixels of a mask / scribble given as a PNG path or an array, and its name.

    Object = non-zero pixels (pixels with alpha > 0 when there is an alpha channel), or the pixels
    equal to class_id in a palette / greyscale label PNG.
    """
    if isinstance(source, (str, Path)):
        path, name = Path(source), f"--{kind} {source}"
        try:
            with Image.open(path) as pil:
                pil.load()
                mode, array = pil.mode, np.array(pil)
        except FileNotFoundError:
            raise FileNotFoundError(f"{name}: file not found") from None
        except (OSError, ValueError) as error:
            raise ValueError(f"{name} could not be read as an image ({error})") from error
    else:
        name = f"the {kind} annotation"
        if isinstance(source, Image.Image):
            mode, array = source.mode, np.array(source)
        else:
            array = np.asarray(source)
            mode = {2: "L", 3: "RGB"}.get(array.ndim, "?")
            if array.ndim == 3 and array.shape[2] == 4:
                mode = "RGBA"
    if class_id is not None:
        if array.ndim != 2:
            raise ValueError(f"{name}: --class-id needs a one-channel label image (palette or greyscale), got mode {mode}")
        obj = array == class_id
        if not obj.any():
            present = sorted(set(np.unique(array).tolist()) - {0})
            raise ValueError(f"{name}: no pixel has class id {class_id}; the values present are {present or 'only 0'}")
        return obj, name
    if array.ndim == 3 and mode in ("RGBA", "LA", "PA"):
        obj = array[..., -1] > 0
    elif array.ndim == 3:
        obj = array.any(axis=2)
    else:
        obj = array != 0
    if not obj.any():
        raise ValueError(f"{name} has no object pixel (every pixel is 0): mark the object with non-zero pixels")
    return obj, name


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
    "mask" / "scribble" (a PNG path or an (H, W) array; "class_id" optional for masks),
    "points" ([(x, y), ...] pixel coordinates) or "box" ((x0, y0, x1, y1), inclusive pixels)."""
    name = name or (str(image) if isinstance(image, (str, Path)) else "image")
    kinds = [k for k in annotation if k in ANNOTATION_KINDS]
    if len(kinds) != 1 or set(annotation) - {kinds[0], "class_id"}:
        raise ValueError(f"reference {name}: an annotation is a dict with one of the keys {', '.join(ANNOTATION_KINDS)} "
                         f"(and 'class_id' with 'mask'), got keys {sorted(annotation)}")
    kind, value = kinds[0], annotation[kinds[0]]
    class_id = annotation.get("class_id")
    if class_id is not None and kind != "mask":
        raise ValueError(f"reference {name}: class_id goes with a mask annotation, not with {kind}")
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
        points = np.asarray(value, dtype=np.float64).reshape(-1, 2) if len(value) else np.zeros((0, 2))
        if len(points) == 0:
            raise ValueError(f"--points for reference {name}: no point given")
        points = np.round(points).astype(np.int64)
        outside = [(x, y) for x, y in points.tolist() if not (0 <= x < w and 0 <= y < h)]
        if outside:
            x, y = outside[0]
            raise ValueError(f"--points {x},{y} lies outside the reference {name} ({size_text})")
        mask = np.zeros((h, w), bool)
        mask[points[:, 1], points[:, 0]] = True
        return Reference(pixels, kind, mask, points)
    box = tuple(int(round(float(v))) for v in value)
    if len(box) != 4:
        raise ValueError(f"--box for reference {name}: expected x0,y0,x1,y1, got {value}")
    x0, y0, x1, y1 = box
    if not (0 <= x0 <= x1 < w and 0 <= y0 <= y1 < h):
        raise ValueError(f"--box {x0},{y0},{x1},{y1} is not a box inside the reference {name} "
                         f"({size_text}, and x0 <= x1, y0 <= y1)")
    mask = np.zeros((h, w), bool)
    mask[y0:y1 + 1, x0:x1 + 1] = True
    return Reference(pixels, kind, mask)


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
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device | None = None,
                        sam_checkpoint: str | Path | None = None, cache_dir: str | Path | None = None) -> "VRPPredictor":
        """The predictor of a train.py checkpoint; its frozen parts come from the run's arguments."""
        state = load_checkpoint(path)
        return cls.from_state(state, device=device, sam_checkpoint=sam_checkpoint, cache_dir=cache_dir)

    @classmethod
    def from_state(cls, state: dict, *, device=None, sam_checkpoint=None, cache_dir=None) -> "VRPPredictor":
        """from_checkpoint for a checkpoint already read with model.load_checkpoint."""
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        run = state.get("args", {})
        model = build_from_checkpoint(state, sam_checkpoint=sam_checkpoint).to(device)
        image_size = int(run.get("image_size") or 512)
        cache = EmbeddingCache(cache_dir, model.sam, image_size) if cache_dir is not None else None
        return cls(model, image_size=image_size, trained_label=run.get("label"), cache=cache)

    def _network_image(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(data.image_array(image, self.image_size))  # (3, S, S), as in training

    @torch.no_grad()
    def _encode(self, references: Sequence[Reference]) -> ReferenceFeatures:
        images = torch.stack([self._network_image(r.image) for r in references])[None].to(self.device)  # (1, k, 3, S, S)
        labels = torch.stack([torch.from_numpy(r.network_label(self.image_size)) for r in references])[None].to(self.device)
        with autocast(self.device):
            return self.model.encode_references(images, labels)

    def set_references(self, references: Sequence[tuple[ImageLike, dict] | Reference]) -> None:
        """k annotated references, each (image, annotation dict: see make_reference) or a Reference.
        Warns (once per reference) when an annotation kind differs from the checkpoint's training kind."""
        if not references:
            raise ValueError("set_references needs at least one (image, annotation) pair")
        made = [r if isinstance(r, Reference) else make_reference(*r) for r in references]
        for n, reference in enumerate(made, 1):
            kind = ANNOTATION_KINDS[reference.kind]
            if self.trained_label not in (None, "any", kind):
                warnings.warn(f"reference {n} is annotated with {reference.kind} but this checkpoint was trained with "
                              f"{self.trained_label} annotations (train.py --label {self.trained_label}); expect lower accuracy",
                              stacklevel=2)
        self.references = made
        self._features = self._encode(made)

    @torch.no_grad()
    def predict_batch(self, images: Sequence[ImageLike], *, extra_reference: Reference | None = None) -> list[Prediction]:
        """One Prediction per target image (any size, mode, orientation), in one network batch.
        extra_reference: one more reference for this call only (--propagate's previous frame)."""
        if self._features is None:
            raise RuntimeError("call set_references before predict")
        pixels = [read_image(image) for image in images]
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

    def predict(self, image: ImageLike, **kwargs) -> Prediction:
        return self.predict_batch([image], **kwargs)[0]


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
        panels.append(_panel(r.image, r.mask, ANNOTATION_COLOUR, height, grow=max(1, height // 100) if r.kind in ("points", "scribble") else 0))
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


def _parse_points(text: str) -> list[tuple[float, float]]:
    try:
        points = [tuple(float(v) for v in pair.split(",")) for pair in text.replace(" ", "").split(";") if pair]
    except ValueError:
        points = []
    if not points or any(len(p) != 2 for p in points):
        raise argparse.ArgumentTypeError(f"{text!r}: expected x,y pairs separated by ';', e.g. --points \"120,80;140,95\"")
    return points


def _parse_box(text: str) -> tuple[float, ...]:
    try:
        box = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise argparse.ArgumentTypeError(f"{text!r}: expected x0,y0,x1,y1 (pixels, inclusive), e.g. --box 10,20,200,180")
    return box


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segment.py", description="Segment images from annotated reference images with a trained VRP-SAM.",
                                     formatter_class=cli.HelpFormatter)
    group = parser.add_argument_group("model")
    group.add_argument("--checkpoint", type=Path, default=None, help="best.pt of a train.py run (--demo: the main job's)")
    group.add_argument("--sam-checkpoint", type=Path, default=None, help="SAM weights, if not where the run had them")
    cli.add_runtime_args(group, workers=False, cache=None, no_cache=False)
    group = parser.add_argument_group("references (each --reference followed by one annotation, in order)")
    group.add_argument("--reference", type=Path, action="append", default=[], help="reference image (repeat for k-shot)")
    group.add_argument("--mask", type=Path, action=_Annotation, help="PNG of the reference's size: non-zero = object")
    group.add_argument("--class-id", type=cli.positive_int, action=_Annotation, help="with --mask: the object is this label value")
    group.add_argument("--points", type=_parse_points, action=_Annotation, help="clicks on the object: \"x,y;x,y\"")
    group.add_argument("--box", type=_parse_box, action=_Annotation, help="the object's box: x0,y0,x1,y1")
    group.add_argument("--scribble", type=Path, action=_Annotation, help="strokes on an empty PNG of the reference's size")
    group = parser.add_argument_group("targets and output")
    group.add_argument("--targets", nargs="+", default=[], help="image files, globs or folders (sorted by name)")
    group.add_argument("--out", type=Path, default=None,
                       help="output folder (--demo: the PNG to write; default: demo.png beside the checkpoint)")
    group.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    group.add_argument("--propagate", action="store_true",
                       help="video: also use the previous frame's prediction as a mask reference (beyond the paper; one frame at a time)")
    group.add_argument("--batch-size", type=cli.positive_int, default=8, help="targets per network batch")
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
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
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


def check_inputs(args: argparse.Namespace) -> tuple[dict, list[Reference], list[Path], dict[Path, dict[str, Path]]]:
    """Everything a run needs, checked before any model is built or file written: the checkpoint,
    the references with their annotations, every target decoded once, the output paths."""
    if not args.reference:
        raise ValueError("give at least one --reference image with its annotation (--mask, --points, --box or --scribble)")
    annotations = getattr(args, "annotations", None) or []
    if len(annotations) != len(args.reference):
        raise ValueError(f"{len(args.reference)} --reference image(s) but {len(annotations)} annotation(s): follow each "
                         "--reference with one --mask, --points, --box or --scribble")
    if not args.targets:
        raise ValueError("give --targets (image files, globs or folders)")
    if args.out is None:
        raise ValueError("give --out, the folder the masks, overlays and results.jsonl go to")
    if args.checkpoint is None:
        raise ValueError("give --checkpoint, a best.pt written by train.py")
    state = load_checkpoint(args.checkpoint)
    references = []
    for image, (kind, value, class_id) in zip(args.reference, annotations):
        annotation = {kind: value} if class_id is None else {kind: value, "class_id": class_id}
        references.append(make_reference(image, annotation, name=str(image)))
    targets = expand_targets(args.targets)
    outputs, names = {}, {}
    for path in tqdm(targets, desc="checking targets", leave=False, disable=len(targets) < 50):
        read_image(path)  # an unreadable target stops the run before anything is written
        if path.stem in names:
            raise ValueError(f"--targets {names[path.stem]} and {path} would both write {path.stem}.png: "
                             "segment them into separate --out folders")
        names[path.stem] = path
        outputs[path] = {"mask": args.out / "masks" / f"{path.stem}.png", "overlay": args.out / "overlays" / f"{path.stem}.png"}
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
    predictor = VRPPredictor.from_state(state, device=args.device, sam_checkpoint=args.sam_checkpoint, cache_dir=args.cache_dir)
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
            line = {"file": str(path), "mask": str(outputs[path]["mask"]), "area": round(prediction.area, 6),
                    "mean_probability": None if prediction.mean_probability is None else round(prediction.mean_probability, 6),
                    "seconds": round(seconds, 4)}
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
    print(f"segmented {len(lines)} target(s) in {total:.1f} s ({len(lines) / max(total, 1e-9):.2f} targets/s) -> {args.out}")
    return lines


# ---------------------------------------------------------------------------------------------
# --demo: synthetic scenes, no download
# ---------------------------------------------------------------------------------------------

def demo(args: argparse.Namespace, *, targets_per_class: int = 4) -> dict:
    """Segment fresh synthetic scenes of the checkpoint's novel classes and write one contact sheet:
    a row per class, the annotated reference then the targets with their predicted masks."""
    checkpoint = args.checkpoint or DEMO_CHECKPOINT
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
    _check_out_folder(out.parent)
    predictor = VRPPredictor.from_state(state, device=args.device, sam_checkpoint=args.sam_checkpoint)
    _make_out_folder(out.parent)
    kind = run.get("label", "mask")
    kind = "mask" if kind == "any" else kind
    size = int(run.get("image_size", 128))
    rng = np.random.default_rng([args.seed, SEED_STREAMS["demo"]])
    rows, ious = [], []
    classes = data.fold_classes("synthetic", int(run.get("fold", 0)), "test")
    for class_id in classes:
        reference = synthetic_scene(rng, classes=[class_id], num_distractors=2, size=size)
        annotation = simulate_annotation(np.where(reference.label == IGNORE, IGNORE, reference.label == class_id), kind, rng)
        value = {"point": {"points": annotation.points}, "box": {"box": annotation.box},
                 "scribble": {"scribble": annotation.mask}, "mask": {"mask": annotation.mask}}[kind]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predictor.set_references([(reference.image, value)])
        scenes = []
        for _ in range(targets_per_class):
            others = rng.choice([c for c in range(1, SYNTHETIC_NUM_CLASSES + 1) if c != class_id], size=rng.integers(1, 3), replace=False)
            scenes.append(synthetic_scene(rng, classes=[class_id, *others.tolist()][::rng.choice([1, -1])],
                                          num_distractors=int(rng.integers(0, 3)), size=size))
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
    return cli.run_main("segment.py", demo if args.demo else segment, args)


if __name__ == "__main__":
    main()
