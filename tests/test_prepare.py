"""`python prepare.py pascal` and `coco`, on fabricated files in the real formats: SBD's
cls/*.mat (MATLAB struct GTcls with Segmentation, Boundaries, CategoriesPresent), VOC's palette PNGs,
COCO's instances JSON (polygons and RLE). What users need: the right pixels, VOC winning over SBD,
255 kept, nothing redone or replaced on a second run, an interrupted run finishing, one-line errors."""

import json
import shutil

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image
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


def test_prepare_pascal_writes_voc_palette_pngs_voc_winning_and_255_kept(tmp_path, capsys):
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
            assert png.mode == "P" and png.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
            assert np.array_equal(np.array(png), label)
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


def test_prepare_pascal_bad_input_is_one_line(tmp_path):
    voc, sbd, _ = make_voc_sbd(tmp_path)
    with pytest.raises(SystemExit) as no_cls:
        prepare.main(["pascal", "--voc", str(voc), "--sbd", str(tmp_path / "VOC2012")])
    assert "cls" in str(no_cls.value) and "SBD" in str(no_cls.value) and "\n" not in str(no_cls.value)
    scipy.io.savemat(sbd / "dataset" / "cls" / "2009_000001.mat", {"GTinst": {"Segmentation": np.zeros((4, 4), np.uint8)}})
    with pytest.raises(SystemExit, match=r"2009_000001.mat holds no GTcls struct \(it holds \['GTinst'\]\)"):
        prepare.main(["pascal", "--voc", str(voc), "--sbd", str(sbd)])
    (sbd / "dataset" / "cls" / "2009_000001.mat").write_bytes(b"not a MATLAB file")
    with pytest.raises(SystemExit, match="2009_000001.mat could not be read as a MATLAB file"):
        prepare.main(["pascal", "--voc", str(voc), "--sbd", str(sbd)])
    with pytest.raises(SystemExit, match="SegmentationClass not found"):
        prepare.main(["pascal", "--voc", str(sbd), "--sbd", str(sbd)])


# --- COCO: the HSNet PNG layout from the instances JSON ------------------------------------------

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
        for path in expected:  # largest objects painted first, so small ones on top stay visible
            assert np.array_equal(np.array(Image.open(path)), np.array(Image.open(written / path.name)))
    from_png = data.CocoImages(coco_json_only, split="test", masks="png", cache_dir=coco_json_only / "cache", min_pixels=20)
    from_json = data.CocoImages(coco_json_only, split="test", masks="json", cache_dir=coco_json_only / "cache", min_pixels=20)
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
    monkeypatch.setattr(cli, "write_atomic", lambda path, payload: (rendered.append(path.name), real_write(path, payload)))
    assert prepare.main(args)["train2014"]["labelled"] == 6
    assert len(rendered) == 4  # only the four PNGs the interrupted run had not written
    out = coco_json_only / "COCO2014" / "annotations" / "train2014"
    before, rendered[:] = tree_state(out), []
    prepare.main(args)
    assert rendered == [] and tree_state(out) == before


def test_prepare_coco_never_renders_over_masks_it_did_not_make(coco_json_only):
    root = coco_json_only / "COCO2014"
    shutil.copytree(coco_json_only / "expected-val2014", root / "annotations" / "val2014")  # e.g. HSNet's download
    with pytest.raises(SystemExit, match=r"val2014 already holds 6 PNGs that were not rendered from it .*--overwrite"):
        prepare.main(["coco", "--coco", str(root), "--splits", "val2014"])
    assert prepare.main(["coco", "--coco", str(root), "--splits", "val2014", "--overwrite"])["val2014"]["labelled"] == 6


def test_prepare_coco_bad_input_is_one_line(coco_json_only):
    root = coco_json_only / "COCO2014"
    path = root / "annotations" / "instances_val2014.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({"images": record["images"], "categories": record["categories"]}))
    with pytest.raises(SystemExit, match=r"instances_val2014.json is not COCO instance annotations .*it has no 'annotations' list"):
        prepare.main(["coco", "--coco", str(root), "--splits", "val2014"])
    assert not (root / "annotations" / "val2014").exists()  # refused before writing anything
    with pytest.raises(SystemExit, match=r"instances_train2014.json not found: --coco"):
        prepare.main(["coco", "--coco", str(coco_json_only / "elsewhere")])
