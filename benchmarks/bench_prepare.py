"""Seconds per 1000 images of `python prepare.py coco` and `pascal`, on fabricated files
of the real formats and sizes (the datasets cannot be downloaded here).

    python benchmarks/bench_prepare.py                   # 1000 COCO images, 1000 SBD + 300 VOC labels
    python benchmarks/bench_prepare.py --images 2000

COCO: a 640x480 instances JSON like train2014's (82,783 images, 604,907 objects: 7.3 per image),
each object a polygon of 8-60 vertices around a centre, sizes log-uniform from 8 to 300 px (COCO is
mostly small objects), 1% crowd regions in RLE; the time includes reading and hashing the JSON. PASCAL: SBD
cls/*.mat files at 500x375 (GTcls with Segmentation, Boundaries, CategoriesPresent), a quarter of
the images also with a VOC palette PNG; then the same run again, which only compares.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import data  # noqa: E402
import prepare  # noqa: E402
from test_data import save_voc_label  # noqa: E402  the fabricated VOC palette PNGs the tests use
from test_prepare import save_sbd_mat  # noqa: E402  the fabricated SBD format the tests use


def fabricate_coco(root: Path, images: int, rng: np.random.Generator) -> None:
    height, width = 480, 640
    records, annotations = [], []
    for i in range(images):
        image_id = i + 1
        records.append(
            {"id": image_id, "file_name": f"COCO_train2014_{image_id:012d}.jpg", "height": height, "width": width}
        )
        for _ in range(rng.poisson(7.3)):
            category = int(rng.choice(data.COCO_CATEGORY_IDS))
            radius = float(np.exp(rng.uniform(np.log(4), np.log(150))))
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            if rng.random() < 0.01:  # a crowd region, compressed RLE like COCO's
                box = np.zeros((height, width), np.uint8, order="F")
                box[int(max(cy - radius, 0)):int(cy + radius), int(max(cx - radius, 0)):int(cx + radius)] = 1
                rle = mask_utils.encode(box)
                segmentation, crowd = {"size": rle["size"], "counts": rle["counts"].decode()}, 1
            else:
                angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(8, 61)))
                radii = radius * rng.uniform(0.6, 1.0, len(angles))
                xs = np.clip(cx + radii * np.cos(angles), 0, width - 1)
                ys = np.clip(cy + radii * np.sin(angles), 0, height - 1)
                segmentation, crowd = [np.round(np.stack([xs, ys], 1).ravel(), 2).tolist()], 0
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "segmentation": segmentation, "iscrowd": crowd, "area": 0.0, "bbox": [0, 0, 1, 1]})
    categories = [
        {"id": c, "name": n, "supercategory": "thing"} for c, n in zip(data.COCO_CATEGORY_IDS, data.COCO_CLASSES)
    ]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train2014.json").write_text(
        json.dumps({"images": records, "annotations": annotations, "categories": categories}))


def fabricate_pascal(root: Path, images: int, rng: np.random.Generator) -> tuple[Path, Path]:
    voc, cls = root / "VOC2012", root / "SBD" / "cls"
    (voc / "SegmentationClass").mkdir(parents=True)
    cls.mkdir(parents=True)
    for i in range(images):
        label = np.zeros((375, 500), np.uint8)
        for class_id in rng.choice(np.arange(1, 21), size=rng.integers(1, 4), replace=False):
            y, x, h, w = rng.integers(0, 300), rng.integers(0, 400), rng.integers(20, 200), rng.integers(20, 250)
            label[y:y + h, x:x + w] = class_id
        name = f"2008_{i:06d}"
        save_sbd_mat(cls / f"{name}.mat", label)
        if i % 4 == 0:
            edged = label.copy()
            edged[1:][label[1:] != label[:-1]] = 255  # VOC's boundary band
            save_voc_label(voc / "SegmentationClass" / f"{name}.png", edged)
    return voc, cls.parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fabricate_coco(tmp / "coco", args.images, rng)
        size = (tmp / "coco" / "annotations" / "instances_train2014.json").stat().st_size
        start = time.perf_counter()
        prepare.prepare_coco(tmp / "coco", splits=["train2014"], progress=False)
        rows.append(
            (f"prepare.py coco, {size / args.images / 1e3:.0f} kB of JSON per image", time.perf_counter() - start)
        )
        start = time.perf_counter()
        prepare.prepare_coco(tmp / "coco", splits=["train2014"], progress=False)
        rows.append(("prepare.py coco again (resume: reads the PNGs back)", time.perf_counter() - start))

        voc, sbd = fabricate_pascal(tmp / "pascal", args.images, rng)
        start = time.perf_counter()
        prepare.prepare_pascal(voc, sbd, progress=False)
        rows.append(("prepare.py pascal, 500x375", time.perf_counter() - start))
        start = time.perf_counter()
        prepare.prepare_pascal(voc, sbd, progress=False)
        rows.append(("prepare.py pascal again (compares, writes nothing)", time.perf_counter() - start))

    print(f"{args.images} images per row, one process")
    print(f"{'command':<52} {'s per 1000 images':>18}")
    for name, seconds in rows:
        print(f"{name:<52} {seconds * 1000 / args.images:18.1f}")


if __name__ == "__main__":
    main()
