"""PASCAL-Part one-shot part segmentation (Table 15, Matcher's benchmark), on tiny files written in
the real formats: VOC2010 JPEGs, all_obj_part_to_image.json and per-image part JSONs whose masks
are COCO RLE made with pycocotools. The class-list rule, the union of a part's masks within one
object, the box crop against a hand computation, Matcher's draw probabilities (raw lists with their
repeats, parts outside the crop kept), the box convention, fixed episodes whatever the batch size
and workers, and one-line errors for bad input."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader

import data
import evaluate
import model
import pascal_part
import train
from pascal_part import Member, PartAnnotations, PartEpisode

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
H, W = 20, 24  # every fake image: non-square, like VOC's


def rect(y0, y1, x0, x1):
    """(H, W) bool, True on rows y0..y1-1 and columns x0..x1-1."""
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def rle(mask):
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [H, W], "counts": encoded["counts"].decode("ascii")}


def obj(name, box, parts):
    """An object of a part JSON: box (xmin, ymin, xmax, ymax); parts {part: [masks]}."""
    return {"name": name, "bndbox": dict(zip(("xmin", "ymin", "xmax", "ymax"), box)),
            "parts": [{"name": p, "mask": [rle(m) for m in masks]} for p, masks in parts.items()]}


# Two legs, one mask each; the left one reaches row 12, the box's last (ymax).
BIRD_A0 = obj("bird", (2, 3, 11, 12), {"FACE": [rect(3, 6, 2, 7)], "LEG": [rect(9, 13, 3, 6), rect(9, 12, 7, 10)]})
BIRD_A1 = obj("bird", (13, 2, 22, 15), {"LEG": [rect(12, 15, 15, 20)]})
# Image: (split, objects). Val images A, B, C hold birds; C's first bird has no LEG.
IMAGES = {
    "2008_000100": ("val", [BIRD_A0, BIRD_A1, obj("boat", (0, 0, 5, 5), {}),
                            obj("cat", (0, 14, 12, 19), {"FACE": [rect(14, 19, 0, 6)]})]),
    "2008_000101": ("val", [obj("bird", (1, 1, 20, 18), {"FACE": [rect(1, 6, 1, 8)], "LEG": [rect(14, 18, 4, 9)]}),
                            obj("cat", (0, 0, 23, 19), {"FACE": [rect(0, 8, 12, 20)]})]),
    "2008_000102": ("val", [obj("bird", (0, 0, 10, 10), {"FACE": [rect(0, 4, 0, 5)]}),
                            obj("bird", (10, 5, 23, 19), {"LEG": [rect(15, 19, 12, 18)], "FACE": [rect(5, 9, 10, 15)]}),
                            obj("cat", (4, 4, 20, 16), {"FACE": [rect(4, 9, 5, 12)]})]),
    "2008_000103": ("val", [obj("bottle", (3, 2, 15, 19), {"BODY": [rect(6, 19, 3, 15)]}),
                            obj("person", (0, 0, 23, 19), {"FACE": [rect(0, 5, 8, 14)], "TORSO": [rect(5, 12, 6, 16)]}),
                            obj("aeroplane", (1, 1, 22, 18),
                                {"BODY": [rect(5, 12, 1, 22)], "TAIL": [rect(1, 5, 18, 22)]})]),
    "2008_000104": ("val", [obj("bottle", (4, 1, 16, 18), {"BODY": [rect(5, 18, 4, 16)]}),
                            obj("person", (2, 2, 21, 19), {"FACE": [rect(2, 7, 9, 15)], "TORSO": [rect(7, 14, 5, 17)]}),
                            obj("aeroplane", (0, 2, 23, 17),
                                {"BODY": [rect(6, 13, 0, 23)], "TAIL": [rect(2, 6, 17, 23)]}),
                            obj("car", (0, 0, 12, 10), {"WHEEL": [rect(6, 10, 0, 4)]})]),
}
for _i in range(4):  # training images: every pair but car+WHEEL; bird+TAIL only here
    IMAGES[f"2008_00020{_i}"] = ("train", [
        obj("bird", (0, 0, 23, 19),
            {"FACE": [rect(0, 6, 0, 8)], "LEG": [rect(12, 19, 2, 9)], "TAIL": [rect(8, 12, 18, 23)]}),
        obj("cat", (0, 0, 23, 19), {"FACE": [rect(1, 7, 10, 18)]}),
        obj("bottle", (2, 2, 14, 18), {"BODY": [rect(5, 18, 2, 14)]}),
        obj("person", (0, 0, 23, 19), {"FACE": [rect(0, 5, 8, 14)], "TORSO": [rect(5, 12, 6, 16)]}),
        obj("aeroplane", (1, 1, 22, 18), {"BODY": [rect(5, 12, 1, 22)], "TAIL": [rect(1, 5, 18, 22)]})])
CLASS_NAMES = ("bird+FACE", "bird+LEG", "cat+FACE", "bottle+BODY", "person+FACE", "person+TORSO", "aeroplane+BODY")
FOLD_OF = {"bird": "animals", "cat": "animals", "bottle": "indoor", "person": "person", "aeroplane": "vehicles",
           "car": "vehicles"}


def make_tree(root: Path, images=IMAGES) -> Path:
    """root/Pascal-Part/VOCdevkit/VOC2010/ as Matcher's README lays it out; returns that folder."""
    voc = root / "Pascal-Part" / "VOCdevkit" / "VOC2010"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "Annotations_Part_json_merged_part_classes").mkdir()
    index = {fold: {"object": {}} for fold in pascal_part.FOLDS}
    rng = np.random.default_rng(0)
    for image_id, (split, objects) in images.items():
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        (voc / "Annotations_Part_json_merged_part_classes" / f"{image_id}.json").write_text(
            json.dumps({"filename": image_id, "object": objects}))
        for o in objects:
            if o["name"] in FOLD_OF:
                parts = index[FOLD_OF[o["name"]]]["object"].setdefault(o["name"], {"part": {}})["part"]
                for p in o["parts"]:
                    lists = parts.setdefault(p["name"], {"train": [], "val": []})[split]
                    if image_id not in lists:
                        lists.append(image_id)
    (voc / "all_obj_part_to_image.json").write_text(json.dumps(index))
    return voc


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path)


def build(voc, **kwargs):
    options = dict(fold=0, image_size=16, seed=0) | kwargs
    return pascal_part.build_part_episodes(voc.parents[2], **options)


# --- the class list ------------------------------------------------------------------------------

def test_classes_are_the_pairs_with_train_and_val_images_without_aeroplane_tail(tree):
    classes = pascal_part.part_classes(pascal_part.read_index(tree / "all_obj_part_to_image.json"))
    # bird+TAIL has no val image, car+WHEEL no train image, aeroplane+TAIL is Matcher's exclusion.
    assert tuple(c.name for c in classes) == CLASS_NAMES
    assert [c.class_id for c in classes] == list(range(1, 8))
    assert [pascal_part.FOLDS[c.fold] for c in classes] == ["animals"] * 3 + ["indoor", "person", "person", "vehicles"]
    dataset = build(tree, fold=3)
    assert dataset.class_ids == (7,) and dataset.class_names[6] == "aeroplane+BODY"


def test_episode_count_is_matchers_val_lists_summed_and_capped_at_2500(tree):
    index = pascal_part.read_index(tree / "all_obj_part_to_image.json")
    # vehicles: aeroplane BODY 2 + TAIL 2 (left out, still counted) + car WHEEL 1
    assert pascal_part.episode_count(index, 3) == 5
    assert len(build(tree, fold=3)) == 5
    big = {fold: {"object": {"x": {"part": {"P": {"train": ["t"], "val": [f"{i}" for i in range(3000)]}}}}}
           for fold in pascal_part.FOLDS}
    assert pascal_part.episode_count(big, 0) == 2500


# --- masks and crops, against hand computations --------------------------------------------------

def test_the_target_is_the_union_of_the_parts_masks_in_one_object_cropped_to_its_box(tree):
    image, mask = PartAnnotations(tree).load(Member("2008_000100", 0), "LEG")
    # Matcher's crop of box (2, 3, 11, 12): rows 3..11, columns 2..10 (0-based: its last row and column stay out).
    expected = np.zeros((9, 9), np.uint8)
    expected[9 - 3: 12 - 3, 3 - 2: 6 - 2] = 1  # left leg: rows 9-12, row 12 cut off
    expected[9 - 3: 12 - 3, 7 - 2: 10 - 2] = 1  # right leg
    assert np.array_equal(mask, expected)  # the other bird's LEG (columns 15-19) is not in it
    jpeg = np.array(Image.open(tree / "JPEGImages" / "2008_000100.jpg").convert("RGB"))
    assert np.array_equal(image, jpeg[3:12, 2:11])
    assert pascal_part.crop_box({"xmin": "2", "ymin": "3", "xmax": "11", "ymax": "12"}, H, W) == (2, 3, 11, 12)
    assert pascal_part.crop_box({"xmin": -4, "ymin": 3, "xmax": 40, "ymax": 30}, H, W) == (0, 3, W, H)


def test_an_item_holds_the_cropped_target_and_reference_at_the_network_size(tree):
    dataset = build(tree, image_size=9, original_size=True)
    episode = PartEpisode(2, Member("2008_000100", 0), (Member("2008_000101", 0),))
    item = dataset.episode_item(0, episode, [np.random.default_rng(0)], "mask")
    _, crop = PartAnnotations(tree).load(Member("2008_000100", 0), "LEG")
    jpeg = np.array(Image.open(tree / "JPEGImages" / "2008_000100.jpg").convert("RGB"))
    assert torch.equal(item["target_image"], data.image_tensor(jpeg[3:12, 2:11], 9))  # 9 x 9 crop: no resizing
    assert torch.equal(item["target_mask"], torch.from_numpy(crop.astype(np.int64)))
    assert torch.equal(item["target_mask_original"], item["target_mask"])
    reference = np.zeros((17, 19), np.int64)  # bird of 2008_000101: box (1, 1, 20, 18), LEG rows 14-17, columns 4-8
    reference[13:17, 3:8] = 1
    resized = torch.from_numpy(data.resize_mask(reference.astype(np.uint8), 9)).long()
    assert resized.any() and torch.equal(item["reference_masks"][0], resized)
    assert torch.equal(item["reference_labels"][0], item["reference_masks"][0].float())  # a mask label is the mask
    assert item["target_id"] == "pascal-part/2008_000100/object0"
    assert item["reference_ids"] == ["pascal-part/2008_000101/object0"]


def test_items_have_the_keys_and_types_of_data_episode_items(tree):
    ours = build(tree, fold=0, label="point", original_size=True)[0]
    theirs = data.build_dataset("synthetic", split="test", fold=0, num_images=100, num_episodes=2, image_size=16,
                                label="point", original_size=True)[0]
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert type(ours[key]) is type(value), key
        if isinstance(value, torch.Tensor):
            assert ours[key].dtype == value.dtype and ours[key].shape[:-2] == value.shape[:-2], key
    assert ours["target_image"].shape == (3, 16, 16) and ours["reference_labels"].shape == (1, 16, 16)
    assert set(ours["target_mask"].unique().tolist()) <= {0, 1}


# --- episodes -----------------------------------------------------------------------------------------

def test_objects_are_drawn_with_matchers_probabilities(tree):
    dataset = build(tree, fold=0)
    legs = dataset.candidates[2]  # bird+LEG on the val images
    # 2008_000100 has two birds with legs (1/2 each); 000101 one (1); 000102 two birds, one legless (1/2).
    assert legs.members == (Member("2008_000100", 0), Member("2008_000100", 1), Member("2008_000101", 0),
                            Member("2008_000102", 1))
    assert legs.weights.tolist() == [0.5, 0.5, 1.0, 0.5]
    draws = [legs.draw(np.random.default_rng(i)) for i in range(4000)]
    share = draws.count(Member("2008_000101", 0)) / len(draws)
    assert abs(share - 1 / 2.5) < 0.03


def test_an_image_listed_without_an_object_holding_the_part_is_passed_over(tree):
    path = tree / "all_obj_part_to_image.json"
    index = json.loads(path.read_text())
    index["animals"]["object"]["bird"]["part"]["FACE"]["val"].append("2008_000103")  # it holds no bird
    path.write_text(json.dumps(index))
    dataset = build(tree, fold=0)
    assert "2008_000103" not in {m.image for m in dataset.candidates[1].members}


def test_an_image_listed_twice_is_drawn_twice_as_often(tree):
    path = tree / "all_obj_part_to_image.json"
    index = json.loads(path.read_text())
    index["animals"]["object"]["bird"]["part"]["LEG"]["val"].append("2008_000101")  # Matcher's raw list: 2 entries
    path.write_text(json.dumps(index))
    dataset = build(tree, fold=0, num_episodes=6000)
    legs = dataset.candidates[2]
    assert legs.weights.tolist() == [0.5, 0.5, 2.0, 0.5]  # 000100's two birds, 000101 twice, 000102's one legged bird
    targets = [e.target.image for e in dataset.episodes if e.class_id == 2]
    # 000100 as a whole has weight 1 (two birds of 1/2): 000101, listed twice, is drawn twice as often.
    ratio = targets.count("2008_000101") / targets.count("2008_000100")
    assert len(targets) == 2000 and 1.7 < ratio < 2.3


def test_an_object_whose_part_lies_outside_its_crop_is_kept_with_an_empty_mask(tmp_path):
    images = dict(IMAGES)
    # A bird whose LEG is outside its box (as when a box is smaller than its masks), and a bird whose
    # box has no width: Matcher keeps the first with an empty mask and would fail on the second.
    images["2008_000105"] = ("val", [obj("bird", (0, 0, 10, 10), {"LEG": [rect(15, 19, 15, 20)]}),
                                     obj("bird", (14, 2, 14, 12), {"LEG": [rect(8, 12, 14, 15)]})])
    voc = make_tree(tmp_path, images)
    dataset = build(voc, fold=0, label="point", image_size=8)
    assert Member("2008_000105", 0) in dataset.candidates[2].members
    assert Member("2008_000105", 1) not in dataset.candidates[2].members
    image, mask = PartAnnotations(voc).load(Member("2008_000105", 0), "LEG")
    assert image.shape == (10, 10, 3) and mask.shape == (10, 10) and not mask.any()
    episode = PartEpisode(2, Member("2008_000105", 0), (Member("2008_000105", 0),))
    item = dataset.episode_item(0, episode, [np.random.default_rng(0)], "point")
    # No fallback: the empty reference stays empty, and so does its label, whatever the kind.
    assert not item["target_mask"].any() and not item["reference_masks"].any() and not item["reference_labels"].any()


def test_box_convention_is_read_off_the_boxes():
    def sized(*boxes):  # (xmin, ymin, xmax, ymax) in a 20 x 24 image
        return [(dict(zip(("xmin", "ymin", "xmax", "ymax"), box)), H, W) for box in boxes]

    assert pascal_part.box_convention(sized((1, 1, 24, 10), (3, 2, 9, 9))).name == "1-based"  # xmax = width
    assert pascal_part.box_convention(sized((1, 5, 10, 20))).name == "1-based"  # ymax = height
    assert pascal_part.box_convention(sized((0, 3, 10, 12), (2, 2, 23, 19))).name == "0-based"
    assert pascal_part.box_convention(sized((0, 3, 24, 12))).name == "0-based, max exclusive"
    unknown = pascal_part.box_convention(sized((2, 3, 10, 12), ("4", "4", "23", "19")))
    assert unknown.name == "undetermined" and (unknown.boxes, unknown.zero, unknown.edge) == (2, 0, 0)


def test_the_box_convention_of_the_files_is_logged_once(tmp_path, caplog):
    zero_based = make_tree(tmp_path / "a")  # IMAGES' boxes start at 0 and end at W - 1 at most
    shifted = {image: (split, [dict(o, bndbox={k: v + 1 for k, v in o["bndbox"].items()}) for o in objects])
               for image, (split, objects) in IMAGES.items()}
    one_based = make_tree(tmp_path / "b", shifted)  # VOC's: no 0, and (0, 0, 23, 19) becomes (1, 1, 24, 20)
    with caplog.at_level("INFO", logger="pascal_part"):
        first, again = build(zero_based, fold=0), build(zero_based, fold=0, label="point")
        vehicles = build(one_based, fold=3)
    assert first.box_convention.name == again.box_convention.name == "0-based"
    assert vehicles.box_convention.name == "1-based"
    said = [r.getMessage() for r in caplog.records if "boxes " in r.getMessage()]
    assert len(said) == 2 and "boxes 0-based" in said[0] and "first row and column" in said[1]


def test_episodes_take_the_folds_classes_in_turn_and_references_are_other_images(tree):
    dataset = build(tree, fold=0, shots=2, num_episodes=12)
    assert [e.class_id for e in dataset.episodes] == [1, 2, 3] * 4
    for episode in dataset.episodes:
        images = [episode.target.image] + [m.image for m in episode.references]
        assert len(set(images)) == 3
        assert all(IMAGES[i][0] == "val" for i in images)
    one_shot = build(tree, fold=0, shots=1, num_episodes=12)
    assert [e.target for e in one_shot.episodes] == [e.target for e in dataset.episodes]  # same targets for every k


def test_episodes_are_fixed_whatever_the_batch_size_and_workers(tree):
    dataset = build(tree, fold=0, label="scribble", num_episodes=7)
    same = build(tree, fold=0, label="scribble", num_episodes=7)
    assert pascal_part.episodes_hash(dataset) == pascal_part.episodes_hash(same)
    assert pascal_part.episodes_hash(dataset) != pascal_part.episodes_hash(build(tree, fold=0, seed=1, num_episodes=7))

    def run(batch_size, workers):
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=data.collate_episodes)
        batches = list(loader)
        return {key: torch.cat([b[key] for b in batches]) for key in ("target_mask", "reference_labels", "class_id")}

    first = run(1, 0)
    for batch_size, workers in ((3, 0), (1, 2), (3, 2)):
        again = run(batch_size, workers)
        assert all(torch.equal(first[key], again[key]) for key in first)
    assert first["reference_labels"].sum() > 0


def test_evaluate_episodes_scores_part_episodes_unchanged(tree):
    class Frozen(torch.nn.Module):  # what evaluate_episodes asks of a model when a predictor decides
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def learnable_parameters(self):
            return iter([self.weight])

    dataset = build(tree, fold=2, num_episodes=6)
    oracle = evaluate.evaluate_episodes(Frozen(), dataset, class_ids=dataset.class_ids, batch_size=4,
                                        predictor=lambda batch: batch["target_mask"].float() * 2 - 1)
    nothing = evaluate.evaluate_episodes(Frozen(), dataset, class_ids=dataset.class_ids, batch_size=4,
                                         predictor=lambda batch: -torch.ones(batch["target_mask"].shape))
    assert oracle["miou"] == 100.0 and nothing["miou"] == 0.0 and oracle["episodes"] == 6
    table = pascal_part.format_part_table("VRP-SAM", {("mask", 1): {2: oracle}, "nothing": {2: nothing}})
    lines = table.splitlines()
    assert lines[1].split() == ["animals", "indoor", "person", "vehicles", "mean"]
    assert lines[2].split() == ["mask", "1-shot", "-", "-", "100.0", "-", "100.0"]
    assert lines[3].split() == ["nothing", "-", "-", "0.0", "-", "0.0"]
    assert "person 6" in table and "over the folds evaluated only" in table


def test_training_episodes_use_the_other_super_categories_train_images(tree):
    dataset = build(tree, fold=0, split="train", shots=1)
    assert dataset.class_ids == (4, 5, 6, 7)  # indoor, person, vehicles
    assert len(dataset) == 4 * 4  # our epoch: the four classes' train lists
    item = dataset[(3, 5)]
    assert IMAGES[item["target_id"].split("/")[1]][0] == "train"
    assert item["class_id"] == 5  # index 5 -> the second class
    assert torch.equal(item["reference_labels"], dataset[(3, 5)]["reference_labels"])  # a function of (epoch, index)
    dataset.set_epoch(3)
    assert dataset[5]["target_id"] == item["target_id"]


def test_the_fabricated_tree_builds_every_fold(tmp_path):
    spec = importlib.util.spec_from_file_location("make_pascal_part", ROOT / "benchmarks" / "make_pascal_part.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    index = maker.make_tree(tmp_path, images=40, size=64)
    assert "aeroplane+TAIL" not in [c.name for c in pascal_part.part_classes(index)]
    for fold in range(4):
        dataset = pascal_part.build_part_episodes(tmp_path, fold=fold, image_size=32)
        assert len(dataset) == pascal_part.episode_count(index, fold)
        assert (dataset[0]["reference_masks"] == 1).any()


# --- bad input: one line each, naming the file and the fix -------------------------------------

def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_missing_layout_lists_every_missing_entry_with_where_to_get_it(tmp_path):
    (tmp_path / "Pascal-Part" / "VOCdevkit" / "VOC2010" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as error:
        build(tmp_path / "Pascal-Part" / "VOCdevkit" / "VOC2010")
    message = str(error.value)
    assert "2 of the 3 entries" in message
    assert "Annotations_Part_json_merged_part_classes: " in message and "all_obj_part_to_image.json: " in message
    assert message.count("drive.google.com") >= 2 and "VOCtrainval_03-May-2010.tar" in message


def test_a_missing_part_json_is_one_line_naming_it(tree):
    (tree / "Annotations_Part_json_merged_part_classes" / "2008_000102.json").unlink()
    with pytest.raises(FileNotFoundError) as error:
        build(tree)
    message = one_line(error)
    assert "2008_000102.json not found" in message and "pascal.zip" in message


def test_an_image_listed_but_absent_is_one_line_naming_it(tree):
    (tree / "JPEGImages" / "2008_000101.jpg").unlink()
    with pytest.raises(FileNotFoundError) as error:
        build(tree)
    message = one_line(error)
    assert "JPEGImages/2008_000101.jpg not found" in message and "VOCtrainval_03-May-2010.tar" in message


def test_a_part_without_a_mask_is_one_line_naming_the_file(tmp_path):
    images = dict(IMAGES)
    split, objects = images["2008_000101"]
    broken = json.loads(json.dumps(objects))
    broken[0]["parts"][1]["mask"] = []
    images["2008_000101"] = (split, broken)
    voc = make_tree(tmp_path, images)
    with pytest.raises(ValueError) as error:
        build(voc)
    message = one_line(error)
    assert "2008_000101.json: part 'LEG' of object 0 (bird) has no mask" in message and "pascal.zip" in message


def test_too_few_images_for_the_shots_is_one_line(tree):
    with pytest.raises(ValueError) as error:
        build(tree, fold=3, shots=2)  # aeroplane+BODY is in two val images
    assert "aeroplane+BODY is in 2 val image(s)" in one_line(error)


# --- Table 15 through evaluate.py ----------------------------------------------------------------

def test_evaluate_prints_table_15_for_one_checkpoint_of_another_benchmark(tmp_path, capsys):
    """`python evaluate.py --dataset pascal-part --data-root D --checkpoint PATH`: a model trained on
    another benchmark (here the synthetic one) scored on the four part folds, Table 15's columns."""
    spec = importlib.util.spec_from_file_location("make_pascal_part", ROOT / "benchmarks" / "make_pascal_part.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    index = maker.make_tree(tmp_path / "parts", images=40, size=64)
    run = tmp_path / "run"
    sam = model.default_sam_checkpoint("tiny")
    vrp = model.build_vrp_sam(model.VRPConfig(backbone="tiny", sam="tiny"), sam_checkpoint=sam, seed=0)
    model.save_checkpoint(
        run / "best.pt",
        vrp,
        args={
            "dataset": "synthetic", "fold": 0, "label": "mask", "image_size": 32, "sam_checkpoint": str(sam),
            "backbone_weights": "random",
        },
    )
    results = evaluate.main(["--dataset", "pascal-part", "--data-root", str(tmp_path / "parts"), "--checkpoint",
                             str(run / "best.pt"), "--workers", "0", "--no-cache"])
    table = capsys.readouterr().out
    assert "animals    indoor    person  vehicles      mean" in table and "Table 15" in table
    by_fold = results["mask/1"]
    assert sorted(by_fold) == [0, 1, 2, 3]
    for fold, result in by_fold.items():
        assert result["episodes"] == pascal_part.episode_count(index, fold)  # Matcher's count by default
        assert set(result["class_iou"]) == set(pascal_part.build_part_episodes(
            tmp_path / "parts", fold=fold, image_size=32).class_ids)
    names = sorted(p.name for p in run.glob("eval-*.json"))  # one result per fold, none replacing another
    assert names == [f"eval-mask-1shot-matcher-count-seed0-pascal-part-{f}.json" for f in sorted(pascal_part.FOLDS)]


def test_evaluate_refuses_yardsticks_that_read_whole_scene_labels_on_parts(tmp_path):
    with pytest.raises(SystemExit, match="--method every-object reads the class labels of whole scenes"):
        evaluate.main(["--dataset", "pascal-part", "--data-root", str(tmp_path), "--checkpoint", str(tmp_path / "x.pt"),
                       "--method", "every-object"])


def test_train_meta_trains_on_the_other_super_categories_and_evaluate_finds_the_run(tmp_path, capsys):
    """`python train.py --dataset pascal-part --fold F`: the parts of the other three super-categories
    train, the fold's validate; `python evaluate.py --dataset pascal-part` then finds the run."""
    spec = importlib.util.spec_from_file_location("make_pascal_part", ROOT / "benchmarks" / "make_pascal_part.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    maker.make_tree(tmp_path / "parts", images=96, size=64)  # every class in at least two train images
    out = tmp_path / "runs" / "animals"
    common = ["--dataset", "pascal-part", "--data-root", str(tmp_path / "parts"), "--workers", "0",
              "--cache-dir", str(tmp_path / "cache")]
    result = train.main(common + ["--fold", "0", "--backbone", "tiny", "--sam", "tiny", "--image-size", "32",
                                  "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
                                  "--val-episodes", "6", "--out", str(out)])
    state = model.load_checkpoint(out / "best.pt")
    assert state["args"]["dataset"] == "pascal-part" and 0 <= result["best_miou"] <= 100
    validation = pascal_part.build_part_episodes(tmp_path / "parts", fold=0, image_size=32, num_episodes=6)
    assert state["args"]["val_episodes_hash"] == pascal_part.episodes_hash(validation)
    capsys.readouterr()
    results = evaluate.main(common + ["--runs", str(tmp_path / "runs"), "--folds", "0", "--episodes", "6"])
    assert results["mask/1"][0]["episodes"] == 6 and "animals" in capsys.readouterr().out
