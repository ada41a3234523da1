"""PASCAL-Part one-shot part segmentation (paper Appendix, Table 15), on Matcher's benchmark.

Table 15 compares VRP-SAM with Painter, SegGPT and PerSAM on the part-segmentation benchmark of
Matcher (Liu et al., ICLR 2024; github aim-uofa/Matcher, ``matcher/data/pascal_part.py``), read here
from the layout a user downloads (``LAYOUT``):

- Folds: four, one per super-category (``FOLDS``: animals, indoor, person, vehicles).
- Classes (``part_classes``): every object+part pair of all_obj_part_to_image.json that lists both
  train and val images, aeroplane+TAIL left out (``LEFT_OUT``), as Matcher does. Ids run from 1
  over the four folds in FOLDS order, each fold's pairs in the file's (and Matcher's) order: the
  pair Matcher numbers k in fold f has id k + 1 + the number of pairs in the folds before f.
- Episodes: episode i tests class i mod n (the fold's n classes in turn). Its target and k
  references are k + 1 different images listed for the part; in each, one object of the class is
  chosen, the mask is the union of that part's masks (COCO RLE) within that object, and image and
  mask are cropped to the object's box (Matcher's box_crop=True, ``crop_box``).
  (image, object) pairs are drawn with the probabilities of Matcher's loop: a list entry uniformly
  (the raw list, so an image listed twice is drawn twice as often), an object of the class in that
  image uniformly, again if that object has no such part. An object whose part has no pixel inside
  its crop stays a candidate, with an empty mask, as in Matcher; an empty reference gets an empty
  label whatever the label kind. We draw that distribution in one step from a seeded generator, and
  the list is fixed before any item is read. Two departures, where Matcher would stop with an
  error if it drew the pair: a listed image without an object of the class is passed over, and so
  is an object whose crop has no pixel (a box of zero width or height).
- Boxes (``box_convention``): whether the files' boxes are 0-based or VOC's 1-based decides which
  row and column Matcher's slice leaves out; it is read off the boxes themselves and logged once.
- Episode count (``episode_count``): Matcher's, min(2500, the lengths of the fold's val image
  lists summed over all its object+part pairs).

Items are the dicts of ``data.EpisodeDataset.episode_item`` (target_image (3, S, S), target_mask
(S, S) in {0, 1}, reference_images (k, 3, S, S), reference_masks, reference_labels (k, S, S),
class_id, label, target_id, reference_ids, episode; target_mask_original (h, w) with
original_size), so ``data.collate_episodes`` and ``evaluate.evaluate_episodes`` take them as they
are. S is whatever the network is run at (``image_size``); nothing here assumes one.

Exposes ``FOLDS``, ``LAYOUT``, ``missing_files``, ``check_layout``, ``part_classes``,
``episode_count``, ``crop_box``, ``box_convention``, ``PartAnnotations``, ``PartEpisodes`` (the fixed test list),
``PartTrainingEpisodes`` (meta-training on the other three super-categories),
``build_part_episodes`` (the entry point), ``episodes_hash`` and ``format_part_table``.
It lives apart from data.py because it is a side benchmark with its own files and episode rule.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

import data
import prompts
from prompts import SEED_STREAMS

log = logging.getLogger(__name__)

DATASET = "pascal-part"
FOLDS = ("animals", "indoor", "person", "vehicles")  # fold i tests the parts of FOLDS[i]
LEFT_OUT = ("aeroplane+TAIL",)  # pairs Matcher leaves out although they have train and val images
MAX_EPISODES = 2500  # Matcher's cap on a fold's test episodes
# "test": the fold's pairs on their val images; "train": the other three super-categories' on their train images.
SPLITS = ("train", "test")

INDEX_FILE = "all_obj_part_to_image.json"
ANNOTATION_DIR = "Annotations_Part_json_merged_part_classes"
IMAGE_DIR = "JPEGImages"
MATCHER_ANNOTATIONS = ("Matcher's pascal.zip, https://drive.google.com/file/d/1WaM0VM6I9b3u3v3w-QzFLJI8d3NRumTK "
                       "(linked from github.com/aim-uofa/Matcher datasets/README.md)")
VOC2010_IMAGES = ("VOC2010 train/val images, VOCtrainval_03-May-2010.tar from "
                  "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/")
LAYOUT = f"""PASCAL-Part (Table 15, Matcher's layout) expects under --data-root:
  Pascal-Part/VOCdevkit/VOC2010/{IMAGE_DIR}/<id>.jpg
  Pascal-Part/VOCdevkit/VOC2010/{ANNOTATION_DIR}/<id>.json
  Pascal-Part/VOCdevkit/VOC2010/{INDEX_FILE}
The images are the {VOC2010_IMAGES}.
The part JSONs and the index come from {MATCHER_ANNOTATIONS};
Matcher made them from the PASCAL-Part annotations (Chen et al. 2014,
http://roozbehm.info/pascal-parts/trainval.tar.gz), which are not read here.
--data-root may also be the Pascal-Part, VOCdevkit or VOC2010 folder itself."""

# Seed-sequence keys (data.py uses 5_000_003/4 for its lists, synthetic.py 5_000_001/2 and 5_000_011/12).


# ---------------------------------------------------------------------------------------------
# The layout and the class list
# ---------------------------------------------------------------------------------------------

def voc2010_folder(data_root: str | Path) -> Path:
    """The VOC2010 folder under data_root (Matcher's datasets/ folder, or Pascal-Part/, VOCdevkit/ or
    VOC2010/ itself): the first candidate holding any of the expected entries, else Matcher's place."""
    root = Path(data_root)
    candidates = [root / "Pascal-Part" / "VOCdevkit" / "VOC2010", root / "VOCdevkit" / "VOC2010",
                  root / "VOC2010", root]
    for folder in candidates:
        if any((folder / entry).exists() for entry in (INDEX_FILE, ANNOTATION_DIR, IMAGE_DIR)):
            return folder
    return candidates[0]


def missing_files(data_root: str | Path) -> list[str]:
    """Every entry of LAYOUT absent under data_root, as "<path>: what it is; where to get it"."""
    voc = voc2010_folder(data_root)
    wanted = [(voc / IMAGE_DIR, f"the images, from {VOC2010_IMAGES}"),
              (voc / ANNOTATION_DIR, f"Matcher's per-image part masks (COCO RLE), from {MATCHER_ANNOTATIONS}"),
              (voc / INDEX_FILE, f"Matcher's object+part -> image lists, from {MATCHER_ANNOTATIONS}")]
    return [f"{path}: {what}" for path, what in wanted if not path.exists()]


def check_layout(data_root: str | Path | None) -> Path:
    """The VOC2010 folder, or FileNotFoundError listing every missing entry in one message."""
    if data_root is None:
        raise FileNotFoundError(f"{DATASET} needs --data-root, the folder holding Pascal-Part/.\n{LAYOUT}")
    if not Path(data_root).is_dir():
        raise FileNotFoundError(f"data root {data_root} not found.\n{LAYOUT}")
    missing = missing_files(data_root)
    if missing:
        raise FileNotFoundError(f"{DATASET}: {len(missing)} of the 3 entries of the layout are missing:\n  "
                                + "\n  ".join(missing) + f"\n{LAYOUT}")
    return voc2010_folder(data_root)


@dataclass(frozen=True)
class PartClass:
    """One class of the benchmark: a part of an object class, e.g. bird+FACE, in fold `fold`."""

    class_id: int
    fold: int
    object: str
    part: str

    @property
    def name(self) -> str:
        return f"{self.object}+{self.part}"


def read_index(path: Path) -> dict:
    """all_obj_part_to_image.json, checked: {fold name: {"object": {object: {"part": {part:
    {"train": [image ids], "val": [image ids]}}}}}} for every fold name of FOLDS."""
    fix = f"re-extract {INDEX_FILE} from {MATCHER_ANNOTATIONS}"
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} could not be read as JSON ({error}); {fix}") from error
    for fold in FOLDS:
        entry = index.get(fold) if isinstance(index, dict) else None
        objects = entry.get("object") if isinstance(entry, dict) else None
        if not isinstance(objects, dict):
            raise ValueError(f"{path} has no '{fold}' entry with an 'object' table: expected Matcher's "
                             f"{INDEX_FILE}; {fix}")
        for obj, entry in objects.items():
            parts = entry.get("part") if isinstance(entry, dict) else None
            if not isinstance(parts, dict) or not all(
                    isinstance(lists, dict) and all(isinstance(lists.get(s), list) for s in ("train", "val"))
                    for lists in parts.values()):
                raise ValueError(f"{path}: {fold} object '{obj}' lacks a 'part' table of {{part: {{'train': [...], "
                                 f"'val': [...]}}}}; {fix}")
    return index


def part_classes(index: Mapping) -> tuple[PartClass, ...]:
    """The class-list rule: the object+part pairs with both train and val images, minus LEFT_OUT,
    numbered 1.. over the folds in FOLDS order and each fold's pairs in the file's order."""
    classes = []
    for fold, name in enumerate(FOLDS):
        for obj, entry in index[name]["object"].items():
            for part, lists in entry["part"].items():
                if lists["train"] and lists["val"] and f"{obj}+{part}" not in LEFT_OUT:
                    classes.append(PartClass(len(classes) + 1, fold, obj, part))
    return tuple(classes)


def episode_count(index: Mapping, fold: int) -> int:
    """Matcher's number of test episodes of a fold: its val image lists summed over every
    object+part pair of the super-category (left-out pairs too, repeats counted), capped at 2500."""
    objects = index[FOLDS[fold]]["object"].values()
    listed = sum(len(part["val"]) for entry in objects for part in entry["part"].values())
    return min(listed, MAX_EPISODES)


# ---------------------------------------------------------------------------------------------
# Per-image annotations: objects, their boxes and their parts' RLE masks
# ---------------------------------------------------------------------------------------------

def crop_box(bndbox: Mapping, height: int, width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of an object's crop: image[y0:y1, x0:x1], Matcher's slice of the box's
    xmin, ymin, xmax, ymax as the file stores them, clipped to the image. Which row and column of
    the box this leaves out depends on the files' convention (``box_convention``): the last ones
    for 0-based boxes with an inclusive max, the first ones for VOC's 1-based boxes, none for
    0-based boxes with an exclusive max."""
    x0, y0, x1, y1 = (int(float(bndbox[key])) for key in ("xmin", "ymin", "xmax", "ymax"))
    return (min(max(x0, 0), width), min(max(y0, 0), height), min(max(x1, 0), width), min(max(y1, 0), height))


@dataclass(frozen=True)
class BoxConvention:
    """What the boxes of the part JSONs say about their convention (``box_convention``).

    boxes: boxes looked at (those of objects in an image with at least one mask, whose size is
    known); zero: how many have a coordinate 0; edge: how many reach x = width or y = height.
    """

    boxes: int
    zero: int
    edge: int

    @property
    def name(self) -> str:
        """One of "0-based", "1-based", "0-based, max exclusive" and "undetermined"."""
        if self.zero and self.edge:
            return "0-based, max exclusive"
        return "0-based" if self.zero else "1-based" if self.edge else "undetermined"

    def describe(self) -> str:
        """One sentence: the conclusion, its evidence and what Matcher's slice does under it."""
        evidence = (f"{self.zero} of {self.boxes} boxes have a coordinate 0, "
                    f"{self.edge} reach the image's width or height")
        effect = {"0-based": "if xmax and ymax are inclusive, Matcher's crop [ymin:ymax, xmin:xmax] leaves out each "
                             "box's last row and column",
                  "1-based": "as VOC's; Matcher's crop [ymin:ymax, xmin:xmax] leaves out each box's first row and "
                             "column and keeps its last",
                  "0-based, max exclusive": "Matcher's crop [ymin:ymax, xmin:xmax] is each box exactly",
                  "undetermined": "which row and column Matcher's crop [ymin:ymax, xmin:xmax] leaves out is open"}
        return f"boxes {self.name} ({evidence}): {effect[self.name]}"


def box_convention(sized_boxes: Iterable[tuple[Mapping, int, int]]) -> BoxConvention:
    """Whether boxes are 0-based or VOC's 1-based, from (bndbox, height, width) triples.

    A 1-based pixel coordinate is never 0, so a coordinate 0 proves 0-based boxes; an inclusive
    0-based max is at most width - 1 (height - 1), so xmax = width or ymax = height proves 1-based
    boxes. Both at once is what 0-based boxes with an exclusive max (a half-open range) show;
    neither leaves the question open.
    """
    boxes = zero = edge = 0
    for bndbox, height, width in sized_boxes:
        x0, y0, x1, y1 = (int(float(bndbox[key])) for key in ("xmin", "ymin", "xmax", "ymax"))
        boxes += 1
        zero += 0 in (x0, y0, x1, y1)
        edge += x1 == width or y1 == height
    return BoxConvention(boxes, zero, edge)


_BOX_CONVENTIONS_LOGGED: set[tuple[str, str]] = set()  # (annotation folder, conclusion): each said once


def log_box_convention(annotation_dir: Path, convention: BoxConvention) -> None:
    """Log the conclusion for the folder once per process (every fold and label kind reads the same files)."""
    key = (str(annotation_dir), convention.name)
    if key not in _BOX_CONVENTIONS_LOGGED:
        _BOX_CONVENTIONS_LOGGED.add(key)
        log.info("%s: %s", annotation_dir, convention.describe())


def image_shape(objects: Sequence[dict]) -> tuple[int, int] | None:
    """(h, w) of the image a part JSON describes, from its first mask's size; None if it has no mask."""
    for obj in objects:
        for part in obj["parts"]:
            h, w = part["mask"][0]["size"]
            return int(h), int(w)
    return None


@dataclass(frozen=True)
class Member:
    """One image of an episode: the image id and which of its JSON's objects is cropped."""

    image: str
    object: int


class PartAnnotations:
    """Matcher's per-image JSONs and the VOC2010 images under one VOC2010 folder.

    A JSON holds {"object": [{"name": object class, "bndbox": {"xmin", "ymin", "xmax", "ymax"},
    "parts": [{"name": part, "mask": [COCO RLE {"size": [h, w], "counts"}, ...]}, ...]}, ...]}.
    """

    def __init__(self, voc: Path):
        self.voc = Path(voc)
        self.image_dir, self.annotation_dir = self.voc / IMAGE_DIR, self.voc / ANNOTATION_DIR

    def read(self, image: str) -> list[dict]:
        """The image's objects, each checked as the class docstring says."""
        path = self.annotation_dir / f"{image}.json"
        fix = f"re-extract it from {MATCHER_ANNOTATIONS}"
        try:
            annotation = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} not found, but {INDEX_FILE} lists image {image}: {fix}") from None
        except (OSError, ValueError) as error:
            raise ValueError(f"{path} could not be read as JSON ({error}): {fix}") from error
        objects = annotation.get("object") if isinstance(annotation, dict) else None
        if not isinstance(objects, list):
            raise ValueError(f"{path} has no 'object' list: expected one of Matcher's part JSONs; {fix}")
        for k, obj in enumerate(objects):
            box = obj.get("bndbox") if isinstance(obj, dict) else None
            if not isinstance(box, dict) or not {"xmin", "ymin", "xmax", "ymax"} <= box.keys() \
                    or not isinstance(obj.get("name"), str) or not isinstance(obj.get("parts"), list):
                raise ValueError(f"{path}: object {k} lacks a 'name', a 'bndbox' with xmin, ymin, xmax, ymax, or a "
                                 f"'parts' list; {fix}")
            for part in obj["parts"]:
                masks = part.get("mask") if isinstance(part, dict) else None
                if not isinstance(masks, list) or not masks or not all(
                        isinstance(m, dict) and "counts" in m and "size" in m for m in masks):
                    name = part.get("name") if isinstance(part, dict) else part
                    raise ValueError(f"{path}: part {name!r} of object {k} ({obj['name']}) has no mask (expected a "
                                     f"non-empty list of COCO RLE dicts with 'size' and 'counts'); {fix}")
        return objects

    def part_mask(self, image: str, objects: Sequence[dict], k: int, part: str) -> np.ndarray:
        """(h, w) bool: the union of all masks of `part` within object k of `image`; (0, 0) if it has none."""
        rles = []
        for entry in objects[k]["parts"]:
            if entry.get("name") == part:
                for m in entry["mask"]:
                    h, w = m["size"]
                    counts = m["counts"]
                    # Matcher's files hold compressed RLE strings; an uncompressed count list works too.
                    rles.append({"size": [h, w], "counts": counts.encode("ascii")} if isinstance(counts, str)
                                else mask_utils.frPyObjects(m, h, w))
        if not rles:
            return np.zeros((0, 0), bool)
        if len({tuple(r["size"]) for r in rles}) > 1:
            raise ValueError(f"{self.annotation_dir / image}.json: the masks of part {part} of object {k} have "
                             f"different sizes; re-extract it from {MATCHER_ANNOTATIONS}")
        with warnings.catch_warnings():
            # pycocotools 2.0 warns on every decode under numpy 2 (its __array__ lacks `copy`); harmless.
            warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
            return mask_utils.decode(rles).any(axis=2)

    def holders(self, objects: Sequence[dict], obj: str, part: str) -> tuple[int, list[int]]:
        """(how many objects of class `obj` the image has, those of them that list `part` and whose
        crop box has a pixel). Matcher's loop takes any object that lists the part, even one whose
        part lies outside its crop; a crop without a pixel would stop Matcher with an error."""
        named = [k for k, o in enumerate(objects) if o["name"] == obj]
        holding = []
        for k in named:
            masks = [m for entry in objects[k]["parts"] if entry.get("name") == part for m in entry["mask"]]
            if masks:
                height, width = masks[0]["size"]
                x0, y0, x1, y1 = crop_box(objects[k]["bndbox"], int(height), int(width))
                if x1 > x0 and y1 > y0:
                    holding.append(k)
        return len(named), holding

    def load(self, member: Member, part: str) -> tuple[np.ndarray, np.ndarray]:
        """The member's crop: (h, w, 3) uint8 RGB image and (h, w) uint8 part mask in {0, 1}."""
        objects = self.read(member.image)
        if member.object >= len(objects):
            raise ValueError(f"{self.annotation_dir / member.image}.json has {len(objects)} objects, the episode list "
                             f"wants object {member.object}: the file changed after the list was built; run again")
        mask = self.part_mask(member.image, objects, member.object, part)
        if not mask.size:
            raise ValueError(f"{self.annotation_dir / member.image}.json: object {member.object} has no part {part}, "
                             "but the episode list wants it: the file changed after the list was built; run again")
        path = self.image_dir / f"{member.image}.jpg"
        try:
            with Image.open(path) as pil:
                image = np.array(pil.convert("RGB"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} not found, but {INDEX_FILE} lists image {member.image}: extract it "
                                    f"from {VOC2010_IMAGES}") from None
        except OSError as error:
            raise OSError(f"{path} could not be read ({error}): extract it again from {VOC2010_IMAGES}") from error
        if mask.shape != image.shape[:2]:
            raise ValueError(f"{self.annotation_dir / member.image}.json has {mask.shape[1]}x{mask.shape[0]} masks for "
                             f"part {part} but {path} is {image.shape[1]}x{image.shape[0]}: the part JSONs belong to "
                             "VOC2010's images; re-extract both")
        x0, y0, x1, y1 = crop_box(objects[member.object]["bndbox"], *mask.shape)
        return image[y0:y1, x0:x1], mask[y0:y1, x0:x1].astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PartEpisode:
    """One episode: the class, the target and its k references (each an image and an object)."""

    class_id: int
    target: Member
    references: tuple[Member, ...]


class _Candidates:
    """The (image, object) pairs that may stand for one class, with Matcher's probabilities: an image
    listed m times with n objects of the class gives each of them that lists the part weight m/n."""

    def __init__(self, members: Sequence[Member], weights: Sequence[float]):
        self.members = tuple(members)
        self.images = np.array([m.image for m in members])
        self.weights = np.asarray(weights, np.float64)

    def draw(self, rng: np.random.Generator, exclude: Sequence[str] = ()) -> Member:
        """One member whose image is not in `exclude` (its images must leave one)."""
        weights = np.where(np.isin(self.images, list(exclude)), 0.0, self.weights) if exclude else self.weights
        return self.members[int(rng.choice(len(weights), p=weights / weights.sum()))]


class _PartEpisodeSource(Dataset):
    """What test and training episodes share: the candidates of each class and item building.

    box_convention: what the boxes of the part JSONs read for the split say (``BoxConvention``).
    """

    def __init__(self, voc: Path, *, fold: int, split: str, shots: int, label: str, image_size: int, seed: int,
                 original_size: bool = False):
        if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < len(FOLDS):
            names = ", ".join(f"{i} {name}" for i, name in enumerate(FOLDS))
            raise ValueError(f"fold must be 0..{len(FOLDS) - 1} ({names}), got {fold!r}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
        if label not in data.LABEL_CHOICES:
            raise ValueError(f"unknown label kind {label!r}: expected one of {', '.join(data.LABEL_CHOICES)}")
        if shots < 1:
            raise ValueError(f"shots must be at least 1, got {shots}")
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
            raise ValueError(f"image_size must be a positive int (the network's input size), got {image_size!r}")
        self.name, self.split, self.fold = DATASET, split, int(fold)
        self.shots, self.label, self.image_size = int(shots), label, int(image_size)
        self.seed, self.original_size = int(seed), bool(original_size)
        self.annotations = PartAnnotations(voc)
        self.index = read_index(Path(voc) / INDEX_FILE)
        every_class = part_classes(self.index)
        self.class_names = tuple(c.name for c in every_class)  # class_names[class_id - 1]
        # Test: the fold's parts on its val images; train: the other folds' parts on their train images.
        used = [c for c in every_class if (c.fold == self.fold) == (split == "test")]
        if not used:
            raise ValueError(f"{Path(voc) / INDEX_FILE}: no object+part pair of {self._folds_text()} has both "
                             "train and val images; is the file complete?")
        self.classes = {c.class_id: c for c in used}
        self.class_ids = tuple(self.classes)
        self.candidates = self._index_candidates(Path(voc), used)

    def _folds_text(self) -> str:
        return FOLDS[self.fold] if self.split == "test" else "+".join(n for i, n in enumerate(FOLDS) if i != self.fold)

    def _index_candidates(self, voc: Path, used: Sequence[PartClass]) -> dict[int, _Candidates]:
        lists = "val" if self.split == "test" else "train"
        # The raw lists: an image listed twice is an entry Matcher's np.random.choice draws twice as often.
        listed = {c.class_id: Counter(self.index[FOLDS[c.fold]]["object"][c.object]["part"][c.part][lists])
                  for c in used}
        present = {entry.name[:-4] for entry in os.scandir(voc / IMAGE_DIR) if entry.name.endswith(".jpg")}
        for class_id, images in listed.items():
            absent = [i for i in images if i not in present]
            if absent:
                raise FileNotFoundError(
                    f"{voc / IMAGE_DIR / (absent[0] + '.jpg')} not found, but {INDEX_FILE} lists it for "
                    f"{self.classes[class_id].name} ({lists}; {len(absent)} listed image(s) of it absent): extract "
                    f"{IMAGE_DIR}/ from {VOC2010_IMAGES}")
        # Each JSON is read once; members come in (image, object) order, whatever the lists' order.
        classes_of: dict[str, list[int]] = {}
        for class_id, images in listed.items():
            for image in images:
                classes_of.setdefault(image, []).append(class_id)
        members: dict[int, list[Member]] = {class_id: [] for class_id in listed}
        weights: dict[int, list[float]] = {class_id: [] for class_id in listed}
        sized_boxes: list[tuple[Mapping, int, int]] = []
        skipped = 0
        for image in sorted(classes_of):
            objects = self.annotations.read(image)
            shape = image_shape(objects)
            if shape is not None:
                sized_boxes += [(o["bndbox"], *shape) for o in objects]
            for class_id in classes_of[image]:
                c = self.classes[class_id]
                named, holding = self.annotations.holders(objects, c.object, c.part)
                members[class_id] += [Member(image, k) for k in holding]
                weights[class_id] += [listed[class_id][image] / named for _ in holding]
                skipped += not holding
        if skipped:  # Matcher's loop passes over these too (its object lacks the part) or stops (no such object)
            log.info("%d listed (image, object+part) pairs have no object of the class that lists the part with a "
                     "non-empty box", skipped)
        self.box_convention = box_convention(sized_boxes)
        log_box_convention(self.annotations.annotation_dir, self.box_convention)
        for class_id, found in members.items():
            images = len({m.image for m in found})
            if images < self.shots + 1:
                raise ValueError(
                    f"{DATASET} {self._folds_text()} {self.split}: {self.classes[class_id].name} is in {images} "
                    f"{lists} image(s) of {voc}, but a {self.shots}-shot episode needs a target and {self.shots} "
                    "other reference image(s) holding it; use fewer shots, or is the dataset complete?")
        return {class_id: _Candidates(members[class_id], weights[class_id]) for class_id in listed}

    def _label_kind(self, rng: np.random.Generator) -> str:
        """The episode's label kind: the dataset's, or under "any" one drawn uniformly from `rng`."""
        if self.label != data.ANY_LABEL:
            return self.label
        return prompts.LABEL_KINDS[int(rng.integers(len(prompts.LABEL_KINDS)))]

    def _draw_references(self, rng: np.random.Generator, class_id: int, target: Member) -> tuple[Member, ...]:
        chosen: list[Member] = []
        for _ in range(self.shots):  # k images, none the target's and no two alike
            chosen.append(self.candidates[class_id].draw(rng, [target.image] + [m.image for m in chosen]))
        return tuple(chosen)

    def episode_item(self, index: int, episode: PartEpisode, annotation_rngs: Sequence[np.random.Generator],
                     kind: str) -> dict:
        """The item dict of data.EpisodeDataset.episode_item for one episode (module docstring)."""
        size, part = self.image_size, self.classes[episode.class_id].part
        image, mask = self.annotations.load(episode.target, part)
        item = {"target_image": data.image_tensor(image, size),
                "target_mask": torch.from_numpy(data.resize_mask(mask, size).astype(np.int64))}
        reference_images, reference_masks, reference_labels = [], [], []
        for member, rng in zip(episode.references, annotation_rngs):
            ref_image, ref_mask = self.annotations.load(member, part)
            resized = data.resize_mask(ref_mask, size)
            reference_images.append(data.image_array(ref_image, size))
            reference_masks.append(resized)
            # A part outside its crop, or one nearest resizing erased, is Matcher's empty support mask;
            # no label kind can mark a part without a pixel, so its label is empty too.
            reference_labels.append(prompts.simulate_annotation(resized, kind, rng).mask if resized.any()
                                    else np.zeros_like(resized))
        item.update(reference_images=torch.from_numpy(np.stack(reference_images)),
                    reference_masks=torch.from_numpy(np.stack(reference_masks).astype(np.int64)),
                    reference_labels=torch.from_numpy(np.stack(reference_labels).astype(np.float32)),
                    class_id=episode.class_id, target_id=member_id(episode.target),
                    reference_ids=[member_id(m) for m in episode.references], episode=index, label=kind)
        if self.original_size:
            item["target_mask_original"] = torch.from_numpy(mask.astype(np.int64))
        return item


def member_id(member: Member) -> str:
    """The id of a cropped image, e.g. "pascal-part/2008_000021/object1" (it keys the SAM embedding
    cache together with the pixels, so each object's crop is its own entry)."""
    return f"{DATASET}/{member.image}/object{member.object}"


class PartEpisodes(data.FixedEpisodeList, _PartEpisodeSource):
    """A fold's fixed test episodes (num_episodes: default Matcher's count, ``episode_count``).

    Built once from prompts.episode_rng(seed, stream): first every target (episode i's class is the
    fold's (i mod n)-th), so they are the same for every k, then the references. Reference j of
    episode i is labelled with prompts.episode_rng(seed, i, j). Nothing depends on batch size,
    workers or item order.
    """

    def __init__(self, voc: Path, *, num_episodes: int | None = None, **kwargs):
        super().__init__(voc, split="test", **kwargs)
        if num_episodes is None:
            num_episodes = episode_count(self.index, self.fold)
        if num_episodes < 1:
            raise ValueError(f"num_episodes must be positive, got {num_episodes}")
        rng = prompts.episode_rng(self.seed, SEED_STREAMS["part-episode-list"])
        classes = [self.class_ids[i % len(self.class_ids)] for i in range(num_episodes)]
        targets = [self.candidates[c].draw(rng) for c in classes]
        self.episodes = tuple(PartEpisode(c, t, self._draw_references(rng, c, t)) for c, t in zip(classes, targets))
        # A stream of its own, so label="any" lists hold the same episodes as every other kind's.
        kinds = prompts.episode_rng(self.seed, SEED_STREAMS["part-label-kind"])
        self.label_kinds = tuple(self._label_kind(kinds) for _ in self.episodes)


class PartTrainingEpisodes(data.EpochKeyed, _PartEpisodeSource):
    """Meta-training episodes on the parts of the other three super-categories (their train images),
    a pure function of (seed, epoch, index) like data.TrainingEpisodes: item `index` of epoch e
    tests class (index mod n) and draws everything from prompts.episode_rng(seed, stream, e, index),
    with the test episodes' draw (Matcher's probabilities). len(), our epoch, is the training lists'
    lengths summed over the classes, repeats counted (Matcher meta-trains nothing on parts, so it
    has no such length). An item is asked for by `index` (of the epoch set by set_epoch) or by the
    pair (epoch, index) (data.EpochOrder).
    """

    def __init__(self, voc: Path, **kwargs):
        super().__init__(voc, split="train", **kwargs)
        self.length = sum(len(self.index[FOLDS[c.fold]]["object"][c.object]["part"][c.part]["train"])
                          for c in self.classes.values())
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = self.epoch_and_index(key)
        rng = prompts.episode_rng(self.seed, SEED_STREAMS["part-training"], epoch, index)
        class_id = self.class_ids[index % len(self.class_ids)]
        target = self.candidates[class_id].draw(rng)
        episode = PartEpisode(class_id, target, self._draw_references(rng, class_id, target))
        return self.episode_item(int(index), episode, [rng] * self.shots, self._label_kind(rng))


def build_part_episodes(data_root: str | Path | None, *, fold: int, split: str = "test", shots: int = 1,
                        label: str = "mask", image_size: int, seed: int = 0, num_episodes: int | None = None,
                        original_size: bool = False) -> PartEpisodes | PartTrainingEpisodes:
    """PASCAL-Part episodes of fold `fold` (FOLDS[fold]): the entry point for evaluate.py and train.py.

    data_root: the folder holding Pascal-Part/ (LAYOUT); checked first, every missing entry named.
    split: "test" (Table 15): the fold's parts on its val images, a fixed list (PartEpisodes);
        "train": the other three super-categories' parts on their train images (PartTrainingEpisodes).
    shots, label: k references, each with a simulated label (prompts.LABEL_KINDS, or "any").
    image_size: S, the network's input size (the checkpoint's); crops are resized to S x S.
    num_episodes: test episodes; None = Matcher's count (episode_count: at most 2500).
    original_size: items also carry target_mask_original, the target mask at its crop's size.
    """
    voc = check_layout(data_root)
    common = dict(fold=fold, shots=shots, label=label, image_size=image_size, seed=seed, original_size=original_size)
    if split == "train":
        return PartTrainingEpisodes(voc, **common)
    if split != "test":
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return PartEpisodes(voc, num_episodes=num_episodes, **common)


def episodes_hash(dataset: PartEpisodes) -> str:
    """A short sha256 (16 hex digits) of the fixed episode list (data.episodes_hash's counterpart)."""
    if not isinstance(dataset, PartEpisodes):
        raise TypeError(f"only test episodes are a fixed list; got {type(dataset).__name__}")
    record = {"dataset": DATASET, "split": dataset.split, "fold": dataset.fold, "shots": dataset.shots,
              "label": dataset.label, "seed": dataset.seed,
              "episodes": [{"class": e.class_id, "target": [e.target.image, e.target.object],
                            "references": [[m.image, m.object] for m in e.references]} for e in dataset.episodes]}
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def format_part_table(title: str, rows: Mapping, folds: Sequence[int] = tuple(range(len(FOLDS)))) -> str:
    """Table 15's layout: mIoU (%) per super-category and their mean.

    rows: {(label, shots): {fold: result}} as evaluate.py collects them (a plain string key works
    too), each result holding "miou" and "episodes" (evaluate.evaluate_episodes' dict).
    """
    keys = [key if isinstance(key, str) else f"{key[0]} {key[1]}-shot" for key in rows]
    width = max([12] + [len(k) + 2 for k in keys])
    lines = [f"{title}: part segmentation on PASCAL-Part (Table 15), mIoU (%)",
             f"{'':<{width}}" + "".join(f"{FOLDS[f]:>10}" for f in folds) + f"{'mean':>10}"]
    for key, results in zip(keys, rows.values()):
        cells = "".join(f"{results[f]['miou']:10.1f}" if f in results else f"{'-':>10}" for f in folds)
        done = [results[f]["miou"] for f in folds if f in results]
        lines.append(f"{key:<{width}}{cells}" + (f"{np.mean(done):10.1f}" if done else f"{'-':>10}"))
    counts = {f: r["episodes"] for results in rows.values() for f, r in results.items()}
    if counts:
        lines.append("episodes per fold: " + ", ".join(f"{FOLDS[f]} {counts[f]}" for f in folds if f in counts))
    if any(f not in results for results in rows.values() for f in folds):
        lines.append("the mean is over the folds evaluated only")
    return "\n".join(lines)
