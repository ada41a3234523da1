"""`python prepare.py pascal` and `coco`, on fabricated files in the real formats: SBD's
cls/*.mat (MATLAB struct GTcls with Segmentation, Boundaries, CategoriesPresent), VOC's palette PNGs,
COCO's instances JSON (polygons and RLE). What users need: the right pixels (COCO's as the field
renders them, in single-channel PNGs any loader reads as class ids), VOC winning over SBD, 255 kept,
nothing redone or replaced on a second run, an interrupted or killed run finishing clean, one-line errors."""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from scipy import ndimage

import cli
import data
import prepare
from test_data import make_coco, save_voc_label, tree_state

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def save_sbd_mat(path, segmentation: np.ndarray) -> None:
    """An SBD cls/*.mat as the release has it: a 1x1 struct GTcls whose Boundaries is a 20x1 cell of
    sparse logical edge maps, Segmentation the uint8 class map, CategoriesPresent the classes in it."""
    boundaries = np.empty((20, 1), dtype=object)
    for c in range(20):
        region = segmentation == c + 1
        boundaries[c, 0] = scipy.sparse.csc_matrix(region & ~ndimage.binary_erosion(region))
    present = np.unique(segmentation[segmentation > 0]).astype(np.uint8).reshape(-1, 1)
    scipy.io.savemat(path, {"GTcls": {"Boundaries": boundaries, "Segmentation": segmentation.astype(np.uint8),
                                      "CategoriesPresent": present}})


def objects(seed: int, height: int = 24, width: int = 30, *, boundary: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    label = np.zeros((height, width), np.uint8)
    for class_id in rng.choice(np.arange(1, 21), size=2, replace=False):
        y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
        if boundary:
            label[y:y + 8, x:x + 8] = 255
            label[y + 1:y + 7, x + 1:x + 7] = class_id
        else:
            label[y + 1:y + 7, x + 1:x + 7] = class_id
    return label


def make_voc_sbd(root):
    """VOC2012 with 3 SegmentationClass PNGs (val.txt: 2 of them) and JPEGs for everything; SBD's
    dataset/cls with 4 .mat files, 1 of them for an image VOC labels too (with other content).
    Returns the expected label of each of the 6 images."""
    voc, cls = root / "VOC2012", root / "benchmark_RELEASE" / "dataset" / "cls"
    for folder in (voc / "SegmentationClass", voc / "JPEGImages", voc / "ImageSets" / "Segmentation", cls):
        folder.mkdir(parents=True)
    expected = {}
    for i, name in enumerate(["2007_000032", "2007_000039", "2008_000002"]):
        expected[name] = objects(i, boundary=True)
        save_voc_label(voc / "SegmentationClass" / f"{name}.png", expected[name])
    for i, name in enumerate(["2008_000002", "2008_000003", "2008_000007", "2011_003276"]):
        segmentation = objects(10 + i, boundary=False)
        save_sbd_mat(cls / f"{name}.mat", segmentation)
        expected.setdefault(name, segmentation)  # VOC's label wins where both exist
    for name, label in expected.items():
        Image.new("RGB", label.shape[::-1]).save(voc / "JPEGImages" / f"{name}.jpg")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n2007_000039\n")
    return voc, root / "benchmark_RELEASE", expected


def greyscale(path) -> np.ndarray:
    """The label as loaders that read cv2.imread(path, cv2.IMREAD_GRAYSCALE) see it (PFENet and the
    code built on it): the luminance of what is stored, which is the class id only in an "L" PNG."""
    with Image.open(path) as png:
        return np.array(png.convert("L"))


def test_prepare_pascal_writes_single_channel_class_ids_voc_winning_and_255_kept(tmp_path, capsys):
    voc, sbd, expected = make_voc_sbd(tmp_path)
    summary = prepare.main(["pascal", "--voc", str(voc), "--sbd", str(sbd)])
    printed = capsys.readouterr().out
    assert "6 label images" in printed and "3 from VOC" in printed and "3 from SBD" in printed
    assert "4 outside val.txt" in printed and "12,031" in printed
    assert summary["written"] == 6 and summary["unchanged"] == 0
    out = voc / "SegmentationClassAug"
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(expected)
    for name, label in expected.items():
        with Image.open(out / f"{name}.png") as png:
            assert png.mode == "L"  # like the SegmentationClassAug the field distributes
        assert np.array_equal(greyscale(out / f"{name}.png"), label)
    # the check has teeth: VOC's own palette PNG read the same way gives colours, not class ids
    assert not np.array_equal(greyscale(voc / "SegmentationClass" / "2008_000002.png"), expected["2008_000002"])
    assert 255 in np.array(Image.open(out / "2008_000002.png"))  # VOC's boundary, not SBD's label
    # what data.py reads: the PASCAL loader indexes the result, val.txt splits it
    images = data.PascalImages(tmp_path, split="train", cache_dir=tmp_path / "cache", min_pixels=1)
    assert images.ids == ("voc/2008_000002", "voc/2008_000003", "voc/2008_000007", "voc/2011_003276")
    assert np.array_equal(images.load("voc/2008_000003")[1], expected["2008_000003"])


def test_prepare_pascal_is_idempotent_resumable_and_replaces_nothing_silently(tmp_path, monkeypatch, capsys):
    voc, sbd, expected = make_voc_sbd(tmp_path)
    out = tmp_path / "aug"
    args = ["pascal", "--voc", str(voc), "--sbd", str(sbd / "dataset"), "--out", str(out)]
    real_write, calls = cli.write_atomic, []

    def write_twice_then_die(path, payload):
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed mid-run
        calls.append(path)
        real_write(path, payload)

    monkeypatch.setattr(cli, "write_atomic", write_twice_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare.main(args)
    monkeypatch.setattr(cli, "write_atomic", real_write)
    assert len(list(out.iterdir())) == 2  # two whole files, no half-written or temporary one
    resumed = prepare.main(args)
    assert (resumed["written"], resumed["unchanged"]) == (4, 2)
    before = tree_state(out)
    again = prepare.main(args)
    assert (again["written"], again["unchanged"]) == (0, 6) and tree_state(out) == before
    # a label that differs from its source (another tool's, an edited one) is never silently replaced
    save_voc_label(out / "2008_000003.png", np.zeros_like(expected["2008_000003"]))
    capsys.readouterr()
    with pytest.raises(SystemExit, match=r"2008_000003.png exists and differs .*--overwrite"):
        prepare.main(args)
    assert prepare.main(args + ["--overwrite"])["written"] == 1
    assert np.array_equal(np.array(Image.open(out / "2008_000003.png")), expected["2008_000003"])


def test_prepare_pascal_counts_an_earlier_runs_palette_labels_and_rewrites_them_when_asked(tmp_path, capsys):
    voc, sbd, expected = make_voc_sbd(tmp_path)
    args = ["pascal", "--voc", str(voc), "--sbd", str(sbd)]
    prepare.main(args)
    out = voc / "SegmentationClassAug"
    save_voc_label(out / "2008_000003.png", expected["2008_000003"])  # what prepare.py wrote before: palette
    before = tree_state(out)
    capsys.readouterr()
    again = prepare.main(args)
    assert (again["written"], again["unchanged"], again["palette"]) == (0, 6, 1) and tree_state(out) == before
    assert "1 of them are palette PNGs" in capsys.readouterr().out  # same classes: left, but the user is told
    assert prepare.main(args + ["--overwrite"])["written"] == 1
    assert Image.open(out / "2008_000003.png").mode == "L"
    assert np.array_equal(greyscale(out / "2008_000003.png"), expected["2008_000003"])


def age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_prepare_pascal_removes_the_temporary_files_a_killed_run_left(tmp_path, monkeypatch, capsys):
    voc, sbd, expected = make_voc_sbd(tmp_path)
    out = tmp_path / "aug"
    args = ["pascal", "--voc", str(voc), "--sbd", str(sbd), "--out", str(out)]
    prepare.main(args)
    stale = out / ".2008_000003.png.k2j4h5g6.tmp"  # cli.write_atomic's name, left by a SIGKILL an hour ago
    just_killed = out / ".2008_000007.png.a1b2c3d4.tmp"  # ... and by one right before this rerun
    theirs = [out / ".notes.txt", out / ".draft.txt.abcdefgh.tmp"]  # hidden files that are not our temporaries
    for path in (stale, just_killed, *theirs):
        path.write_bytes(b"\x89PNG half a file")
    age(stale, 3600)
    age(just_killed, 5)
    (out / "2008_000002.png").unlink()  # so that the rerun writes one file
    live = out / ".2011_003276.png.zzzzzzzz.tmp"  # another process's write in progress while we run
    real_write = cli.write_atomic

    def write_while_another_process_writes(path, payload):
        live.write_bytes(b"being written")
        now = time.time()  # the file system's own clock may lag time.time() by a tick
        os.utime(live, (now, now))
        real_write(path, payload)

    monkeypatch.setattr(cli, "write_atomic", write_while_another_process_writes)
    capsys.readouterr()
    summary = prepare.main(args)
    assert summary["removed_temps"] == 2
    assert f"removed 2 temporary files a killed run left in {out}" in capsys.readouterr().out
    assert not stale.exists() and not just_killed.exists()
    assert all(path.exists() for path in (*theirs, live))
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(expected)


def test_prepare_pascal_bad_input_is_one_line(tmp_path):
    voc, sbd, _ = make_voc_sbd(tmp_path)
    with pytest.raises(SystemExit) as no_cls:
        prepare.main(["pascal", "--voc", str(voc), "--sbd", str(tmp_path / "VOC2012")])
    assert "cls" in str(no_cls.value) and "SBD" in str(no_cls.value) and "\n" not in str(no_cls.value)
    scipy.io.savemat(
        sbd / "dataset" / "cls" / "2009_000001.mat", {"GTinst": {"Segmentation": np.zeros((4, 4), np.uint8)}}
    )
    with pytest.raises(SystemExit, match=r"2009_000001.mat holds no GTcls struct \(it holds \['GTinst'\]\)"):
        prepare.main(["pascal", "--voc", str(voc), "--sbd", str(sbd)])
    (sbd / "dataset" / "cls" / "2009_000001.mat").write_bytes(b"not a MATLAB file")
    with pytest.raises(SystemExit, match="2009_000001.mat could not be read as a MATLAB file"):
        prepare.main(["pascal", "--voc", str(voc), "--sbd", str(sbd)])
    with pytest.raises(SystemExit, match="SegmentationClass not found"):
        prepare.main(["pascal", "--voc", str(sbd), "--sbd", str(sbd)])


# --- COCO: the masks the field uses, from the instances JSON -------------------------------------

HEIGHT, WIDTH = 24, 32


def quad(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    """A COCO polygon [x1, y1, x2, y2, ...] with fractional corners, as annotators' clicks are."""
    return [x0 + 0.3, y0, x1, y0 + 0.45, x1 - 0.2, y1, x0, y1 - 0.65]


def crowd_rle(x0: int, y0: int, x1: int, y1: int) -> dict:
    region = np.zeros((HEIGHT, WIDTH), np.uint8)
    region[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(np.asfortranarray(region))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def make_field_coco(root):
    """COCO2014/ with val2014/*.jpg and annotations/instances_val2014.json in the real format, built
    so that the field's convention and the one this repo used before disagree everywhere they can:
    image 1 has overlapping objects listed small-under-large and large-under-small, a two-part
    polygon, and a crowd region (iscrowd=1, RLE) over two objects; image 2 holds only a crowd;
    image 3 holds nothing; image 4 has a non-crowd RLE object. Category ids are COCO's real ones,
    with gaps (13 is stop sign, class 12; 90 toothbrush, class 80)."""
    (root / "val2014").mkdir(parents=True)
    (root / "annotations").mkdir()
    objects = {  # image id: [(category id, iscrowd, segmentation)] in file order
        1: [(1, 0, [quad(2, 2, 20, 18)]),  # person, large
            (18, 0, [quad(10, 8, 28, 22)]),  # dog over the person's corner: later wins
            (1, 1, crowd_rle(0, 12, 14, 24)),  # a crowd of people over both: skipped
            (90, 0, [quad(4, 4, 8, 8), quad(24, 2, 30, 6)])],  # toothbrush in two parts, one on the person
        2: [(3, 1, crowd_rle(4, 4, 20, 20))],  # a crowd of cars only: no PNG
        3: [],  # no object: no PNG
        4: [(13, 0, [quad(1, 1, 31, 23)]), (62, 0, [quad(12, 6, 20, 14)]), (44, 0, crowd_rle(22, 2, 30, 10))],
    }
    images, annotations = [], []
    for image_id, listed in objects.items():
        file_name = f"COCO_val2014_{image_id:012d}.jpg"
        Image.new("RGB", (WIDTH, HEIGHT)).save(root / "val2014" / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": HEIGHT, "width": WIDTH})
        for category, crowd, segmentation in listed:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "iscrowd": crowd, "segmentation": segmentation, "area": 0.0, "bbox": [0, 0, 1, 1]})
    categories = [{"id": c, "name": n, "supercategory": "thing"}
                  for c, n in zip(data.COCO_CATEGORY_IDS, data.COCO_CLASSES)]
    (root / "annotations" / "instances_val2014.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root


def field_masks(json_path) -> dict[str, np.ndarray]:
    """The label maps the field's masks hold, from pycocotools alone: each non-crowd object's annToMask
    painted in the file's order, a later object over an earlier one; no map for an image without one."""
    coco = COCO(str(json_path))  # pycocotools' own reader
    expected = {}
    for image in coco.dataset["images"]:
        label, painted = np.zeros((image["height"], image["width"]), np.uint8), False
        for ann in coco.dataset["annotations"]:
            if ann["image_id"] == image["id"] and ann["iscrowd"] == 0:
                label[coco.annToMask(ann) == 1] = data.COCO_CATEGORY_IDS.index(ann["category_id"]) + 1
                painted = True
        if painted:
            expected[image["file_name"].removesuffix(".jpg")] = label
    return expected


@pytest.fixture
def field_coco(tmp_path):
    return make_field_coco(tmp_path / "COCO2014")


def test_prepare_coco_and_the_json_cache_render_the_fields_masks_pixel_for_pixel(field_coco, tmp_path):
    expected = field_masks(field_coco / "annotations" / "instances_val2014.json")
    one = expected["COCO_val2014_000000000001"]
    assert sorted(expected) == ["COCO_val2014_000000000001", "COCO_val2014_000000000004"]  # no crowd-only, no empty
    assert one[15, 12] == 17 and one[20, 3] == 0  # under the crowd: the dog, and background, not person
    assert one[6, 6] == 80 and one[12, 14] == 17  # the later object on top, whatever its size
    summary = prepare.main(["coco", "--coco", str(field_coco), "--splits", "val2014"])["val2014"]
    assert (summary["labelled"], summary["written"]) == (2, 2)
    out = field_coco / "annotations" / "val2014"
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(expected)
    for stem, label in expected.items():
        with Image.open(out / f"{stem}.png") as png:
            assert png.mode == "L"
        assert np.array_equal(greyscale(out / f"{stem}.png"), label)
    # CocoImages' JSON route renders the same into its cache and serves it
    images = data.CocoImages(field_coco, split="test", masks="json", cache_dir=tmp_path / "cache", min_pixels=1)
    assert images.ids == tuple(f"coco/val2014/{stem}" for stem in sorted(expected))
    assert sorted(p.stem for p in Path(images.location).glob("*.png")) == sorted(expected)
    for stem, label in expected.items():
        assert np.array_equal(images.load(f"coco/val2014/{stem}")[1], label)


def test_prepare_coco_keys_its_marker_on_the_json_content_and_says_what_differs(field_coco, tmp_path):
    json_path = field_coco / "annotations" / "instances_val2014.json"
    prepare.main(["coco", "--coco", str(field_coco), "--splits", "val2014"])
    # touched and moved, same bytes: nothing to do
    os.utime(json_path)
    root = shutil.move(field_coco, tmp_path / "moved" / "COCO2014")
    json_path, out = root / "annotations" / "instances_val2014.json", root / "annotations" / "val2014"
    args = ["coco", "--coco", str(root), "--splits", "val2014"]
    before = tree_state(out)
    again = prepare.main(args)["val2014"]
    assert (again["written"], again["kept"]) == (0, 2) and tree_state(out) == before

    original = json_path.read_bytes()
    record = json.loads(original)
    record["annotations"][0]["category_id"] = 2  # another content
    json_path.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match=r"holds 2 PNGs that were rendered from another JSON content \(sha256 "
                                         r"[0-9a-f]{12}\.\.\., then at .*COCO2014.*; "
                                         r"this file's is [0-9a-f]{12}\.\.\.\)"):
        prepare.main(args)
    json_path.write_bytes(original)
    marker = json.loads((out / data.COCO_RENDER_MARKER).read_text())
    (out / data.COCO_RENDER_MARKER).write_text(json.dumps({**marker, "convention": "largest-first"}))
    with pytest.raises(SystemExit, match=r"rendered under another convention \('largest-first'; now 'pfenet'\)"):
        prepare.main(args)
    old = {"source": str(json_path), "bytes": len(original), "mtime_ns": json_path.stat().st_mtime_ns}
    (out / data.COCO_RENDER_MARKER).write_text(json.dumps(old))  # the marker prepare.py wrote before
    shutil.copy(out / "COCO_val2014_000000000001.png", out / "COCO_val2014_000000000002.png")  # its crowd-only PNG
    before = tree_state(out)
    with pytest.raises(SystemExit, match=r"an earlier version of this renderer made under another convention "
                                         r"\(crowd regions painted as their class.*--overwrite"):
        prepare.main(args)
    assert tree_state(out) == before  # refused: nothing touched
    replaced = prepare.main(args + ["--overwrite"])["val2014"]
    assert (replaced["replaced"], replaced["written"]) == (3, 2)
    assert sorted(p.stem for p in out.glob("*.png")) == ["COCO_val2014_000000000001", "COCO_val2014_000000000004"]


def test_the_json_cache_renders_again_when_the_convention_changes(field_coco, tmp_path, monkeypatch):
    first = data.CocoImages(field_coco, split="test", masks="json", cache_dir=tmp_path, min_pixels=1)
    monkeypatch.setattr(data, "COCO_MASK_CONVENTION", "next")
    rendered, real_render = [], data.render_coco_masks
    monkeypatch.setattr(data, "render_coco_masks", lambda *a, **kw: rendered.append(a) or real_render(*a, **kw))
    second = data.CocoImages(field_coco, split="test", masks="json", cache_dir=tmp_path, min_pixels=1)
    assert len(rendered) == 1 and second.ids == first.ids
    assert json.loads((Path(second.location) / data.COCO_RENDER_MARKER).read_text())["convention"] == "next"


def test_prepare_coco_and_the_cache_remove_the_temporary_files_a_killed_run_left(field_coco, tmp_path, capsys, caplog):
    out = field_coco / "annotations" / "val2014"
    out.mkdir()
    stale = [out / ".COCO_val2014_000000000001.png.q8w7e6r5.tmp", out / f".{data.COCO_RENDER_MARKER}.a1b2c3d4.tmp"]
    for path in stale:
        path.write_bytes(b"half")
        age(path, 600)
    prepare.main(["coco", "--coco", str(field_coco), "--splits", "val2014"])
    assert "val2014: removed 2 temporary files a killed run left" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == [data.COCO_RENDER_MARKER, "COCO_val2014_000000000001.png",
                                       "COCO_val2014_000000000004.png"]
    # the cache: a run killed while rendering leaves a temporary file and no class index
    cache = tmp_path / "cache"
    images = data.CocoImages(field_coco, split="test", masks="json", cache_dir=cache, min_pixels=1)
    left = Path(images.location) / ".COCO_val2014_000000000004.png.zx9y8w7v.tmp"
    left.write_bytes(b"half")
    age(left, 600)
    for index in cache.glob("coco-val2014-json-index-*.json"):
        index.unlink()
    again = data.CocoImages(field_coco, split="test", masks="json", cache_dir=cache, min_pixels=1)
    assert not left.exists() and again.ids == images.ids
    assert "removed 1 temporary files a killed run left" in caplog.text


@pytest.fixture
def coco_json_only(tmp_path):
    """make_coco's layout with its hand-rendered PNGs moved aside: what users download."""
    root = tmp_path / "COCO2014"
    make_coco(root, images_per_split=6)
    for split in ("train2014", "val2014"):
        shutil.move(root / "annotations" / split, tmp_path / f"expected-{split}")
    return tmp_path


def test_prepare_coco_writes_the_hsnet_pngs_the_png_route_reads(coco_json_only, capsys):
    summary = prepare.main(["coco", "--coco", str(coco_json_only)])  # finds COCO2014/ below
    assert {split: counts["labelled"] for split, counts in summary.items()} == {"train2014": 6, "val2014": 6}
    assert "train2014: 6 labelled images in annotations/train2014/" in capsys.readouterr().out
    for split in ("train2014", "val2014"):
        expected = sorted((coco_json_only / f"expected-{split}").glob("*.png"))
        written = coco_json_only / "COCO2014" / "annotations" / split
        assert [p.name for p in expected] == sorted(p.name for p in written.glob("*.png"))
        for path in expected:  # painted in file order: the small objects listed after the large one on top
            assert np.array_equal(np.array(Image.open(path)), np.array(Image.open(written / path.name)))
    from_png = data.CocoImages(
        coco_json_only, split="test", masks="png", cache_dir=coco_json_only / "cache", min_pixels=20
    )
    from_json = data.CocoImages(
        coco_json_only, split="test", masks="json", cache_dir=coco_json_only / "cache", min_pixels=20
    )
    assert len(from_png.ids) == 6 and from_png.classes == from_json.classes


def test_prepare_coco_resumes_and_then_does_nothing(coco_json_only, monkeypatch):
    args = ["coco", "--coco", str(coco_json_only / "COCO2014"), "--splits", "train2014"]
    real_write, calls = cli.write_atomic, []

    def die_after_three(path, payload):
        if len(calls) == 3:  # the marker and two PNGs
            raise KeyboardInterrupt
        calls.append(path.name)
        real_write(path, payload)

    monkeypatch.setattr(cli, "write_atomic", die_after_three)
    with pytest.raises(KeyboardInterrupt):
        prepare.main(args)
    assert calls[0] == data.COCO_RENDER_MARKER
    rendered, calls[:] = [], []
    monkeypatch.setattr(
        cli, "write_atomic", lambda path, payload: (rendered.append(path.name), real_write(path, payload))
    )
    assert prepare.main(args)["train2014"]["labelled"] == 6
    assert len(rendered) == 4  # only the four PNGs the interrupted run had not written
    out = coco_json_only / "COCO2014" / "annotations" / "train2014"
    before, rendered[:] = tree_state(out), []
    prepare.main(args)
    assert rendered == [] and tree_state(out) == before


def test_prepare_coco_never_renders_over_masks_it_did_not_make(coco_json_only):
    root = coco_json_only / "COCO2014"
    shutil.copytree(coco_json_only / "expected-val2014", root / "annotations" / "val2014")  # e.g. HSNet's download
    with pytest.raises(SystemExit, match=r"val2014 already holds 6 PNGs that this renderer did not make \(no readable "
                                         r"\.rendered-from\.json: downloaded masks, or another tool's\).*--overwrite"):
        prepare.main(["coco", "--coco", str(root), "--splits", "val2014"])
    replaced = prepare.main(["coco", "--coco", str(root), "--splits", "val2014", "--overwrite"])["val2014"]
    assert (replaced["replaced"], replaced["labelled"]) == (6, 6)


def test_prepare_coco_bad_input_is_one_line(coco_json_only):
    root = coco_json_only / "COCO2014"
    path = root / "annotations" / "instances_val2014.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({"images": record["images"], "categories": record["categories"]}))
    with pytest.raises(
        SystemExit, match=r"instances_val2014.json is not COCO instance annotations .*it has no 'annotations' list"
    ):
        prepare.main(["coco", "--coco", str(root), "--splits", "val2014"])
    assert not (root / "annotations" / "val2014").exists()  # refused before writing anything
    with pytest.raises(SystemExit, match=r"instances_train2014.json not found: --coco"):
        prepare.main(["coco", "--coco", str(coco_json_only / "elsewhere")])
