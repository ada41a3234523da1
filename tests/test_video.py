"""Video object segmentation (Table 16): the DAVIS J&F against the official toolkit's own numbers,
the DAVIS 2017 loader on a fabricated folder in the real formats, and the protocol end to end on
the embedded synthetic videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

import data
import evaluate
import model
import video
from synthetic import SyntheticVideos

REPO = Path(__file__).resolve().parents[1]

H, W = 180, 240  # diagonal 300 px: the boundary tolerance is ceil(0.008 * 300) = 3 px


def _square(top: int, left: int, size: int, shape=(H, W)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[max(top, 0):top + size, max(left, 0):left + size] = True
    return mask


def _disk(cy: float, cx: float, r: float, shape=(H, W)) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def _paint(*masks_and_ids, shape=(H, W)) -> np.ndarray:
    ids = np.zeros(shape, np.uint8)
    for mask, value in masks_and_ids:
        ids[mask] = value
    return ids


def toolkit_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{case: (truth, prediction)}, each (T, H, W) uint8 id maps (truth may hold 255 void)."""
    cases = {}
    # 1. One square, the prediction shifted right by more pixels each frame (in / out of the 3 px tolerance).
    shifts = [0, 1, 2, 4, 6, 9]
    truth = np.stack([_paint((_square(60, 90, 60), 1)) for _ in shifts])
    prediction = np.stack([_paint((_square(60, 90 + s, 60), 1)) for s in shifts])
    cases["shifted_squares"] = (truth, prediction)
    # 2. Two objects; object 2 is never predicted, object 1 is lost in frame 3.
    truth = np.stack([_paint((_square(20, 20, 50), 1), (_square(100, 150, 40), 2)) for _ in range(5)])
    prediction = truth.copy()
    prediction[prediction == 2] = 0
    prediction[3] = 0
    prediction[2][_square(20, 20, 10)] = 0
    cases["empty_prediction"] = (truth, prediction)
    # 3. The object leaves in frame 3: a false positive there, nothing predicted (correctly) in frame 4.
    truth = np.stack([_paint((_disk(90, 120, 30), 1)) if t < 3 else np.zeros((H, W), np.uint8) for t in range(6)])
    prediction = np.stack([_paint((_disk(90, 122, 29), 1)) if t < 4 else np.zeros((H, W), np.uint8) for t in range(6)])
    cases["empty_truth"] = (truth, prediction)
    # 4. Void (255) over part of the object's border and some background; the prediction reaches into it.
    void = np.zeros((H, W), bool)
    void[70:110, 100:200] = True
    truth = np.stack([_paint((_disk(90, 120, 35 + t), 1), (void, 255)) for t in range(5)])
    prediction = np.stack([_paint((_disk(90, 126, 35 + t) | _square(75, 170, 20), 1)) for t in range(5)])
    cases["void_regions"] = (truth, prediction)
    # 5. Fourteen frames, three moving objects (one crossing the right and bottom borders), swaps and drift.
    rng = np.random.default_rng(0)
    truth, prediction = [], []
    for t in range(14):
        a, b = _disk(50 + 2 * t, 40 + 5 * t, 25), _square(120, 150 + 7 * t, 45)
        c = _disk(150 + 3 * t, 60, 20 + t)
        truth.append(_paint((a, 1), (b, 2), (c, 3)))
        drift = t // 3
        noise = rng.random((H, W)) < 0.02
        pa = _disk(50 + 2 * t + drift, 40 + 5 * t, 25 - drift) ^ (noise & _disk(50 + 2 * t, 40 + 5 * t, 30))
        pb, pc = _square(120 + drift, 150 + 7 * t, 45), _disk(150 + 3 * t, 60 + drift, 20 + t)
        if t in (6, 7):  # objects 2 and 3 swapped
            pb, pc = pc, pb
        prediction.append(_paint((pa, 1), (pb, 2), (pc, 3) if t < 11 else (pc & False, 3)))
    cases["multi_frame"] = (np.stack(truth), np.stack(prediction))
    # 6. Ids 1 and 3 in the first frame, 2 only from frame 2 on: the toolkit still scores object 2.
    truth = np.stack([_paint((_square(30, 30, 40), 1), (_square(30, 150, 40), 3),
                             *(((_square(110, 90, 40), 2),) if t >= 2 else ())) for t in range(5)])
    prediction = truth.copy()
    prediction[prediction == 2] = 0
    cases["id_gap"] = (truth, prediction)
    return cases


# The official toolkit's numbers on toolkit_cases(). How they were obtained: the toolkit
# (github.com/davisvideochallenge/davis2017-evaluation, commit ac7c43f) ran in a scratch virtualenv
# outside this repo (numpy 2.4.6, scipy 1.17.1, opencv-python-headless 5.0.0, scikit-image 0.26.0,
# pillow 13.0.0). Each case was written as a DAVIS folder (DAVIS/JPEGImages/480p/<case>/*.jpg, its
# truth as palette PNGs in DAVIS/Annotations/480p/<case>/, ImageSets/2017/val.txt listing the
# cases) and its prediction as palette PNGs in results/<case>/; then
# DAVISEvaluation(davis_root, task="semi-supervised", gt_set="val", sequences=<case or all>)
# .evaluate(results) and evaluation_method.py's global table (J&F-Mean = (mean J-M + mean F-M) / 2),
# and the per-object rows J["M_per_object"], F["M_per_object"]. Values are fractions, not percent.
TOOLKIT = {
    "shifted_squares": (
        {
            "J&F-Mean": 0.828651517154624, "J-Mean": 0.8989697009759147, "J-Recall": 1.0,
            "J-Decay": 0.10475758377001099, "F-Mean": 0.7583333333333333, "F-Recall": 1.0,
            "F-Decay": 0.4833333333333334,
        },
        {"shifted_squares_1": (0.8989697009759147, 0.7583333333333333)},
    ),
    "empty_prediction": (
        {
            "J&F-Mean": 0.32458333333333333, "J-Mean": 0.32666666666666666, "J-Recall": 0.3333333333333333,
            "J-Decay": 0.49, "F-Mean": 0.3225, "F-Recall": 0.3333333333333333, "F-Decay": 0.48375,
        },
        {"empty_prediction_1": (0.6533333333333333, 0.645), "empty_prediction_2": (0.0, 0.0)},
    ),
    "empty_truth": (
        {
            "J&F-Mean": 0.7257031738215161, "J-Mean": 0.7034639608117566, "J-Recall": 0.75,
            "J-Decay": 0.406927921623513, "F-Mean": 0.7479423868312757, "F-Recall": 0.75,
            "F-Decay": 0.49588477366255135,
        },
        {"empty_truth_1": (0.7034639608117566, 0.7479423868312757)},
    ),
    "void_regions": (
        {
            "J&F-Mean": 0.31200637163709355, "J-Mean": 0.31644006747277564, "J-Recall": 0.0,
            "J-Decay": -0.028322191428301557, "F-Mean": 0.3075726758014114, "F-Recall": 0.0,
            "F-Decay": 0.004506221823944501,
        },
        {"void_regions_1": (0.31644006747277564, 0.3075726758014114)},
    ),
    "multi_frame": (
        {
            "J&F-Mean": 0.7356235780286743, "J-Mean": 0.7446883640189327, "J-Recall": 0.8333333333333334,
            "J-Decay": 0.2812966706858586, "F-Mean": 0.7265587920384159, "F-Recall": 0.8055555555555555,
            "F-Decay": 0.2635986322932391,
        },
        {
            "multi_frame_1": (0.8364257300338359, 0.6940441922072017),
            "multi_frame_2": (0.770516127357511, 0.8189655172413793),
            "multi_frame_3": (0.6271232346654512, 0.6666666666666666),
        },
    ),
    "id_gap": (
        {
            "J&F-Mean": 0.7777777777777777, "J-Mean": 0.7777777777777777, "J-Recall": 0.7777777777777777,
            "J-Decay": 0.16666666666666666, "F-Mean": 0.7777777777777777, "F-Recall": 0.7777777777777777,
            "F-Decay": 0.16666666666666666,
        },
        {"id_gap_1": (1.0, 1.0), "id_gap_2": (0.3333333333333333, 0.3333333333333333), "id_gap_3": (1.0, 1.0)},
    ),
    "all": (
        {
            "J&F-Mean": 0.641430163336296, "J-Mean": 0.6490550443621738, "J-Recall": 0.6590909090909091,
            "J-Decay": 0.2552048478202544, "F-Mean": 0.6338052823104182, "F-Recall": 0.6515151515151515,
            "F-Decay": 0.29472911142723146,
        },
        {},
    ),
}
# The same toolkit's davis2017.metrics.db_eval_iou / db_eval_boundary with void_pixels = (truth == 255),
# on frames 1-3 of "void_regions": J and F with void pixels left out (our exclude_void=True).
VOID_EXCLUDED = {"J": [0.7012609117361784, 0.7181858212241303, 0.7304100690215185],
                 "F": [0.6810282151642815, 0.6892804291527931, 0.6747681023944775]}


@pytest.fixture(scope="module")
def cases():
    return toolkit_cases()


@pytest.mark.parametrize("case", list(TOOLKIT))
def test_jf_equals_the_official_toolkit(cases, case):
    meter = video.JFMeter()
    for name in (cases if case == "all" else [case]):
        meter.update(name, *cases[name])
    expected, per_object = TOOLKIT[case]
    assert meter.summary() == pytest.approx(expected, abs=1e-6)
    for name, (j_mean, f_mean) in per_object.items():
        assert meter.per_object[name]["J"][0] == pytest.approx(j_mean, abs=1e-6)
        assert meter.per_object[name]["F"][0] == pytest.approx(f_mean, abs=1e-6)


def test_void_excluded_equals_the_toolkit_metric_functions(cases):
    truth, prediction = cases["void_regions"]
    j, f = video.score_sequence(truth, prediction, exclude_void=True)
    assert j[0] == pytest.approx(VOID_EXCLUDED["J"], abs=1e-6)
    assert f[0] == pytest.approx(VOID_EXCLUDED["F"], abs=1e-6)
    # and the toolkit's own semi-supervised evaluation reads void as background: lower here
    assert j[0].mean() > TOOLKIT["void_regions"][0]["J-Mean"]


def test_boundary_tolerance_is_a_disk_dilation():
    """The distance transform counts exactly the pixels a disk dilation (the toolkit's) would cover."""
    rng = np.random.default_rng(0)
    for radius in (1, 3, 8):
        points = rng.random((40, 60)) < 0.05
        reference = rng.random((40, 60)) < 0.05
        offsets = np.arange(-radius, radius + 1)
        disk = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2
        dilated = ndimage.binary_dilation(reference, structure=disk)
        assert video._within(points, reference, radius) == (points & dilated).sum()


def test_boundary_map_of_a_square_by_hand():
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:6] = True  # rows 2-4, cols 3-5
    boundary = video.boundary_map(mask)
    # every pixel that differs from its right, lower or lower-right neighbour: the square's own
    # outline (minus its interior) plus the background pixels just above-left of it
    expected = np.zeros((8, 8), bool)
    expected[1, 2:6] = expected[2:5, 2] = True  # background row above and column left
    expected[2:5, 5] = expected[4, 3:6] = True  # the square's right column and bottom row
    assert np.array_equal(boundary, expected)


# --- the DAVIS 2017 loader, on a fabricated folder in the real formats -------------------------------

FRAME_H, FRAME_W = 60, 90


def _write_davis(root: Path, sequences: dict[str, np.ndarray]) -> Path:
    """DAVIS/{JPEGImages,Annotations}/480p/<seq>/<frame> (JPEG frames, palette PNGs) and ImageSets/2017/val.txt."""
    davis = root / "DAVIS"
    for name, id_maps in sequences.items():
        rng = np.random.default_rng(len(name))
        for t, ids in enumerate(id_maps):
            frame = rng.integers(0, 256, (*ids.shape, 3), dtype=np.uint8)
            frame[ids == 1] = (200, 30, 30)
            frame[ids == 2] = (30, 30, 200)
            (davis / "JPEGImages/480p" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame).save(davis / "JPEGImages/480p" / name / f"{t:05d}.jpg", quality=90)
            video.write_palette_png(davis / "Annotations/480p" / name / f"{t:05d}.png", ids)
    (davis / "ImageSets/2017").mkdir(parents=True, exist_ok=True)
    (davis / "ImageSets/2017/val.txt").write_text("\n".join(sequences) + "\n")
    return root


def _two_objects(frames: int = 5, gap: bool = False) -> np.ndarray:
    """Two squares moving right (ids 1, 2), a void (255) ring around the first; with gap, ids 1 and 3."""
    out = []
    for t in range(frames):
        ids = np.zeros((FRAME_H, FRAME_W), np.uint8)
        ids[8:31, 5 + 3 * t:29 + 3 * t] = 255
        ids[10:29, 7 + 3 * t:27 + 3 * t] = 1
        ids[35:55, 50 + 2 * t:70 + 2 * t] = 3 if gap else 2
        out.append(ids)
    return np.stack(out)


@pytest.fixture
def davis_root(tmp_path):
    return _write_davis(tmp_path / "data", {"bear": _two_objects(), "car-turn": _two_objects(4)})


def test_davis_loader_reads_jpeg_frames_and_palette_annotations(davis_root):
    videos = data.DavisVideos(davis_root)
    assert videos.sequences == ("bear", "car-turn")
    assert videos.frame_ids("bear") == ("00000", "00001", "00002", "00003", "00004")
    image, annotation = videos.load_frame("bear", 2)
    assert image.shape == (FRAME_H, FRAME_W, 3) and image.dtype == np.uint8
    assert np.array_equal(annotation, _two_objects()[2])  # ids 0, 1, 2 and void 255 as written
    assert data.DavisVideos(davis_root, sequences=["car-turn"]).sequences == ("car-turn",)
    # the cache key changes when the frame file does (another copy of DAVIS, a re-encoded frame)
    key = videos.image_id("bear", 2)
    Image.fromarray(image[::-1].copy()).save(davis_root / "DAVIS/JPEGImages/480p/bear/00002.jpg", quality=80)
    assert videos.image_id("bear", 2) != key


def test_an_rgb_annotation_in_davis_colours_is_converted_else_refused(davis_root):
    path = davis_root / "DAVIS/Annotations/480p/bear/00001.png"
    ids = _two_objects()[1]
    Image.fromarray(data.davis_palette()[ids]).save(path)  # what an image editor's "save as RGB" makes
    assert np.array_equal(data.DavisVideos(davis_root).load_frame("bear", 1)[1], ids)
    rgb = data.davis_palette()[ids]
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(path)
    with pytest.raises(ValueError, match=r"00001.png is an RGB PNG with colour \(1, 2, 3\).*not in DAVIS's palette"):
        data.DavisVideos(davis_root).load_frame("bear", 1)


def test_bad_davis_folders_are_one_clear_line(davis_root, tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path)
    base = ["--dataset", "davis2017", "--data-root", str(davis_root), "--checkpoint", str(checkpoint),
            "--out", str(tmp_path / "out"), "--no-cache"]
    davis = davis_root / "DAVIS"

    def error() -> str:
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(base)
        return str(exit_info.value)

    (davis / "ImageSets/2017/val.txt").write_text("bear\nghost\n")
    assert "sequence ghost is listed in" in error() and "holds no .jpg frames" in error()
    (davis / "ImageSets/2017/val.txt").write_text("bear\n")
    (davis / "Annotations/480p/bear/00003.png").unlink()
    message = error()
    assert "sequence bear: 5 frames" in message and "4 annotations" in message and "first unmatched: 00003" in message
    video.write_palette_png(davis / "Annotations/480p/bear/00003.png", np.zeros((FRAME_H + 2, FRAME_W), np.uint8))
    assert "00003.jpg is 90x60 but its annotation" in error()
    assert not (tmp_path / "out").exists()  # nothing written for a bad dataset


def test_the_output_folder_of_someone_else_is_refused_before_anything_runs(davis_root, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="already holds files that are not results of video.py"):
        video.main([
            "--dataset", "davis2017", "--data-root", str(davis_root), "--checkpoint", str(_checkpoint(tmp_path)),
            "--out", str(out),
        ])
    assert (out / "notes.txt").read_text() == "keep me"


# --- the protocol end to end ------------------------------------------------------------------------

def _checkpoint(folder: Path) -> Path:
    """A checkpoint like train.py's, for the tiny synthetic configuration (an untrained encoder)."""
    path = folder / "run" / "best.pt"
    if not path.exists():
        vrp = model.build_vrp_sam(model.VRPConfig(backbone="tiny", sam="tiny"), seed=0)
        model.save_checkpoint(path, vrp, args={"dataset": "synthetic", "fold": 0, "label": "mask", "image_size": 128,
                                               "sam_checkpoint": str(REPO / "checkpoints/sam_tiny_synthetic.pth")})
    return path


def test_davis_end_to_end_writes_toolkit_pngs_and_scores_them(davis_root, tmp_path, monkeypatch):
    calls = []
    real_forward = model.VRPSAM.forward
    monkeypatch.setattr(
        model.VRPSAM,
        "forward",  # records (k references, objects) of each call
        lambda self, t, r, l, **kw: calls.append(tuple(r.shape[1::-1])) or real_forward(self, t, r, l, **kw),
    )
    out, cache = tmp_path / "results", tmp_path / "cache"
    result = evaluate.main([
        "--dataset", "davis2017", "--data-root", str(davis_root), "--checkpoint", str(_checkpoint(tmp_path)),
        "--out", str(out), "--cache-dir", str(cache), "--label", "point",
    ])
    videos = data.DavisVideos(davis_root)
    meter = video.JFMeter()
    for sequence in videos.sequences:
        truth = np.stack([videos.load_frame(sequence, t)[1] for t in range(len(videos.frame_ids(sequence)))])
        written = []
        for frame in videos.frame_ids(sequence):
            with Image.open(out / sequence / f"{frame}.png") as png:
                assert png.mode == "P" and png.size == (FRAME_W, FRAME_H)  # the original resolution
                assert np.array_equal(np.array(png.getpalette()[:768]).reshape(256, 3), data.davis_palette())
                written.append(np.array(png))
        written = np.stack(written)
        assert set(np.unique(written)) <= {0, 1, 2}
        assert np.array_equal(written[0], np.where(truth[0] == 255, 0, truth[0]))  # frame 0 is the given annotation
        meter.update(sequence, truth, written)
    # the PNGs on disk score exactly what the run reported, the toolkit's table
    assert result["summary"] == pytest.approx(meter.summary(), abs=1e-12)
    assert json.loads((out / "results.json").read_text())["objects"] == 4 == len(meter.per_object)
    # one SAM embedding per target frame, shared by both objects; one forward per frame, all objects in it
    assert len(list(cache.rglob("*.pt"))) == 4 + 3 == result["target_frames"]
    assert calls == [(1, 2)] * 7
    calls.clear()
    propagated = video.main([
        "--dataset", "davis2017", "--data-root", str(davis_root), "--checkpoint", str(_checkpoint(tmp_path)),
        "--out", str(tmp_path / "propagated"), "--cache-dir", str(cache), "--propagate", "--label", "point",
    ])
    assert len(list(cache.rglob("*.pt"))) == 7  # the cache served every frame
    # frame 1 has only the first-frame reference (frame 0's full mask would leak past --label point);
    # later frames add frame t-1 with its prediction, for the objects predicted there (k = 2)
    starts, rows = [], 0  # the call at each frame 1: bear's after 0 rows, car-turn's after 4 x 2
    for k, objects in calls:
        if rows in (0, 8):
            starts.append((k, objects))
        rows += objects
    assert starts == [(1, 2), (1, 2)] and rows == 14 and any(k == 2 for k, _ in calls)
    assert propagated["target_frames"] == 7
    # a sequence's simulated labels are keyed by its name: run alone, it gets the same PNGs
    alone = tmp_path / "alone"
    video.main(["--dataset", "davis2017", "--data-root", str(davis_root), "--checkpoint", str(_checkpoint(tmp_path)),
                "--out", str(alone), "--cache-dir", str(cache), "--label", "point", "--sequences", "car-turn"])
    for png in (out / "car-turn").glob("*.png"):
        assert np.array_equal(np.array(Image.open(png)), np.array(Image.open(alone / "car-turn" / png.name)))
    # without the cache, the same numbers (fresh embeddings are rounded like cached ones)
    uncached = video.main([
        "--dataset", "davis2017", "--data-root", str(davis_root), "--checkpoint", str(_checkpoint(tmp_path)),
        "--out", str(tmp_path / "uncached"), "--no-cache", "--label", "point",
    ])
    assert uncached["per_object"] == result["per_object"]


def test_an_object_missing_from_the_first_frame_is_noted_and_predicted_nowhere(tmp_path, capsys):
    root = _write_davis(tmp_path / "data", {"gap": _two_objects(gap=True)})
    out = tmp_path / "out"
    result = video.main(["--dataset", "davis2017", "--data-root", str(root), "--checkpoint", str(_checkpoint(tmp_path)),
                         "--out", str(out), "--no-cache"])
    assert "gap: object id(s) 2 absent from the first frame" in capsys.readouterr().out
    assert set(result["per_object"]) == {"gap_1", "gap_2", "gap_3"}  # scored like the toolkit scores it
    assert result["per_object"]["gap_2"]["J"][0] == 1.0  # never in the truth, never predicted
    assert all(2 not in np.array(Image.open(p)) for p in (out / "gap").glob("*.png"))


def test_merge_takes_the_highest_logit_above_zero():
    logits = torch.tensor([[[2.0, -1.0, 0.5, -3.0]], [[1.0, -0.5, 3.0, -2.0]]])  # 2 objects, 1 x 4 pixels
    assert video.merge_objects(logits, [1, 3]).tolist() == [[1, 0, 3, 0]]


# --- the synthetic videos ---------------------------------------------------------------------------

def test_synthetic_videos_are_seeded_and_have_what_davis_has():
    videos = SyntheticVideos(classes=[1, 2, 3, 4, 5], seed=0, num_videos=20)
    again = SyntheticVideos(classes=[1, 2, 3, 4, 5], seed=0, num_videos=3)
    for a, b in zip(videos.load_frame("video001", 5), again.load_frame("video001", 5)):
        assert np.array_equal(a, b)  # a video does not depend on how many were asked for
    repeated_class = 0
    for sequence in videos.sequences:
        layout = videos.layout(sequence)
        assert 10 <= layout.num_frames <= 20 and len(videos.frame_ids(sequence)) == layout.num_frames
        instances = [o for o in layout.objects if o.object_id]
        assert 2 <= len(instances) <= 3 and any(o.object_id == 0 for o in layout.objects)  # distractors
        repeated_class += len({o.class_id for o in instances}) < len(instances)
        image0, first = videos.load_frame(sequence, 0)
        assert image0.shape == (128, 128, 3)
        assert set(np.unique(first)) == {0, *range(1, len(instances) + 1)}  # every object seen in frame 0
        last = videos.load_frame(sequence, layout.num_frames - 1)[1]
        assert not np.array_equal(first, last)  # they move
    assert repeated_class >= 2  # two instances of one class, as in DAVIS


def test_synthetic_video_benchmark_end_to_end(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path)
    args = ["--checkpoint", str(checkpoint), "--videos", "2", "--frames", "6-8", "--cache-dir", str(tmp_path / "cache")]
    result = video.main(args)
    printed = capsys.readouterr().out
    assert "J&F-Mean" in printed and "s per frame" in printed
    out = checkpoint.parent / "video-synthetic-video-mask"
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "video000", "video001"]
    assert 0 <= result["summary"]["J&F-Mean"] <= 1 and result["objects"] >= 4
    again = video.main(args)  # a rerun rewrites its own results, and the same seed gives the same numbers
    assert again["summary"] == result["summary"]
    (out / "global_results-val.csv").write_text("stale")  # the toolkit's own cache of an earlier scoring
    fewer = video.main(args[:3] + ["1"] + args[4:])  # --videos 1 into the same folder
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "video000"]  # no PNGs of the earlier run left
    assert fewer["sequences"] == 1


@pytest.mark.parametrize("flag, value", [("--videos", "0"), ("--frames", "2-1"), ("--frames", "ten"), ("--fold", "9"),
                                         ("--seed", "-1"), ("--label", "polygon"), ("--image-size", "0")])
def test_bad_values_are_refused_at_parse_time_naming_the_flag(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--dataset", "synthetic-video", "--out", str(tmp_path / "out"), flag, value])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("video.py: error: argument " + flag)
    assert not (tmp_path / "out").exists()


def test_help_gives_every_flag_a_line():
    parser = video.build_parser()
    assert all(action.help for action in parser._actions)
    assert "default: None" not in parser.format_help()
