"""How far this repo's COCO-20i masks are from the ones the field trains and tests on, pixel for
pixel: a fabricated instances JSON in COCO's format, rendered four ways and compared.

    pip install opencv-python-headless      # for this benchmark only; not in requirements.txt
    python benchmarks/coco_rasterisation.py                   # 300 images of 640x480
    python benchmarks/coco_rasterisation.py --images 1000 --crowd 0.02

The JSON: 7.3 objects per image (train2014's mean), each a polygon traced around a smooth random
outline with vertices every 4-12 px and two-decimal coordinates, as COCO's annotators' clicks are;
radii log-uniform from 5 to 120 px, which gives COCO's mix of sizes (41% of its objects are small,
34% medium, 24% large; here 38, 38, 24); one in ten in two parts (occluded); a fraction `--crowd`
of the objects are crowd regions (iscrowd=1, RLE).

- ours: data.render_coco_masks (`prepare.py coco` and CocoImages' cache), its PNGs read back;
- annToMask: pycocotools' COCO.annToMask per non-crowd object, painted in file order;
- fillPoly: the field's script (PFENet's, kept as RePRI's data/coco/create_masks.py) re-implemented:
  each non-crowd polygon's coordinates truncated to int32 and filled with cv2.fillPoly on its own,
  in file order; no PNG for an image without a non-crowd object;
- earlier: this repository's earlier renderer (annToMask, crowd regions painted as their class,
  larger objects first, a PNG for every image with any pixel labelled).

"% differing" is the pixels where two renderings' label maps disagree over the pixels foreground in
either (an image without a PNG counts as all background). "pairs flipped" counts the (image, class)
pairs that pass data.MIN_OBJECT_PIXELS (2 x 32 x 32) in one rendering and not in the other: those are
the pairs an episode may draw. docs/data.md reports the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data  # noqa: E402

HEIGHT, WIDTH = 480, 640
OPENCV_MISSING = ("coco_rasterisation.py needs OpenCV to re-implement the field's cv2.fillPoly: "
                  "pip install opencv-python-headless (for this benchmark only; it is not in requirements.txt)")


def outline(rng: np.random.Generator) -> list[float]:
    """One polygon [x1, y1, x2, y2, ...] around a random centre: an ellipse whose radius wobbles
    smoothly (three harmonics), vertices every 4-12 px along it, coordinates rounded to 0.01."""
    radius = np.exp(rng.uniform(np.log(5), np.log(120)))
    aspect = rng.uniform(0.5, 2.0)
    cx, cy = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
    count = int(np.clip(2 * np.pi * radius / rng.uniform(4, 12), 6, 120))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    wobble = sum(rng.uniform(0, 0.15) * np.cos(k * angles + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    xs = np.clip(cx + radius * aspect ** 0.5 * (1 + wobble) * np.cos(angles), 0, WIDTH)
    ys = np.clip(cy + radius / aspect ** 0.5 * (1 + wobble) * np.sin(angles), 0, HEIGHT)
    return np.round(np.stack([xs, ys], 1).ravel(), 2).tolist()


def fabricate(path: Path, images: int, crowd: float, rng: np.random.Generator) -> None:
    records, annotations = [], []
    for image_id in range(1, images + 1):
        records.append({"id": image_id, "file_name": f"COCO_train2014_{image_id:012d}.jpg",
                        "height": HEIGHT, "width": WIDTH})
        for _ in range(rng.poisson(7.3)):
            category = int(rng.choice(data.COCO_CATEGORY_IDS))
            if rng.random() < crowd:
                region = np.zeros((HEIGHT, WIDTH), np.uint8)
                x, y = rng.integers(0, WIDTH - 100), rng.integers(0, HEIGHT - 100)
                region[y:y + rng.integers(40, 200), x:x + rng.integers(40, 300)] = 1
                rle = mask_utils.encode(np.asfortranarray(region))
                segmentation, is_crowd = {"size": rle["size"], "counts": rle["counts"].decode()}, 1
            else:
                segmentation, is_crowd = [outline(rng) for _ in range(2 if rng.random() < 0.1 else 1)], 0
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "iscrowd": is_crowd, "segmentation": segmentation, "area": 0.0, "bbox": [0, 0, 1, 1]})
    categories = [{"id": c, "name": n, "supercategory": "thing"}
                  for c, n in zip(data.COCO_CATEGORY_IDS, data.COCO_CLASSES)]
    path.write_text(json.dumps({"images": records, "annotations": annotations, "categories": categories}))


def render_all(json_path: Path, out_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """{way: {file stem: (H, W) uint8 label map}} for the four renderings the docstring names."""
    import cv2

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        data.render_coco_masks(json_path, out_dir, progress=False)
        coco = COCO(str(json_path))
        class_of = {c: i + 1 for i, c in enumerate(data.COCO_CATEGORY_IDS)}
        objects = defaultdict(list)
        for ann in coco.dataset["annotations"]:  # the file's order
            objects[ann["image_id"]].append(ann)
        ways: dict[str, dict[str, np.ndarray]] = {"ours": {}, "annToMask": {}, "fillPoly": {}, "earlier": {}}
        for image in coco.dataset["images"]:
            stem = Path(image["file_name"]).stem
            listed = objects[image["id"]]
            masks = {ann["id"]: coco.annToMask(ann).astype(bool) for ann in listed}
            blank = np.zeros((image["height"], image["width"]), np.uint8)
            earlier = blank.copy()
            for ann in sorted(listed, key=lambda a: (-int(masks[a["id"]].sum()), a["id"])):
                earlier[masks[ann["id"]]] = class_of[ann["category_id"]]
            if earlier.any():
                ways["earlier"][stem] = earlier
            non_crowd = [ann for ann in listed if ann["iscrowd"] == 0]
            if not non_crowd:
                continue
            ours = data.read_label(out_dir / f"{stem}.png")
            by_coco, by_cv2 = blank.copy(), blank.copy()
            for ann in non_crowd:
                by_coco[masks[ann["id"]]] = class_of[ann["category_id"]]
                for polygon in ann["segmentation"]:
                    points = np.array(polygon).reshape(-1, 2).astype(np.int32)
                    cv2.fillPoly(by_cv2, [points], int(class_of[ann["category_id"]]))
            ways["ours"][stem], ways["annToMask"][stem], ways["fillPoly"][stem] = ours, by_coco, by_cv2
    return ways


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, int]:
    """(% of the foreground pixels of either that differ, (image, class) pairs flipped by the 2,048-px rule)."""
    differing = foreground = flipped = 0
    for stem in set(a) | set(b):
        x = a.get(stem, np.zeros_like(b.get(stem)))
        y = b.get(stem, np.zeros_like(x))
        differing += int((x != y).sum())
        foreground += int(((x > 0) | (y > 0)).sum())
        counts_x, counts_y = np.bincount(x.ravel(), minlength=81), np.bincount(y.ravel(), minlength=81)
        flipped += int(((counts_x[1:] >= data.MIN_OBJECT_PIXELS) != (counts_y[1:] >= data.MIN_OBJECT_PIXELS)).sum())
    return 100 * differing / max(foreground, 1), flipped


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="fabricated 640x480 images")
    parser.add_argument("--crowd", type=float, default=0.01, help="fraction of objects that are crowd regions")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        import cv2  # noqa: F401
    except ImportError:
        sys.exit(OPENCV_MISSING)
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "instances_train2014.json"
        fabricate(json_path, args.images, args.crowd, np.random.default_rng(args.seed))
        ways = render_all(json_path, Path(tmp) / "train2014")
    pairs = sum(int((np.bincount(label.ravel(), minlength=81)[1:] >= data.MIN_OBJECT_PIXELS).sum())
                for label in ways["fillPoly"].values())
    foreground = sum(int((label > 0).sum()) for label in ways["fillPoly"].values())
    print(f"{args.images} images of {WIDTH}x{HEIGHT}, crowd fraction {args.crowd}, seed {args.seed}; "
          f"fillPoly labels {foreground:,} foreground pixels and {pairs:,} (image, class) pairs of >= 2,048 px")
    print(f"{'rendering':<11} {'PNGs':>5} {'fg vs fillPoly':>15} {'% differing vs fillPoly':>24} "
          f"{'pairs flipped':>14} {'% differing vs annToMask':>25} {'pairs flipped':>14}")
    for way, labels in ways.items():
        size = sum(int((label > 0).sum()) for label in labels.values())
        field, field_pairs = compare(labels, ways["fillPoly"])
        coco, coco_pairs = compare(labels, ways["annToMask"])
        print(f"{way:<11} {len(labels):>5} {100 * size / foreground - 100:>+14.2f}% {field:>23.2f}% {field_pairs:>14} "
              f"{coco:>24.2f}% {coco_pairs:>14}")


if __name__ == "__main__":
    main()
