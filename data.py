"""Few-shot segmentation benchmarks and their episodes (paper §5.1 "Datasets", Appendix B, Tables 8-10).

Benchmarks (``DATASETS``), each read from the layout researchers already have on disk:

- ``pascal``: PASCAL-5i. VOC2012 images with the SBD-augmented labels (``SegmentationClassAug``);
  train on every labelled image not in ``val.txt``, test on ``val.txt``. Fold i tests classes
  5i+1..5i+5 (Table 8) and trains on the other 15.
- ``coco``: COCO-20i. Train on train2014, test on val2014. Fold i tests the 20 classes whose 1-based
  index in COCO's 80-class order is 4k+i+1 (the interleaved split; Table 9 misprints some names).
- ``coco2pascal``: COCO-20i fold i for training, PASCAL VOC val images of the fold's Table 10 classes
  for testing, so no test class was seen in training (domain shift).
- ``synthetic``: the embedded benchmark, rendered from a seed by ``synthetic.py``: 20
  shape x appearance classes in 4 folds of 5, like PASCAL-5i; no files, 128x128, CPU-sized.

An episode is one target image, one class, and k reference images of that class (never the
target); every other class is background, so a fold's test classes are never foreground in its
training episodes. The "base" split (Table 13) is the fold's training classes tested on fixed
episodes drawn from the training images, as the paper's base-class evaluation is. As in the list
files the authors' code reads, a PASCAL/COCO image holds a class only where the class covers at
least MIN_OBJECT_PIXELS (2 x 32 x 32) pixels. Training episodes are a pure function of (seed, epoch,
index); evaluation episodes are a fixed list of N per fold built once from the seed
(``write_episodes`` / ``episodes_hash`` prove two runs used the same pairs). Every item is a dict:

    target_image      (3, S, S) float32, ImageNet-normalised
    target_mask       (S, S) int64: 0 background, 1 object, 255 ignore (PASCAL boundaries)
    reference_images  (k, 3, S, S) float32
    reference_masks   (k, S, S) int64 in {0, 1, 255}
    reference_labels  (k, S, S) float32 in {0, 1}: the simulated user label (prompts.py)
    class_id          int, the dataset's own 1-based class id
    label             str, the references' label kind (label="any" draws one per episode)
    target_id, reference_ids, episode
    target_mask_original  (H, W) int64, only with original_size=True

Exposes ``build_dataset``, ``fold_classes``, ``class_names``, ``collate_episodes``,
``write_episodes``, ``episodes_hash``, ``denormalize`` and the class tables; for video object
segmentation (Table 16, run by video.py), ``DavisVideos`` (DAVIS 2017's semi-supervised layout),
``read_davis_annotation`` and ``davis_palette``. prepare.py writes the label layouts read here
from the official downloads (docs/data.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

import cli
import prompts
from prompts import IGNORE, SEED_STREAMS
from synthetic import SYNTHETIC_CLASS_NAMES, SyntheticImages

log = logging.getLogger(__name__)

DATASETS = ("pascal", "coco", "coco2pascal", "synthetic")
# "train": the fold's training classes on the training images, fresh episodes every epoch;
# "test": its test (novel) classes on the test images, a fixed list; "base" (Table 13): the
# training classes on the training images, a fixed list like "test".
SPLITS = ("train", "test", "base")
# Datasets with training images, hence a base set; a test-only dataset stays out of this tuple.
BASE_SPLIT_DATASETS = ("pascal", "coco", "coco2pascal", "synthetic")
NUM_FOLDS = 4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# An image holds a class only if the class covers at least this many of its pixels: the rule
# (PFENet's, 2 x 32 x 32) behind the list files the authors' code reads for PASCAL and COCO.
MIN_OBJECT_PIXELS = 2 * 32 * 32

PASCAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
# COCO's 80 classes in its own order (ascending category id); class id = position + 1.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
# The category ids of instances_*.json, in the same order (COCO skips 12, 26, 29, 30, 45, 66, 68, 69, 71, 83).
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
# Table 10: the PASCAL classes tested after training on COCO-20i fold i (PASCAL ids, 1-based).
COCO2PASCAL_FOLDS = (
    (1, 4, 9, 11, 12, 15),  # aeroplane, boat, chair, diningtable, dog, person
    (2, 6, 13, 18),  # bicycle, bus, horse, sofa
    (3, 7, 16, 17, 19, 20),  # bird, car, pottedplant, sheep, train, tvmonitor
    (5, 8, 10, 14),  # bottle, cat, cow, motorbike
)

# Seed-sequence key of the evaluation episode lists (synthetic.py keeps the other streams' keys apart).
# label="any": each episode draws its references' label kind uniformly from prompts.LABEL_KINDS,
# so one encoder learns all four (the authors' code has this draw, commented out, per batch).
ANY_LABEL = "any"
LABEL_CHOICES = (*prompts.LABEL_KINDS, ANY_LABEL)


def fold_classes(name: str, fold: int, split: str) -> list[int]:
    """The class ids of `name`'s fold `fold` used by `split` (SPLITS), ascending; "base" = "train".

    pascal / synthetic: test 5i+1..5i+5 (Table 8), train the other 15.
    coco: test the ids 4k+i+1, k = 0..19 (the interleaved rule), train the other 60.
    coco2pascal: train as coco; test the PASCAL ids of Table 10 (COCO2PASCAL_FOLDS).
    """
    _check_choice("dataset", name, DATASETS)
    _check_choice("split", split, SPLITS)
    if split == "base" and name not in BASE_SPLIT_DATASETS:
        raise ValueError(f"{name} has no training images, so no base set (Table 13): evaluate it on its test split")
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < NUM_FOLDS:
        raise ValueError(f"fold must be 0..{NUM_FOLDS - 1}, got {fold!r}")
    fold = int(fold)
    if name == "coco2pascal" and split == "test":
        return list(COCO2PASCAL_FOLDS[fold])
    if name in ("coco", "coco2pascal"):
        test = [4 * k + fold + 1 for k in range(20)]
        total = len(COCO_CLASSES)
    else:
        test = list(range(5 * fold + 1, 5 * fold + 6))
        total = len(PASCAL_CLASSES)
    return test if split == "test" else [c for c in range(1, total + 1) if c not in test]


def class_names(name: str, split: str = "test") -> tuple[str, ...]:
    """Names of `name`'s class ids: class_names(name)[class_id - 1].

    Only coco2pascal depends on the split: its training and base episodes carry COCO ids, its
    test episodes PASCAL ids (the default, since tables are printed for tests).
    """
    _check_choice("dataset", name, DATASETS)
    _check_choice("split", split, SPLITS)
    if name == "pascal" or (name == "coco2pascal" and split == "test"):
        return PASCAL_CLASSES
    if name in ("coco", "coco2pascal"):
        return COCO_CLASSES
    return SYNTHETIC_CLASS_NAMES


def _check_choice(what: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}: expected one of {', '.join(choices)}")


# ---------------------------------------------------------------------------------------------
# Image sources. Each knows its image ids (unique across datasets and splits, stable: they key
# the SAM-embedding cache), which classes each image holds, and how to load an image with its
# label map. The episode datasets further down are the same for every benchmark.
# ---------------------------------------------------------------------------------------------

PASCAL_LAYOUT = """PASCAL-5i expects under --data-root:
  VOC2012/JPEGImages/<id>.jpg
  VOC2012/SegmentationClassAug/<id>.png   SBD-augmented labels: 0 background, 1-20 classes, 255 boundary
  VOC2012/ImageSets/Segmentation/val.txt  the 1,449 test images
VOC2012: http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar).
SegmentationClassAug: VOC labels augmented with SBD (Hariharan et al. 2011,
http://home.bharathh.info/pubs/codes/SBD/download.html), distributed ready-made as
SegmentationClassAug.zip with the DeepLab / PFENet / HSNet code."""

# How instances_*.json becomes semantic label PNGs: the convention of the masks HSNet, VRP-SAM and
# most COCO-20i code read, made by PFENet's parsing script (kept as RePRI's data/coco/create_masks.py).
# Only non-crowd (iscrowd=0) objects, painted in the file's order, a later object over an earlier one;
# no PNG for an image without a non-crowd object. Its name goes in the render marker: a change of
# convention re-renders. Polygons go through pycocotools, whose edges differ from the script's
# cv2.fillPoly (docs/data.md, benchmarks/coco_rasterisation.py).
COCO_MASK_CONVENTION = "pfenet"
# In a folder of rendered masks: the convention and the sha256 of the JSON's bytes they come from.
COCO_RENDER_MARKER = ".rendered-from.json"

COCO_LAYOUT = """COCO-20i expects under --data-root (or under --data-root/COCO2014):
  train2014/COCO_train2014_<id>.jpg, val2014/COCO_val2014_<id>.jpg
  and either annotations/train2014/*.png, annotations/val2014/*.png (semantic masks, the HSNet
  layout: pixel value = 1-based index in COCO's 80-class order, 0 background; `python prepare.py
  coco` writes them) or annotations/instances_train2014.json, annotations/instances_val2014.json
  (rendered once with pycocotools into --cache-dir)
COCO 2014 images and annotations: https://cocodataset.org/#download; conventions: docs/data.md"""


def missing_data(name: str, data_root: str | Path | None, *, splits: Sequence[str] = SPLITS) -> list[str]:
    """Every file or folder benchmark `name` needs for `splits` that is absent under data_root, each
    as "<path>: what it is; where to get it" (empty when all is there). Checks the layout only;
    the files themselves are checked when read."""
    if name == "synthetic":
        return []
    root = Path(data_root if data_root is not None else "data")
    missing = []
    for split in ("train" if split == "base" else split for split in splits):  # the base set reads the training images
        if name == "pascal" or (name == "coco2pascal" and split == "test"):
            voc = root / "VOC2012"
            wanted = [
                (
                    voc / "JPEGImages",
                    "PASCAL VOC 2012 images, from VOCtrainval_11-May-2012.tar "
                    "(http://host.robots.ox.ac.uk/pascal/VOC/voc2012/)",
                ),
                (
                    voc / "SegmentationClassAug",
                    "SBD-augmented labels, made by "
                    "`python prepare.py pascal --voc VOC2012 --sbd benchmark_RELEASE/dataset` (docs/data.md)",
                ),
                (voc / "ImageSets" / "Segmentation" / "val.txt", "the 1,449 test image names, in the VOC 2012 tar"),
            ]
        else:
            coco = root if (root / "annotations").is_dir() or not (root / "COCO2014").is_dir() else root / "COCO2014"
            folder = "train2014" if split == "train" else "val2014"
            annotations = coco / "annotations"
            wanted = [(coco / folder, f"COCO {folder} images, {folder}.zip from https://cocodataset.org/#download")]
            if not (annotations / folder).is_dir() and not (annotations / f"instances_{folder}.json").is_file():
                wanted.append((annotations / f"instances_{folder}.json", "COCO 2014 instance annotations, "
                               f"annotations_trainval2014.zip from https://cocodataset.org/#download "
                               f"(or HSNet's semantic PNGs in {annotations / folder})"))
        missing += [f"{path}: {what}" for path, what in wanted if not path.exists()]
    return list(dict.fromkeys(missing))


class PascalImages:
    """PASCAL VOC 2012 images with SBD-augmented labels (§5.1; Appendix B).

    root: the folder holding VOC2012/. split "train": every labelled image not in val.txt
    (10,582 with the standard SBD set); "test": val.txt (1,449).
    cache_dir: where the image -> classes index is kept (built once from the label PNGs).
    min_pixels: a class counts as in an image when it covers at least this many pixels.
    Ids look like "voc/2007_000032"; labels are (H, W) uint8 with 0..20 and 255.
    """

    def __init__(self, root: Path, *, split: str, cache_dir: Path, min_pixels: int = MIN_OBJECT_PIXELS,
                 progress: bool = False):
        self.root = Path(root)
        voc = self.root / "VOC2012"
        self.image_dir = voc / "JPEGImages"
        self.label_dir = voc / "SegmentationClassAug"
        val_list = voc / "ImageSets" / "Segmentation" / "val.txt"
        for path in (self.image_dir, self.label_dir):
            if not path.is_dir():
                raise FileNotFoundError(f"{path} not found.\n{PASCAL_LAYOUT}")
        if not val_list.is_file():
            raise FileNotFoundError(f"{val_list} not found.\n{PASCAL_LAYOUT}")
        val_names = sorted({line.strip() for line in val_list.read_text().splitlines() if line.strip()})

        label_names = list_stems(self.label_dir, ".png")
        index = _cached_index(
            cache_dir, "pascal", source=self.label_dir, signature=_files_signature(self.label_dir, label_names, ".png"),
            build=lambda: _index_label_pngs(self.label_dir, label_names, num_classes=20, progress=progress),
        )
        missing = [n for n in val_names if n not in index]
        if missing:
            raise FileNotFoundError(
                f"{self.label_dir / (missing[0] + '.png')} not found ({len(missing)} of the images in {val_list} "
                f"have no label).\n{PASCAL_LAYOUT}")
        names = val_names if split == "test" else sorted(set(index) - set(val_names))
        _check_images_exist(self.image_dir, names, ".jpg", PASCAL_LAYOUT)
        self.location = str(self.label_dir)
        self.ids = tuple(f"voc/{n}" for n in names)
        self.classes = {f"voc/{n}": _classes_with(index[n], min_pixels) for n in names}

    def load(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB image and its (H, W) uint8 label map."""
        name = image_id.split("/", 1)[1]
        return _read_pair(self.image_dir / f"{name}.jpg", self.label_dir / f"{name}.png", num_classes=20)


class CocoImages:
    """COCO 2014 images with semantic masks in COCO's 80-class order (§5.1; Appendix B).

    root: the folder holding train2014/, val2014/, annotations/ (or its COCO2014/ subfolder).
    split "train" reads train2014, "test" val2014.
    masks: "png" reads annotations/<split>2014/*.png; "json" renders instances_<split>2014.json
        into cache_dir once (render_coco_masks: the field's convention, COCO_MASK_CONVENTION), and
        again if the JSON or the convention changes; "auto" prefers the PNGs.
    min_pixels: a class counts as in an image when it covers at least this many pixels.
    Ids look like "coco/train2014/COCO_train2014_000000000009".
    """

    def __init__(self, root: Path, *, split: str, cache_dir: Path, masks: str = "auto",
                 min_pixels: int = MIN_OBJECT_PIXELS, progress: bool = False):
        _check_choice("COCO mask source", masks, ("auto", "png", "json"))
        root = Path(root)
        if not (root / "annotations").is_dir() and (root / "COCO2014").is_dir():
            root = root / "COCO2014"
        self.root = root
        folder = "train2014" if split == "train" else "val2014"
        self.image_dir = root / folder
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"{self.image_dir} not found.\n{COCO_LAYOUT}")
        png_dir = root / "annotations" / folder
        json_path = root / "annotations" / f"instances_{folder}.json"
        if masks == "auto":
            masks = "png" if png_dir.is_dir() else "json"
        if masks == "png":
            if not png_dir.is_dir():
                raise FileNotFoundError(f"{png_dir} not found.\n{COCO_LAYOUT}")
            self.label_dir = png_dir
            label_names = list_stems(png_dir, ".png")
            index = _cached_index(
                cache_dir, f"coco-{folder}-png", source=png_dir,
                signature=_files_signature(png_dir, label_names, ".png"),
                build=lambda: _index_label_pngs(png_dir, label_names, num_classes=80, progress=progress),
            )
        else:
            if not json_path.is_file():
                raise FileNotFoundError(f"{json_path} not found (nor {png_dir}).\n{COCO_LAYOUT}")
            # Size and time tell cheaply whether the JSON may have changed; the renderer then checks
            # its content (sha256) against the marker before it trusts a PNG in the cache.
            stat = json_path.stat()
            signature = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "convention": COCO_MASK_CONVENTION}
            self.label_dir = cache_dir / f"coco-masks-{_short_hash(str(json_path.resolve()))}" / folder

            def render() -> dict[str, list[list[int]]]:
                rendered = render_coco_masks(json_path, self.label_dir, progress=progress)
                if rendered.removed_temps:
                    log.warning("removed %d temporary files a killed run left in %s", rendered.removed_temps,
                                self.label_dir)
                return rendered.index

            index = _cached_index(cache_dir, f"coco-{folder}-json", source=json_path, signature=signature,
                                  build=render)
        occurring = {n: _classes_with(counts, min_pixels) for n, counts in index.items()}
        names = sorted(n for n, classes in occurring.items() if classes)
        _check_images_exist(self.image_dir, names, ".jpg", COCO_LAYOUT)
        self.location = str(self.label_dir)
        self.ids = tuple(f"coco/{folder}/{n}" for n in names)
        self.classes = {f"coco/{folder}/{n}": occurring[n] for n in names}

    def load(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB image and its (H, W) uint8 label map (0..80)."""
        name = image_id.rsplit("/", 1)[1]
        return _read_pair(self.image_dir / f"{name}.jpg", self.label_dir / f"{name}.png", num_classes=80)


@dataclass(frozen=True)
class CocoRender:
    """What render_coco_masks did. index: {file stem: [[class, pixels], ...]} of every PNG the folder
    now holds; written: PNGs rendered now; kept: PNGs an interrupted run had rendered from the same
    JSON and convention, read back; replaced: PNGs of another origin deleted first (`overwrite`);
    removed_temps: temporary files a killed run had left."""

    index: dict[str, list[list[int]]]
    written: int
    kept: int
    replaced: int
    removed_temps: int


def render_coco_masks(json_path: Path, out_dir: Path, *, progress: bool, overwrite: bool = True) -> CocoRender:
    """Render instances_*.json into one semantic PNG per image with a non-crowd object (single-channel,
    pixel = 1-based class in COCO's 80-class order, 0 background; the HSNet layout), following
    COCO_MASK_CONVENTION: crowd regions skipped, objects painted in the file's order.

    The one renderer of both routes: CocoImages' cache on first use and `python prepare.py coco`.
    Resumable: out_dir carries a marker holding the convention and the sha256 of the JSON's bytes,
    so a JSON touched or moved but unchanged resumes, reading back every PNG already there (each was
    written atomically). PNGs that come from another JSON content, another convention or not from
    this renderer are replaced only with `overwrite` (the cache always; `prepare.py coco` when asked);
    without it, the error names what differs.
    """
    from pycocotools.coco import COCO  # only this route needs it

    started = time.time()
    temp_suffixes = (".png", COCO_RENDER_MARKER)
    removed = cli.remove_stale_temps(out_dir, temp_suffixes, before=started - cli.STALE_TEMP_SECONDS)
    not_coco = f"{json_path} is not COCO instance annotations (instances_*2014.json: an object with lists " \
               "'images', 'annotations' and 'categories')"
    try:
        raw = json_path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()  # what the marker keys on: the content, not the path or time
        dataset = json.loads(raw)
    except (OSError, ValueError) as error:
        raise ValueError(f"{json_path} could not be read as JSON ({error}); re-download it") from error
    del raw  # train2014's is some 300 MB
    if not isinstance(dataset, dict):
        raise ValueError(f"{not_coco}; it holds a JSON {type(dataset).__name__}")
    absent = [key for key in ("images", "annotations", "categories") if not isinstance(dataset.get(key), list)]
    if absent:
        raise ValueError(f"{not_coco}; it has no {absent[0]!r} list")
    coco = COCO()  # from the dict read above: pycocotools' own reader asserts instead of explaining
    coco.dataset = dataset
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco.createIndex()
        if not all(isinstance(category, dict) and "id" in category for category in dataset["categories"]):
            raise KeyError("a category without an 'id'")
    except (KeyError, TypeError, ValueError, AssertionError) as error:
        raise ValueError(f"{not_coco}; an entry lacks a field ({type(error).__name__}: {error})") from error
    class_of = {}
    for category in dataset["categories"]:
        if category["id"] not in COCO_CATEGORY_IDS:
            raise ValueError(f"{json_path}: category id {category['id']} ({category.get('name')}) is not one of "
                             "COCO's 80 detection categories; COCO-20i needs instances_*2014.json")
        class_id = COCO_CATEGORY_IDS.index(category["id"]) + 1
        if category.get("name") != COCO_CLASSES[class_id - 1]:
            raise ValueError(f"{json_path}: category id {category['id']} is named {category.get('name')!r}, "
                             f"COCO calls it {COCO_CLASSES[class_id - 1]!r}; is this COCO 2014?")
        class_of[category["id"]] = class_id
    unknown = sorted({ann["category_id"] for ann in dataset["annotations"]} - set(class_of), key=str)
    if unknown:
        raise ValueError(f"{json_path}: annotations use category id {unknown[0]!r}, which its 'categories' list "
                         "does not define; is the file complete (re-download it)?")

    source = {"convention": COCO_MASK_CONVENTION, "json_sha256": digest,
              "json": str(json_path.resolve())}  # where it was when rendered: for messages, not compared
    marker = out_dir / COCO_RENDER_MARKER
    try:
        made = json.loads(marker.read_text())
    except (OSError, ValueError):
        made = None
    resume = isinstance(made, dict) and all(made.get(key) == source[key] for key in ("convention", "json_sha256"))
    present = set(list_stems(out_dir, ".png")) if out_dir.is_dir() else set()
    replaced = 0 if resume else len(present)
    if not resume:
        if present and not overwrite:
            raise FileExistsError(f"{out_dir} already holds {len(present)} PNGs that "
                                  f"{_coco_render_difference(made, source)}; data.py reads them as they are; "
                                  f"pass --overwrite to render {json_path.name} over them (docs/data.md)")
        for stem in sorted(present):  # before the marker, so that no PNG of another origin survives under it
            (out_dir / f"{stem}.png").unlink()
        present = set()
        cli.write_atomic(marker, json.dumps(source).encode())

    index: dict[str, list[list[int]]] = {}
    written = kept = 0
    with warnings.catch_warnings():
        # pycocotools 2.0 warns on every decode under numpy 2 (its __array__ lacks `copy`); harmless.
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        for image_id in tqdm(sorted(coco.imgs), desc=f"rendering {json_path.name}", unit="image",
                             disable=not progress, dynamic_ncols=True):
            info = coco.imgs[image_id]
            # imgToAnns keeps the file's order, which decides who is on top where objects overlap
            objects = [ann for ann in coco.imgToAnns.get(image_id, []) if ann.get("iscrowd", 0) == 0]
            if not objects:
                continue  # no PNG: the image is in no COCO-20i list
            stem = Path(info["file_name"]).stem
            if stem in present:  # rendered by an earlier, interrupted run from this very content
                index[stem] = _class_pixels(read_label(out_dir / f"{stem}.png"), 80)
                kept += 1
                continue
            try:
                label = np.zeros((info["height"], info["width"]), np.uint8)
                for ann in objects:
                    label[coco.annToMask(ann).astype(bool)] = class_of[ann["category_id"]]
            except (KeyError, TypeError, ValueError, IndexError) as error:
                raise ValueError(f"{json_path}: image {image_id} or one of its annotations is malformed "
                                 f"({type(error).__name__}: {error}); re-download the file") from error
            buffer = io.BytesIO()
            Image.fromarray(label).save(buffer, format="PNG")  # mode L: one channel of class ids
            cli.write_atomic(out_dir / f"{stem}.png", buffer.getvalue())
            index[stem] = _class_pixels(label, 80)
            written += 1
    # A run killed just before this one may have left temporary files younger than cli.STALE_TEMP_SECONDS.
    removed += cli.remove_stale_temps(out_dir, temp_suffixes, before=started)
    return CocoRender(index=index, written=written, kept=kept, replaced=replaced, removed_temps=removed)


def _coco_render_difference(made: object, source: dict) -> str:
    """How the PNGs of a folder whose marker holds `made` differ from what rendering `source` gives."""
    if not isinstance(made, dict):
        return f"this renderer did not make (no readable {COCO_RENDER_MARKER}: downloaded masks, or another tool's)"
    if "json_sha256" not in made:
        return ("an earlier version of this renderer made under another convention (crowd regions painted as "
                "their class, larger objects first, PNGs for crowd-only images)")
    differences = []
    if made.get("json_sha256") != source["json_sha256"]:
        differences.append(f"from another JSON content (sha256 {str(made['json_sha256'])[:12]}..., then at "
                           f"{made.get('json')}; this file's is {source['json_sha256'][:12]}...)")
    if made.get("convention") != source["convention"]:
        differences.append(f"under another convention ({made.get('convention')!r}; now {source['convention']!r})")
    return "were rendered " + " and ".join(differences)


# ---------------------------------------------------------------------------------------------
# Episodes (§3.2): a target, a class, and k references of that class, never the target itself.
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Episode:
    """One reference-target pair: ids of the target and its k references, and the class."""

    target_id: str
    class_id: int
    reference_ids: tuple[str, ...]


class EpisodeDataset(Dataset):
    """What training and evaluation episodes share: the class index of a split and item loading.

    images: a source (PascalImages, CocoImages, SyntheticImages) of the split.
    classes: the class ids of this split of the fold (fold_classes); every other class is
        background, so a fold's test classes are never foreground in its training episodes.
    sampling: "image" draws a target image, then one of its classes (the authors' PASCAL);
        "class" draws a class uniformly, then a target image of it (the authors' COCO).
    shots: k, the number of distinct references per episode.
    label: the simulated reference label, one of prompts.LABEL_KINDS, or "any": a kind drawn per
        episode (all k references of an episode share it); items name theirs under "label".
    image_size: S; images are resized bilinearly, masks with nearest neighbour.
    original_size: also return the target mask at the image's own size.
    """

    def __init__(self, images, *, name: str, split: str, fold: int, classes: Sequence[int], sampling: str,
                 shots: int = 1, label: str = "mask", image_size: int = 512, seed: int = 0,
                 original_size: bool = False):
        _check_choice("label kind", label, LABEL_CHOICES)
        _check_choice("sampling", sampling, ("image", "class"))
        if shots < 1:
            raise ValueError(f"shots must be at least 1, got {shots}")
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.images, self.name, self.split, self.fold = images, name, split, int(fold)
        self.class_ids = tuple(sorted(int(c) for c in classes))
        self.class_names = class_names(name, split)
        self.sampling, self.shots, self.label = sampling, int(shots), label
        self.image_size, self.seed, self.original_size = int(image_size), int(seed), bool(original_size)

        wanted = set(self.class_ids)
        self.images_of = {c: [] for c in self.class_ids}  # class -> ids holding it, in id order
        for image_id in images.ids:
            for c in images.classes[image_id]:
                if c in wanted:
                    self.images_of[c].append(image_id)
        for c, ids in self.images_of.items():
            if len(ids) < max(2, self.shots + 1):
                raise ValueError(
                    f"{name} fold {fold} {split}: class {c} ({self.class_names[c - 1]}) is in {len(ids)} "
                    f"image(s) of {images.location}, but a {self.shots}-shot episode needs a target and "
                    f"{self.shots} other reference image(s) of it; is the dataset complete?")

    def _classes_in(self, image_id: str) -> list[int]:
        return [c for c in self.images.classes[image_id] if c in self.images_of]

    def _draw_references(self, rng: np.random.Generator, class_id: int, target_id: str) -> tuple[str, ...]:
        """k distinct images of the class other than the target, uniformly."""
        candidates, chosen = self.images_of[class_id], []
        while len(chosen) < self.shots:  # the constructor checked there are enough
            image_id = candidates[int(rng.integers(len(candidates)))]
            if image_id != target_id and image_id not in chosen:
                chosen.append(image_id)
        return tuple(chosen)

    def _label_kind(self, rng: np.random.Generator) -> str:
        """The label kind of one episode: the dataset's, or under "any" one drawn uniformly from `rng`."""
        if self.label != ANY_LABEL:
            return self.label
        return prompts.LABEL_KINDS[int(rng.integers(len(prompts.LABEL_KINDS)))]

    def _check_label_holds(self, label: np.ndarray, class_id: int, image_id: str) -> None:
        # The class index was built from the labels; one edited since then must not be scored with it.
        if not (label == class_id).any():
            raise ValueError(
                f"the label of {image_id} (in {self.images.location}) has no pixel of class {class_id} "
                f"({self.class_names[class_id - 1]}), but the class index built from it lists the class: the "
                "label changed after the index was built; run again to rebuild the index")

    def episode_item(
        self, index: int, episode: Episode, annotation_rngs: Sequence[np.random.Generator], kind: str
    ) -> dict:
        size, c = self.image_size, episode.class_id
        image, label = self.images.load(episode.target_id)
        self._check_label_holds(label, c, episode.target_id)
        item = {"target_image": image_tensor(image, size),
                "target_mask": torch.from_numpy(resize_mask(object_mask(label, c), size).astype(np.int64))}
        reference_images, reference_masks, reference_labels = [], [], []  # numpy until stacked (image_array)
        for reference_id, rng in zip(episode.reference_ids, annotation_rngs):
            ref_image, ref_label = self.images.load(reference_id)
            self._check_label_holds(ref_label, c, reference_id)
            mask = resize_mask(object_mask(ref_label, c), size)
            if not (mask == 1).any():
                # Nearest-neighbour downscaling can miss a thin or tiny object entirely; a
                # reference must show its object, so mark every cell the object touches.
                mask[resize_soft(ref_label == c, size) > 0] = 1
            annotation = prompts.simulate_annotation(mask, kind, rng)
            reference_images.append(image_array(ref_image, size))
            reference_masks.append(mask)
            reference_labels.append(annotation.mask)
        item.update(reference_images=torch.from_numpy(np.stack(reference_images)),
                    reference_masks=torch.from_numpy(np.stack(reference_masks).astype(np.int64)),
                    reference_labels=torch.from_numpy(np.stack(reference_labels).astype(np.float32)),
                    class_id=c, target_id=episode.target_id, reference_ids=list(episode.reference_ids), episode=index,
                    label=kind)
        if self.original_size:
            item["target_mask_original"] = torch.from_numpy(object_mask(label, c).astype(np.int64))
        return item


class EpochKeyed:
    """Training episodes asked for by `index` (of the epoch set by set_epoch) or by the pair
    `(epoch, index)` (EpochOrder's keys, with which DataLoader workers persist across epochs).
    Mixed into the training episode datasets (this file's and pascal_part.py's); their __init__
    sets self.epoch = 0."""

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = int(epoch)

    def epoch_and_index(self, key: int | tuple[int, int]) -> tuple[int, int]:
        epoch, index = (self.epoch, key) if np.isscalar(key) else key
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} training episodes per epoch")
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        return int(epoch), int(index)


class TrainingEpisodes(EpochKeyed, EpisodeDataset):
    """A fresh random episode per item and epoch, a pure function of (seed, epoch, index).

    len() is the number of split images holding a class of `classes`. Item `index` of epoch e is
    drawn from default_rng([seed, e, index]) (its references' labels too), so a resumed run and
    any number of DataLoader workers see the same episodes. An item is asked for by `index` (of
    the epoch set by set_epoch) or by the pair `(epoch, index)`: with pairs (EpochOrder) the epoch
    travels with each index, so DataLoader workers can persist across epochs and keep what their
    image source cached (the synthetic renders). With plain indices, call set_epoch(e) before each
    epoch and use persistent_workers=False (workers copy the dataset when an epoch's iterator starts).
    With sampling "image", item `index` targets the index-th image and picks one of its classes.
    """

    def __init__(self, images, **kwargs):
        super().__init__(images, **kwargs)
        self.targets = tuple(i for i in images.ids if self._classes_in(i))
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.targets)

    def episode(self, key: int | tuple[int, int], rng: np.random.Generator | None = None) -> Episode:
        """The target, class and references of item `key`: an index into the current epoch, or (epoch, index)."""
        epoch, index = self.epoch_and_index(key)
        rng = np.random.default_rng([self.seed, epoch, index]) if rng is None else rng
        if self.sampling == "image":
            target_id = self.targets[index]
            choices = self._classes_in(target_id)
            class_id = choices[int(rng.integers(len(choices)))]
        else:
            class_id = self.class_ids[int(rng.integers(len(self.class_ids)))]
            target_id = self.images_of[class_id][int(rng.integers(len(self.images_of[class_id])))]
        return Episode(target_id, class_id, self._draw_references(rng, class_id, target_id))

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = self.epoch_and_index(key)
        rng = np.random.default_rng([self.seed, epoch, index])
        episode = self.episode((epoch, index), rng)
        kind = self._label_kind(rng)  # from the episode's own stream: exact under resume and workers
        return self.episode_item(index, episode, [rng] * self.shots, kind)


class EpochOrder(Sampler):
    """The training order: a random permutation of range(n) per epoch, seeded by set_epoch, yielded
    as (epoch, index) pairs for TrainingEpisodes, so one DataLoader with persistent workers serves
    every epoch. The permutation is torch.randperm(n) on a generator seeded with `seed`, after one
    int64 draw: the draw a DataLoader sharing that generator took first (its worker seed) when
    train.py made a loader per epoch, so runs recorded before this class replay the same order."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch, self.seed = int(n), 0, 0

    def set_epoch(self, epoch: int, seed: int) -> None:
        self.epoch, self.seed = int(epoch), int(seed)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        return iter([(self.epoch, i) for i in torch.randperm(self.n, generator=generator).tolist()])

    def __len__(self) -> int:
        return self.n


class FixedEpisodeList:
    """A fixed list of episodes (self.episodes, self.label_kinds, self.seed, self.shots) read by index:
    reference j of episode i is labelled with prompts.episode_rng(seed, i, j), so an item is the same
    whatever the batch size, workers or ranks. Mixed into the evaluation episode datasets (this
    file's and pascal_part.py's) before their base, which supplies episode_item."""

    def __len__(self) -> int:
        return len(self.episodes)

    def annotation_rngs(self, index: int) -> list[np.random.Generator]:
        """The generators of episode `index`'s k simulated annotations, one per reference."""
        return [prompts.episode_rng(self.seed, index, shot) for shot in range(self.shots)]

    def __getitem__(self, index: int) -> dict:
        return self.episode_item(index, self.episodes[index], self.annotation_rngs(index), self.label_kinds[index])


class EvaluationEpisodes(FixedEpisodeList, EpisodeDataset):
    """Exactly `num_episodes` fixed episodes (the paper: 1000 per fold).

    The list is built once, here, from default_rng([seed, stream]): first all targets and classes
    (so they are the same for every k), then the references. Sampling "image" walks over the
    split's M images that hold a test class, in a new seeded random order per pass, so each is a
    target floor(N/M) or ceil(N/M) times, with a class of the image drawn uniformly (the authors
    walk in list order); "class" draws each episode's class uniformly, then its target. Reference
    j of episode i is labelled with prompts.episode_rng(seed, i, j). Nothing depends on batch
    size, workers, item order or whether training ran first.
    """

    def __init__(self, images, *, num_episodes: int = 1000, **kwargs):
        super().__init__(images, **kwargs)
        if num_episodes < 1:
            raise ValueError(f"num_episodes must be positive, got {num_episodes}")
        rng = np.random.default_rng([self.seed, SEED_STREAMS["episode-list"]])
        if self.sampling == "image":
            candidates = [i for i in images.ids if self._classes_in(i)]
            passes = -(-num_episodes // len(candidates))
            order = np.concatenate([rng.permutation(len(candidates)) for _ in range(passes)])[:num_episodes]
            targets = []
            for j in order:
                choices = self._classes_in(candidates[j])
                targets.append((candidates[j], choices[int(rng.integers(len(choices)))]))
        else:
            targets = []
            for _ in range(num_episodes):
                c = self.class_ids[int(rng.integers(len(self.class_ids)))]
                targets.append((self.images_of[c][int(rng.integers(len(self.images_of[c])))], c))
        self.episodes = tuple(Episode(t, c, self._draw_references(rng, c, t)) for t, c in targets)
        # A stream of their own, so label="any" lists hold the same episodes as every other kind's.
        kinds = np.random.default_rng([self.seed, SEED_STREAMS["label-kind"]])
        self.label_kinds = tuple(self._label_kind(kinds) for _ in self.episodes)


def _episodes_json(dataset: EvaluationEpisodes) -> bytes:
    if not isinstance(dataset, EvaluationEpisodes):
        raise TypeError(
            f"only evaluation episodes (split 'test' or 'base') are a fixed list; got {type(dataset).__name__}"
        )
    record = {
        "dataset": dataset.name, "split": dataset.split, "fold": dataset.fold, "shots": dataset.shots,
        "label": dataset.label, "seed": dataset.seed,
        "episodes": [{"target": e.target_id, "class": e.class_id, "references": list(e.reference_ids)}
                     for e in dataset.episodes],
    }
    return (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()


def episodes_hash(dataset: EvaluationEpisodes) -> str:
    """A short sha256 (16 hex digits) of the episode list as write_episodes writes it."""
    return hashlib.sha256(_episodes_json(dataset)).hexdigest()[:16]


def write_episodes(dataset: EvaluationEpisodes, path: str | Path) -> str:
    """Write the episode list (target id, class, reference ids, seed, label kind) to a JSON file,
    atomically; returns episodes_hash(dataset), which is the sha256 of the file's bytes."""
    payload = _episodes_json(dataset)
    cli.write_atomic(Path(path), payload)
    return hashlib.sha256(payload).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Video: DAVIS 2017, semi-supervised (Table 16). A video source knows its sequences, each
# sequence's frame ids, and loads a frame with its annotation; video.py runs the protocol on it
# (synthetic.SyntheticVideos is the other source).
# ---------------------------------------------------------------------------------------------

DAVIS_LAYOUT = """DAVIS 2017 (semi-supervised) expects under --data-root:
  DAVIS/JPEGImages/480p/<sequence>/00000.jpg, 00001.jpg, ...
  DAVIS/Annotations/480p/<sequence>/00000.png, ...   palette PNGs: 0 background, 1..n objects, 255 void
  DAVIS/ImageSets/2017/val.txt                       the 30 validation sequences, one per line
DAVIS-2017-trainval-480p.zip from https://davischallenge.org/davis2017/code.html"""


def davis_palette() -> np.ndarray:
    """(256, 3) uint8: the colours of DAVIS's (and PASCAL VOC's) palette PNGs; index i's colour takes
    bits 0, 1, 2 of i into the top bits of red, green, blue, then bits 3, 4, 5 one place lower, ..."""
    index = np.arange(256)
    palette = np.zeros((256, 3), np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (index >> (3 * shift + channel)) & 1
            palette[:, channel] |= bit << (7 - shift)
    return palette.astype(np.uint8)


def read_davis_annotation(path: Path) -> np.ndarray:
    """(H, W) uint8 object ids of a DAVIS annotation: a palette (or greyscale) PNG as is, an RGB
    PNG converted back to ids when every colour in it is DAVIS's palette colour of some id."""
    try:
        with Image.open(path) as pil:
            if pil.mode in ("P", "L"):
                return np.array(pil)
            rgb = np.array(pil.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation {path} not found; is the dataset complete?") from None
    except OSError as error:
        raise OSError(f"annotation {path} could not be read ({error}); re-download or re-extract it") from error
    def code(colours: np.ndarray) -> np.ndarray:  # (..., 3) uint8 RGB -> one int per colour
        return (colours[..., 0].astype(np.int64) << 16) | (colours[..., 1].astype(np.int64) << 8) | colours[..., 2]

    lookup = dict(zip(code(davis_palette()).tolist(), range(256)))
    colours, inverse = np.unique(code(rgb).ravel(), return_inverse=True)
    unknown = [c for c in colours.tolist() if c not in lookup]
    if unknown:
        c = unknown[0]
        raise ValueError(
            f"annotation {path} is an RGB PNG with colour {(c >> 16, (c >> 8) & 255, c & 255)}, which is not in "
            "DAVIS's palette: expected a palette PNG of object ids (0 background, 1..n objects, 255 void)"
        )
    return np.array([lookup[c] for c in colours.tolist()], np.uint8)[inverse].reshape(rgb.shape[:2])


class DavisVideos:
    """The sequences of a DAVIS 2017 split (semi-supervised task), read from the official layout.

    root: the folder holding DAVIS/ (or the DAVIS folder itself). split: the ImageSets/2017 list
    ("val" for Table 16). sequences: a subset of the list to use, default all of it.
    Every frame must have its annotation (the val layout), of the same size as the frame.
    Frames load as (H, W, 3) uint8 RGB, annotations as (H, W) uint8 ids (0, 1..n, 255 void).
    """

    def __init__(
        self, root: Path, *, split: str = "val", resolution: str = "480p", sequences: Sequence[str] | None = None
    ):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"data root {root} not found.\n{DAVIS_LAYOUT}")
        davis = root if (root / "JPEGImages").is_dir() and not (root / "DAVIS").is_dir() else root / "DAVIS"
        self.image_dir = davis / "JPEGImages" / resolution
        self.annotation_dir = davis / "Annotations" / resolution
        split_list = davis / "ImageSets" / "2017" / f"{split}.txt"
        for path in (self.image_dir, self.annotation_dir):
            if not path.is_dir():
                raise FileNotFoundError(f"{path} not found.\n{DAVIS_LAYOUT}")
        if not split_list.is_file():
            raise FileNotFoundError(f"{split_list} not found.\n{DAVIS_LAYOUT}")
        listed = [line.strip() for line in split_list.read_text().splitlines() if line.strip()]
        if sequences is not None:
            unknown = [s for s in sequences if s not in listed]
            if unknown:
                raise ValueError(f"sequence {unknown[0]!r} is not in {split_list}; choose from: {', '.join(listed)}")
            listed = list(sequences)
        self.name, self.resolution, self.location = f"davis2017-{split}", resolution, str(davis)
        self._frames: dict[str, tuple[str, ...]] = {}
        for sequence in listed:
            frames = list_stems(self.image_dir / sequence, ".jpg") if (self.image_dir / sequence).is_dir() else []
            if not frames:
                raise FileNotFoundError(
                    f"sequence {sequence} is listed in {split_list} but {self.image_dir / sequence} "
                    f"holds no .jpg frames: is the download complete?\n{DAVIS_LAYOUT}"
                )
            folder = self.annotation_dir / sequence
            annotations = list_stems(folder, ".png") if folder.is_dir() else []
            if annotations != frames:
                unmatched = sorted(set(frames) ^ set(annotations))
                raise ValueError(f"sequence {sequence}: {len(frames)} frames in {self.image_dir / sequence} but "
                                 f"{len(annotations)} annotations in {folder} (first unmatched: {unmatched[0]}); every "
                                 "frame needs its annotation PNG of the same name, as in DAVIS 2017 train/val")
            self._frames[sequence] = tuple(frames)
        self.sequences = tuple(self._frames)

    def frame_ids(self, sequence: str) -> tuple[str, ...]:
        return self._frames[sequence]

    def image_id(self, sequence: str, index: int) -> str:
        """The frame's id in the SAM embedding cache; the JPEG's size and time are part of it, so
        another copy of DAVIS (or a re-encoded frame) never reads this one's embedding."""
        frame = self._frames[sequence][index]
        stat = (self.image_dir / sequence / f"{frame}.jpg").stat()
        return f"davis2017/{self.resolution}/{sequence}/{frame}-{stat.st_size}-{stat.st_mtime_ns}"

    def load_frame(self, sequence: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame `index` of `sequence` and its annotation: (H, W, 3) uint8, (H, W) uint8."""
        frame = self._frames[sequence][index]
        image_path = self.image_dir / sequence / f"{frame}.jpg"
        annotation_path = self.annotation_dir / sequence / f"{frame}.png"
        image, annotation = _read_image(image_path), read_davis_annotation(annotation_path)
        if image.shape[:2] != annotation.shape:
            raise ValueError(
                f"{image_path} is {image.shape[1]}x{image.shape[0]} but its annotation {annotation_path} is "
                f"{annotation.shape[1]}x{annotation.shape[0]}: they must match; re-extract the dataset"
            )
        return image, annotation


# ---------------------------------------------------------------------------------------------
# The one entry point.
# ---------------------------------------------------------------------------------------------

def build_dataset(
    name: str, *, split: str, fold: int, data_root: str | Path | None = None, shots: int = 1, label: str = "mask",
    image_size: int | None = None, num_episodes: int = 1000, seed: int = 0, cache_dir: str | Path | None = None,
    original_size: bool = False, num_images: int | None = None, scene_size: int = 128, coco_masks: str = "auto",
    min_pixels: int = MIN_OBJECT_PIXELS, progress: bool = False,
) -> TrainingEpisodes | EvaluationEpisodes:
    """The episodes of benchmark `name` (DATASETS), fold `fold`, split "train", "test" or "base".

    "train" gives TrainingEpisodes; "test" (novel classes, test images) and "base" (Table 13: the
    training classes on the training images, BASE_SPLIT_DATASETS only) give EvaluationEpisodes.

    data_root: the dataset folder (see PASCAL_LAYOUT, COCO_LAYOUT); coco2pascal reads COCO for
        "train" and VOC2012/ for "test", so one folder holding both serves it. Unused by synthetic.
    shots, label: k references, each with a simulated label of this kind (prompts.LABEL_KINDS), or
        "any": a kind drawn per episode, from the episode's own seed.
    image_size: S (default 512; synthetic: scene_size).
    num_episodes: evaluation episodes per fold (the paper: 1000); unused for "train".
    seed: fixes the evaluation list, the training episodes, and the synthetic scenes.
    cache_dir: for the PASCAL/COCO class index and rendered COCO masks; default ./cache. Nothing
        is written under data_root unless cache_dir points there.
    original_size: items also carry target_mask_original (H, W).
    num_images, scene_size: synthetic only (default 2000 train / 1000 test images, 128 px).
    coco_masks: "auto", "png" or "json" (see CocoImages).
    min_pixels: PASCAL/COCO images hold a class (as target or reference) only where it covers at
        least this many pixels at the image's own size; the default is the rule of the authors'
        list files. Synthetic objects are all larger; it is not used there.
    progress: show a progress bar while a class index is built or COCO masks are rendered.
    """
    classes = fold_classes(name, fold, split)  # validates name, split, fold
    image_split = "train" if split == "base" else split  # base episodes come from the training images
    if name == "synthetic":
        images = SyntheticImages(
            seed=seed, split=image_split, scene_size=scene_size,
            num_images=num_images if num_images is not None else (2000 if image_split == "train" else 1000),
        )
        image_size = image_size if image_size is not None else scene_size
        sampling = "image"
    else:
        if data_root is None:
            layout = (
                COCO_LAYOUT if name == "coco" or (name == "coco2pascal" and image_split == "train") else PASCAL_LAYOUT
            )
            raise FileNotFoundError(f"{name} needs data_root (--data-root): the dataset folder.\n{layout}")
        data_root = Path(data_root)
        if not data_root.is_dir():
            layout = PASCAL_LAYOUT if name == "pascal" else COCO_LAYOUT
            raise FileNotFoundError(f"data root {data_root} not found.\n{layout}")
        cache = _resolve_cache_dir(cache_dir, data_root)
        if name == "pascal" or (name == "coco2pascal" and image_split == "test"):
            images = PascalImages(
                data_root, split=image_split, cache_dir=cache, min_pixels=min_pixels, progress=progress
            )
            sampling = "image"
        else:
            images = CocoImages(data_root, split=image_split, cache_dir=cache, masks=coco_masks, min_pixels=min_pixels,
                                progress=progress)
            sampling = "class"
        image_size = image_size if image_size is not None else 512
    if split == "base" and not images.ids:
        raise ValueError(f"{name}: --split base draws its episodes from the training images, and {images.location} "
                         "holds none; add the training images, or evaluate on the test split")
    common = dict(name=name, split=split, fold=fold, classes=classes, sampling=sampling, shots=shots, label=label,
                  image_size=image_size, seed=seed, original_size=original_size)
    if split == "train":
        return TrainingEpisodes(images, **common)
    return EvaluationEpisodes(images, num_episodes=num_episodes, **common)


def collate_episodes(batch: Sequence[dict]) -> dict:
    """DataLoader collate_fn: stack same-shape tensors, make ints a tensor, keep the rest as lists
    (ids, reference id lists, target_mask_original of varying sizes)."""
    out = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if all(isinstance(v, torch.Tensor) for v in values) and len({v.shape for v in values}) == 1:
            out[key] = torch.stack(values)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[key] = torch.tensor(values, dtype=torch.int64)
        else:
            out[key] = values
    return out


def denormalize(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) ImageNet-normalised tensor -> (H, W, 3) uint8 RGB, for drawing."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (image.detach().float().cpu() * std + mean).clamp(0, 1) * 255
    return rgb.round().to(torch.uint8).permute(1, 2, 0).numpy()


# ---------------------------------------------------------------------------------------------
# Files: reading images and labels with errors that name the file, the class index cache, and
# atomic writes (a run killed mid-write never leaves a half file behind).
# ---------------------------------------------------------------------------------------------

def image_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, S, S) float32, bilinear resize, ImageNet-normalised."""
    return torch.from_numpy(image_array(image, size))


def image_array(image: np.ndarray, size: int) -> np.ndarray:
    # numpy, not torch: torch's intra-op threads make these small ops several times slower on a
    # busy CPU when items are built in the main process (DataLoader workers use one thread).
    pil = Image.fromarray(image)
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.BILINEAR)
    x = (np.asarray(pil, dtype=np.float32) / 255.0 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def object_mask(label: np.ndarray, class_id: int) -> np.ndarray:
    """(H, W) uint8: 1 on the class, 255 where the label says ignore, 0 elsewhere (other classes too)."""
    return np.where(label == class_id, 1, np.where(label == IGNORE, IGNORE, 0)).astype(np.uint8)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    if mask.shape == (size, size):
        return mask.copy()
    return np.array(Image.fromarray(mask).resize((size, size), Image.NEAREST))


def resize_soft(mask: np.ndarray, size: int) -> np.ndarray:
    """(S, S) float32 area-weighted resize of a boolean mask: > 0 wherever the object reaches."""
    return np.asarray(Image.fromarray(mask.astype(np.float32)).resize((size, size), Image.BILINEAR))


def _read_pair(image_path: Path, label_path: Path, *, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    image, label = _read_image(image_path), read_label(label_path)
    _check_label_values(label, label_path, num_classes)
    if image.shape[:2] != label.shape:
        raise ValueError(
            f"{image_path} is {image.shape[1]}x{image.shape[0]} but its label {label_path} is "
            f"{label.shape[1]}x{label.shape[0]}: the label must match its image; re-extract the dataset")
    return image, label


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as pil:
            return np.array(pil.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} not found; is the dataset complete?") from None
    except OSError as error:
        raise OSError(f"image {path} could not be read ({error}); re-download or re-extract it") from error


def read_label(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as pil:
            if pil.mode not in ("P", "L"):
                raise ValueError(
                    f"label {path} is a {pil.mode} PNG: expected one channel of class indices (palette or "
                    "greyscale), like SegmentationClassAug; VOC's colour-coded SegmentationClass is not one")
            return np.array(pil)
    except FileNotFoundError:
        raise FileNotFoundError(f"label {path} not found; is the dataset complete?") from None
    except OSError as error:
        raise OSError(f"label {path} could not be read ({error}); re-download or re-extract it") from error


def list_stems(folder: Path, suffix: str) -> list[str]:
    """Sorted file stems in `folder` ending with `suffix`."""
    return sorted(entry.name[: -len(suffix)] for entry in os.scandir(folder) if entry.name.endswith(suffix))


def _check_images_exist(image_dir: Path, names: Sequence[str], suffix: str, layout: str) -> None:
    present = set(list_stems(image_dir, suffix))
    missing = [n for n in names if n not in present]
    if missing:
        raise FileNotFoundError(f"image {image_dir / (missing[0] + suffix)} not found ({len(missing)} labelled "
                                f"image(s) missing from {image_dir}).\n{layout}")


def _index_label_pngs(label_dir: Path, names: Sequence[str], *, num_classes: int,
                      progress: bool) -> dict[str, list[list[int]]]:
    """{stem: [[class, pixels], ...]} from label PNGs holding 0, 1..num_classes and 255."""
    index = {}
    for name in tqdm(names, desc=f"indexing {label_dir}", disable=not progress):
        path = label_dir / f"{name}.png"
        label = read_label(path)
        _check_label_values(label, path, num_classes)
        index[name] = _class_pixels(label, num_classes)
    return index


def _check_label_values(label: np.ndarray, path: Path, num_classes: int) -> None:
    bad = (label > num_classes) & (label != IGNORE)
    if bad.any():
        raise ValueError(f"label {path} has pixel value {int(label[bad][0])}: expected 0 background, 1..{num_classes} "
                         f"classes and {IGNORE} ignore")


def _class_pixels(label: np.ndarray, num_classes: int) -> list[list[int]]:
    """[[class, pixel count], ...] of the classes 1..num_classes in a label map."""
    counts = np.bincount(label.ravel(), minlength=256)[: num_classes + 1]
    return [[int(c), int(counts[c])] for c in np.flatnonzero(counts) if c]


def _classes_with(class_pixels: Sequence[Sequence[int]], min_pixels: int) -> tuple[int, ...]:
    return tuple(c for c, n in class_pixels if n >= min_pixels)


def _files_signature(folder: Path, names: Sequence[str], suffix: str) -> dict:
    """What identifies a folder of label files without reading them: how many, and a hash of each
    one's name, size and modification time, so a label replaced or edited in place changes it."""
    digest = hashlib.sha256()
    for name in names:
        stat = (folder / f"{name}{suffix}").stat()
        digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return {"count": len(names), "files_sha256": digest.hexdigest()}


def _cached_index(cache_dir: Path, kind: str, *, source: Path, signature: dict,
                  build: Callable[[], dict]) -> dict[str, list[list[int]]]:
    """The {image: [[class, pixels], ...]} index of `source` from cache_dir if it was built from the same files
    (same `signature`: the label files' names, sizes and times, or those of the annotation file),
    else built and cached. Items re-check their labels when read (EpisodeDataset.episode_item)."""
    signature = {"source": str(Path(source).resolve()), **signature}
    path = cache_dir / f"{kind}-index-{_short_hash(signature['source'])}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        cached = json.loads(path.read_text())
        if cached["format"] == 3 and cached["signature"] == signature:
            return cached["classes"]
    log.info("building %s class index into %s", kind, path)
    index = build()
    cli.write_atomic(path, json.dumps({"format": 3, "signature": signature, "classes": index}).encode())
    return index


def _resolve_cache_dir(cache_dir: str | Path | None, data_root: Path) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)  # the user asked for this place, even inside data_root
    default = Path("cache").resolve()
    if default.is_relative_to(data_root.resolve()):
        raise ValueError(f"the default cache folder {default} is inside data root {data_root}, where nothing is "
                         "written unless asked: pass cache_dir (--cache-dir) to say where the class index may go")
    return default


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]
