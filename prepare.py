"""Preparing the data (paper §5.1 "Datasets"): the label layouts data.py reads, written once from the
files VOC, SBD and COCO ship. Atomic per file, resumable, idempotent.

    python prepare.py pascal --voc VOC2012 --sbd benchmark_RELEASE/dataset   # SegmentationClassAug
    python prepare.py coco --coco COCO2014        # annotations/{train,val}2014/*.png (HSNet's layout)

A stage of its own (the researcher runs it once, before training): data.py reads the layouts,
this file writes them, as single-channel PNGs of class ids (what the field's loaders read, some with
cv2.IMREAD_GRAYSCALE). A rerun removes the temporary files a killed run left. Exposes
``prepare_pascal``, ``prepare_coco``, ``read_sbd_label`` and ``main``; docs/data.md describes the
layouts and their conventions.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

import cli
import data


SBD_SOURCE = ("SBD (Hariharan et al. 2011): benchmark.tgz from http://home.bharathh.info/pubs/codes/SBD/download.html, "
              "whose benchmark_RELEASE/dataset/ holds cls/*.mat")
# A complete VOC2012 + SBD: 2,913 VOC labels and 11,355 SBD ones, 12,031 images in all, of which
# 10,582 are outside VOC's val.txt (the PASCAL-5i training pool) and 1,449 in it.
PASCAL_AUG_TOTAL, PASCAL_AUG_TRAIN = 12_031, 10_582


def read_sbd_label(path: Path) -> np.ndarray:
    """(H, W) uint8 class map of an SBD cls/*.mat file: struct GTcls, field Segmentation (0 background,
    1-20 the VOC classes; SBD marks no boundaries). Boundaries and CategoriesPresent are not needed."""
    import scipy.io  # only preparing PASCAL needs it

    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as error:  # scipy raises MatReadError, ValueError, OSError... for a bad file
        raise ValueError(f"{path} could not be read as a MATLAB file ({error}); re-extract {SBD_SOURCE}") from error
    if "GTcls" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path} holds no GTcls struct (it holds {keys}): expected an SBD cls/*.mat file "
                         "(inst/*.mat hold GTinst, the instance labels)")
    segmentation = getattr(mat["GTcls"], "Segmentation", None)
    label = None if segmentation is None else np.asarray(segmentation)
    if label is None or label.ndim != 2 or label.dtype.kind not in "ui":
        raise ValueError(
            f"{path}: GTcls.Segmentation is missing or not a 2-D integer class map; is this an SBD cls/*.mat file?"
        )
    bad = [int(v) for v in np.unique(label) if not 0 <= v <= len(data.PASCAL_CLASSES)]
    if bad:
        raise ValueError(f"{path}: GTcls.Segmentation has value {bad[0]}: expected 0 background and 1-20 classes")
    return label.astype(np.uint8)


def _read_voc_class_label(path: Path) -> np.ndarray:
    label = data.read_label(path)  # a palette PNG: its pixels are the class indices
    bad = [int(v) for v in np.unique(label) if len(data.PASCAL_CLASSES) < v < data.IGNORE]
    if bad:
        raise ValueError(f"label {path} has pixel value {bad[0]}: expected 0 background, 1-20 classes and 255 boundary")
    return label


def _label_png(label: np.ndarray) -> bytes:
    """A mode "L" PNG whose pixels are the class ids, like the SegmentationClassAug the field
    distributes: a palette PNG read with cv2.IMREAD_GRAYSCALE (PFENet and the code built on it)
    gives its colours' luminance instead of the ids."""
    buffer = io.BytesIO()
    Image.fromarray(label).save(buffer, format="PNG")  # (H, W) uint8 -> mode "L"
    return buffer.getvalue()


def _png_mode(path: Path) -> str:
    with Image.open(path) as image:
        return image.mode


def _find_dir(root: Path, candidates: Sequence[str], what: str) -> Path:
    """The first of root/candidate that is a folder; else one line naming where we looked and what it is."""
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    looked = " nor ".join(str(root / c) for c in candidates)
    raise FileNotFoundError(
        f"neither {looked} exists: {what}" if len(candidates) > 1 else f"{looked} not found: {what}"
    )


def prepare_pascal(voc: str | Path, sbd: str | Path, out: str | Path | None = None, *, overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Build SegmentationClassAug (data.PASCAL_LAYOUT) from SBD's cls/*.mat and VOC's SegmentationClass.

    voc: the VOC2012 folder (or the VOCdevkit holding it), with SegmentationClass/*.png.
    sbd: SBD's dataset folder holding cls/*.mat (or benchmark_RELEASE above it).
    out: default voc/SegmentationClassAug, where PascalImages reads.
    Each image gets one single-channel PNG of class ids: VOC's own label where it has one (it marks
    object boundaries 255, kept), else SBD's. A file already there with the same class map is left
    as it is (so a second run writes nothing, and an interrupted run resumes; a palette PNG of the
    same classes is counted, and rewritten single-channel with `overwrite`); one that differs is
    replaced only with `overwrite`. Temporary files a killed run left in `out` are removed.
    Returns the counts the command prints.
    """
    voc, sbd = Path(voc), Path(sbd)
    if not voc.is_dir():
        raise FileNotFoundError(
            f"VOC folder {voc} not found: --voc is the VOC2012 folder of VOCtrainval_11-May-2012.tar"
        )
    if not (voc / "SegmentationClass").is_dir() and (voc / "VOC2012").is_dir():
        voc = voc / "VOC2012"
    voc_dir = _find_dir(voc, ["SegmentationClass"], "--voc is the VOC2012 folder holding SegmentationClass/*.png "
                        "(VOCtrainval_11-May-2012.tar)")
    if not sbd.is_dir():
        raise FileNotFoundError(f"SBD folder {sbd} not found: --sbd is the folder holding cls/*.mat, from {SBD_SOURCE}")
    cls_dir = _find_dir(sbd, ["cls", "dataset/cls", "benchmark_RELEASE/dataset/cls"],
                        f"--sbd is the folder holding SBD's cls/*.mat, from {SBD_SOURCE}")
    out = Path(out) if out is not None else voc / "SegmentationClassAug"

    sources = {name: cls_dir / f"{name}.mat" for name in data.list_stems(cls_dir, ".mat")}
    if not sources:
        raise FileNotFoundError(f"{cls_dir} holds no .mat files: expected SBD's 11,355 cls/*.mat, from {SBD_SOURCE}")
    from_voc = data.list_stems(voc_dir, ".png")
    if not from_voc:
        raise FileNotFoundError(f"{voc_dir} holds no .png labels: expected VOC2012's 2,913 SegmentationClass PNGs")
    sources.update({name: voc_dir / f"{name}.png" for name in from_voc})  # VOC's labels take precedence

    started = time.time()
    removed = cli.remove_stale_temps(out, (".png",), before=started - cli.STALE_TEMP_SECONDS)
    written = unchanged = palette = 0
    for name in tqdm(sorted(sources), desc=f"writing {out}", unit="label", disable=not progress, dynamic_ncols=True):
        source = sources[name]
        label = _read_voc_class_label(source) if source.suffix == ".png" else read_sbd_label(source)
        target = out / f"{name}.png"
        if target.exists():
            same = np.array_equal(data.read_label(target), label)
            single_channel = same and _png_mode(target) == "L"
            if single_channel or (same and not overwrite):
                unchanged += 1
                palette += not single_channel
                continue
            if not same and not overwrite:
                raise FileExistsError(f"{target} exists and differs from the label {source} gives: pass --overwrite "
                                      "to replace such files, or --out to write elsewhere")
        cli.write_atomic(target, _label_png(label))
        written += 1
    removed += cli.remove_stale_temps(out, (".png",), before=started)  # a kill just before this run

    val_list = voc / "ImageSets" / "Segmentation" / "val.txt"
    val = set(val_list.read_text().split()) if val_list.is_file() else None
    images = set(data.list_stems(voc / "JPEGImages", ".jpg")) if (voc / "JPEGImages").is_dir() else None
    return {"out": str(out), "labels": len(sources), "written": written, "unchanged": unchanged,
            "palette": palette, "removed_temps": removed,
            "from_voc": len(from_voc), "from_sbd": len(sources) - len(from_voc),
            "outside_val": None if val is None else len(set(sources) - val),
            "without_image": None if images is None else len(set(sources) - images)}


def prepare_coco(coco: str | Path, *, splits: Sequence[str] = ("train2014", "val2014"), overwrite: bool = False,
                 progress: bool = True) -> dict:
    """Render annotations/instances_<split>.json into annotations/<split>/*.png (data.COCO_LAYOUT, HSNet's
    masks) under `coco`, with the renderer CocoImages uses for its cache (data.render_coco_masks) and
    the field's convention (data.COCO_MASK_CONVENTION: crowd regions skipped, objects painted in the
    file's order, no PNG for an image without a non-crowd object). Resumable, keyed on the JSON's
    content; never over PNGs of another JSON content, convention or origin unless `overwrite`.
    Returns {split: {"labelled": images with a PNG, "written", "kept", "replaced", "removed_temps",
    "seconds"}} (see data.CocoRender)."""
    coco = Path(coco)
    if not (coco / "annotations").is_dir() and (coco / "COCO2014" / "annotations").is_dir():
        coco = coco / "COCO2014"
    bad = [s for s in splits if s not in ("train2014", "val2014")]
    if bad:
        raise ValueError(f"unknown COCO split {bad[0]!r} (--splits): expected train2014 and/or val2014")
    for split in splits:  # every input is checked before anything is written
        path = coco / "annotations" / f"instances_{split}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: --coco is the folder holding annotations/instances_{{train,val}}2014.json "
                "(annotations_trainval2014.zip from https://cocodataset.org/#download)"
            )
    summary = {}
    for split in splits:
        start = time.perf_counter()
        json_path = coco / "annotations" / f"instances_{split}.json"
        rendered = data.render_coco_masks(json_path, coco / "annotations" / split, progress=progress,
                                          overwrite=overwrite)
        summary[split] = {"labelled": len(rendered.index), "written": rendered.written, "kept": rendered.kept,
                          "replaced": rendered.replaced, "removed_temps": rendered.removed_temps,
                          "seconds": round(time.perf_counter() - start, 1)}
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="prepare.py", formatter_class=cli.HelpFormatter,
                                description="Prepare the label layouts data.py reads (docs/data.md).")
    commands = parser.add_subparsers(dest="command", required=True)
    pascal = commands.add_parser(
        "pascal",
        help="SegmentationClassAug from VOC2012 + SBD",
        formatter_class=cli.HelpFormatter,
        description="Write VOC2012/SegmentationClassAug/*.png (0 background, 1-20, 255 "
        "boundary) from SBD's cls/*.mat and VOC's SegmentationClass/*.png (VOC's win).",
    )
    pascal.add_argument("--voc", type=Path, required=True,
                        help="the VOC2012 folder (holding SegmentationClass/, JPEGImages/, ImageSets/)")
    pascal.add_argument(
        "--sbd", type=Path, required=True, help="SBD's folder holding cls/*.mat (benchmark_RELEASE/dataset)"
    )
    pascal.add_argument("--out", type=Path, default=None, help="default: VOC2012/SegmentationClassAug")
    pascal.add_argument("--overwrite", action="store_true",
                        help="replace label PNGs already there that differ, and rewrite palette ones single-channel")
    coco = commands.add_parser("coco", help="HSNet's annotations/{train,val}2014/*.png from the instances JSON",
                               formatter_class=cli.HelpFormatter,
                               description="Render annotations/instances_{train,val}2014.json into "
                                           "annotations/train2014/*.png and annotations/val2014/*.png (pixel = "
                                           "1-based class in COCO's 80-class order) as the field's masks are made: "
                                           "crowd regions skipped, objects painted in the file's order, no PNG for "
                                           "an image without a non-crowd object (docs/data.md).")
    coco.add_argument("--coco", type=Path, required=True, help="the COCO 2014 folder holding annotations/")
    coco.add_argument(
        "--splits", type=cli.choice_list(("train2014", "val2014"), all_word=None), default="train2014,val2014",
        help="comma list of train2014, val2014",
    )
    coco.add_argument("--overwrite", action="store_true",
                      help="delete and re-render PNGs of another JSON content, convention or origin")
    return parser


def prepare(args: argparse.Namespace) -> dict:
    if args.command == "pascal":
        summary = prepare_pascal(args.voc, args.sbd, args.out, overwrite=args.overwrite)
        outside = (
            ""
            if summary["outside_val"] is None
            else f"; {summary['outside_val']:,} outside val.txt (the training pool)"
        )
        print(f"{summary['labels']:,} label images in {summary['out']} ({summary['written']:,} written, "
              f"{summary['unchanged']:,} already there): {summary['from_voc']:,} from VOC SegmentationClass, "
              f"{summary['from_sbd']:,} from SBD{outside}. A complete VOC2012 + SBD gives "
              f"{PASCAL_AUG_TOTAL:,} and {PASCAL_AUG_TRAIN:,}.")
        if summary["removed_temps"]:
            print(f"removed {summary['removed_temps']:,} temporary files a killed run left in {summary['out']}")
        if summary["without_image"]:
            print(f"warning: {summary['without_image']:,} of them have no JPEGImages/<id>.jpg; is VOC2012 complete?")
        if summary["palette"]:
            print(f"warning: {summary['palette']:,} of them are palette PNGs (an earlier prepare.py wrote those): "
                  "data.py reads them, but loaders that read labels as greyscale (cv2.IMREAD_GRAYSCALE: PFENet and "
                  "its descendants) get their colours' luminance; pass --overwrite to rewrite them single-channel")
        return summary
    summary = prepare_coco(args.coco, splits=args.splits, overwrite=args.overwrite)
    for split, counts in summary.items():
        if counts["removed_temps"]:
            print(f"{split}: removed {counts['removed_temps']:,} temporary files a killed run left")
        if counts["replaced"]:
            print(f"{split}: deleted {counts['replaced']:,} PNGs of another JSON content, convention or origin "
                  "(--overwrite)")
        print(f"{split}: {counts['labelled']:,} labelled images in annotations/{split}/ ({counts['written']:,} "
              f"rendered, {counts['kept']:,} already there; {counts['seconds']:.0f} s)")
    return summary


def main(argv: Sequence[str] | None = None) -> dict:
    """`python prepare.py pascal --voc VOC2012 --sbd SBD` / `python prepare.py coco --coco COCO2014`."""
    return cli.run_main("prepare.py", prepare, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
