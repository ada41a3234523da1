"""Write a small fabricated PASCAL-Part tree in Matcher's layout (Table 15's pipeline, without the download).

    python benchmarks/make_pascal_part.py --out fake-pascal-part
    python evaluate.py --dataset pascal-part --data-root fake-pascal-part --checkpoint ...

Scenes come from the synthetic benchmark's renderer (synthetic.synthetic_scene); each class object
is cut into named parts along axes through its centre (``OBJECTS``), e.g. a red disk "bird" into a
FACE (upper half) and a TORSO (lower half). The files are those pascal_part.py reads from the real
download: VOC2010-style JPEGs, one part JSON per image (objects with a bndbox and parts with COCO
RLE masks, made with pycocotools.mask.encode) and all_obj_part_to_image.json. The tree exercises the
class-list rule: aeroplane+TAIL is left out, and bus is only in train images, so its parts are too.
Distractors become part-less "boat" objects, as boats are in PASCAL-Part. Prints the class list and
Matcher's episode count per fold. A table made on this tree is a run of the pipeline, not a result.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cli  # noqa: E402
from prompts import SEED_STREAMS  # noqa: E402
import pascal_part  # noqa: E402
from synthetic import synthetic_class, synthetic_scene  # noqa: E402


# (super-category, object, synthetic class id, cut, part names). Cuts: "rows" splits at the centre
# row (upper part first), "columns" at the centre column (left first), "thirds" into three bands of
# rows; a part name given twice (person's LEG) is one part of two masks, left and right.
OBJECTS = (
    ("animals", "bird", 1, "rows", ("FACE", "TORSO")),
    ("animals", "cat", 6, "columns", ("FACE", "LEG")),
    ("indoor", "pottedplant", 3, "rows", ("PLANT", "POT")),
    ("indoor", "tvmonitor", 12, "rows", ("SCREEN", "BODY")),
    ("person", "person", 5, "thirds", ("FACE", "TORSO", "LEG")),
    ("vehicles", "aeroplane", 7, "columns", ("BODY", "TAIL")),
    ("vehicles", "car", 9, "rows", ("WINDOWS", "WHEEL")),
    ("vehicles", "bus", 15, "rows", ("WINDOWS", "WHEEL")),
)
TRAIN_ONLY = ("bus",)


def encode(mask: np.ndarray) -> dict:
    """A COCO RLE of an (H, W) bool mask as Matcher's JSONs hold it: {"size": [H, W], "counts": str}."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def cut_parts(mask: np.ndarray, cut: str, names: tuple[str, ...]) -> list[dict]:
    """The object's parts: [{"name", "mask": [RLE, ...]}], cut along axes through its centre."""
    ys, xs = np.nonzero(mask)
    rows, columns = np.mgrid[: mask.shape[0], : mask.shape[1]]
    if cut == "columns":
        bands = [mask & (columns < xs.mean()), mask & (columns >= xs.mean())]
    elif cut == "rows":
        bands = [mask & (rows < ys.mean()), mask & (rows >= ys.mean())]
    else:
        low, high = np.percentile(ys, [33, 67])
        bands = [mask & (rows < low), mask & (rows >= low) & (rows < high), mask & (rows >= high)]
    parts = []
    for name, band in zip(names, bands):
        if name == "LEG" and cut == "thirds":  # two legs: one part, two masks
            pieces = [band & (columns < xs.mean()), band & (columns >= xs.mean())]
        else:
            pieces = [band]
        pieces = [p for p in pieces if p.any()]
        if pieces:
            parts.append({"name": name, "mask": [encode(p) for p in pieces]})
    return parts


def write(path: Path, payload: bytes) -> None:
    cli.write_atomic(path, lambda f: f.write(payload))


def make_tree(out: Path, *, images: int = 96, val_fraction: float = 0.5, seed: int = 0, size: int = 128) -> dict:
    """Write out/Pascal-Part/VOCdevkit/VOC2010/ (pascal_part.LAYOUT); returns the image lists
    written to all_obj_part_to_image.json."""
    voc = Path(out) / "Pascal-Part" / "VOCdevkit" / "VOC2010"
    index = {fold: {"object": {obj: {"part": {p: {"train": [], "val": []} for p in dict.fromkeys(parts)}}
                               for f, obj, _, _, parts in OBJECTS if f == fold}} for fold in pascal_part.FOLDS}
    n_val = round(images * val_fraction)
    for j in range(images):
        split = "val" if j >= images - n_val else "train"
        image_id = f"2010_{j:06d}"
        rng = np.random.default_rng([seed, SEED_STREAMS["fabricated-parts"], j])
        allowed = [o for o in OBJECTS if split == "train" or o[1] not in TRAIN_ONLY]
        count = int(rng.integers(1, 3))
        chosen = [allowed[int(i)] for i in rng.integers(len(allowed), size=count)]  # two of a class now and then
        scene = synthetic_scene(rng, classes=[o[2] for o in chosen], num_distractors=int(rng.integers(0, 3)), size=size)
        objects = []
        for k, (mask, class_id) in enumerate(zip(scene.instances, scene.classes)):
            ys, xs = np.nonzero(mask)
            # The mask's extent, 0-based with xmax and ymax inclusive (pascal_part.box_convention: "0-based").
            box = {"xmin": int(xs.min()), "ymin": int(ys.min()), "xmax": int(xs.max()), "ymax": int(ys.max())}
            if class_id == 0:
                objects.append({"name": "boat", "bndbox": box, "parts": []})
                continue
            fold, obj, _, cut, names = chosen[k]
            parts = cut_parts(mask, cut, names)
            objects.append({"name": obj, "bndbox": box, "parts": parts})
            for part in dict.fromkeys(p["name"] for p in parts):
                lists = index[fold]["object"][obj]["part"][part][split]
                if image_id not in lists:
                    lists.append(image_id)
        buffer = io.BytesIO()
        Image.fromarray(scene.image).save(buffer, format="JPEG", quality=95)
        write(voc / pascal_part.IMAGE_DIR / f"{image_id}.jpg", buffer.getvalue())
        record = {"filename": image_id, "object": objects}
        write(voc / pascal_part.ANNOTATION_DIR / f"{image_id}.json", json.dumps(record).encode())
    write(voc / pascal_part.INDEX_FILE, json.dumps(index, indent=1).encode())
    return index


def main(argv: list[str] | None = None) -> dict:
    parser = cli.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=cli.HelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder to hold Pascal-Part/ (evaluate.py --data-root)")
    parser.add_argument("--images", type=cli.int_range(8), default=96, help="scenes to write, train and val together")
    parser.add_argument("--val-fraction", type=float, default=0.5, help="share of the scenes in the val lists")
    parser.add_argument("--size", type=cli.int_range(32), default=128, help="scene side in pixels")
    parser.add_argument("--seed", type=cli.nonnegative_int, default=0, help="seeds the scenes")
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        parser.error(f"argument --val-fraction: expected a share between 0 and 1, got {args.val_fraction}")
    if (args.out / "Pascal-Part").exists():
        parser.error(f"{args.out / 'Pascal-Part'} exists; choose another --out (nothing is overwritten)")
    index = make_tree(args.out, images=args.images, val_fraction=args.val_fraction, seed=args.seed, size=args.size)
    classes = pascal_part.part_classes(index)
    print(f"wrote {args.images} images to {args.out / 'Pascal-Part'} (synthetic classes: "
          + ", ".join(f"{obj} = {' '.join(reversed(synthetic_class(c)))}" for _, obj, c, _, _ in OBJECTS) + ")")
    for fold, name in enumerate(pascal_part.FOLDS):
        names = [c.name for c in classes if c.fold == fold]
        print(f"fold {fold} {name}: {len(names)} classes ({', '.join(names)}), "
              f"{pascal_part.episode_count(index, fold)} test episodes (Matcher's count)")
    return index


if __name__ == "__main__":
    main()
