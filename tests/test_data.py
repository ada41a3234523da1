"""Benchmarks and episodes (paper §5.1, Appendix B, Tables 8-10), on tiny fake datasets written in
the real on-disk formats: fold splits, which classes may be foreground, fixed evaluation episodes,
reproducible training episodes, the two COCO mask routes, and errors that tell people what to fix."""

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader

import data
import evaluate
from synthetic import SyntheticImages

# pycocotools 2.0 with numpy 2 warns on every decode; harmless, and not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SIZE = 32  # the episode image size S in these tests: small, so every test takes well under a second
# Fake objects cover 96+ pixels, except one 9-pixel class-20 speck per split (make_pascal); real
# data uses data.MIN_OBJECT_PIXELS (2048), which would leave no fake object at all.
MIN_PIXELS = 50


# --- fake datasets in the real layouts ------------------------------------------------------------

def voc_palette() -> list[int]:
    palette = [0] * 768
    for i in range(1, 21):
        palette[3 * i: 3 * i + 3] = [(37 * i) % 256, (91 * i) % 256, (53 * i) % 256]
    palette[765:768] = [224, 224, 192]  # VOC's boundary colour for 255
    return palette


def save_voc_label(path, label: np.ndarray) -> None:
    image = Image.fromarray(label)
    image.putpalette(voc_palette())  # palette PNG, as SegmentationClassAug ships
    image.save(path)


def make_pascal(root, *, train: int = 14, val: int = 27, seed: int = 0) -> dict:
    """VOC2012/{JPEGImages, SegmentationClassAug, ImageSets/Segmentation/val.txt} with three class
    objects per image, each inside a 1-px 255 boundary; images have varied, non-square sizes.
    Image i of a split holds classes 3i..3i+2 (mod 20) + 1: 14 images show every class at least twice, 27 at least four times.
    Image 0 of each split also holds a 9-pixel speck of class 20, below MIN_PIXELS.
    Returns {name: classes}."""
    rng = np.random.default_rng(seed)
    voc = root / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    classes, val_names = {}, []
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            name = f"2008_{split}{i:03d}"
            height, width = 30 + (i % 3) * 4, 44 + (i % 2) * 6
            label = np.zeros((height, width), np.uint8)
            ids = [(3 * i + j) % 20 + 1 for j in range(3)]
            for j, class_id in enumerate(ids):
                x0 = 2 + j * 14
                label[4:height - 4, x0 - 1:x0 + 11] = 255
                label[5:height - 5, x0:x0 + 10] = class_id
            if i == 0:
                label[0:3, 0:3] = 20
            save_voc_label(voc / "SegmentationClassAug" / f"{name}.png", label)
            Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
                voc / "JPEGImages" / f"{name}.jpg")
            classes[name] = sorted(ids)
            if split == "val":
                val_names.append(name)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(n + "\n" for n in val_names))
    return classes


def coco_objects(image_index: int, height: int, width: int):
    """Eight small rectangles (classes 8i..8i+7 mod 80, + 1) on a 2 x 4 grid, plus in image 0 one large
    rectangle of class 80 under the first two, listed first: the field's masks paint in file order, a
    later object over an earlier one (data.COCO_MASK_CONVENTION), so the small ones stay visible."""
    objects = [(80, (0, 0, 26, 18), "rle")] if image_index == 0 else []
    for j in range(8):
        row, col = divmod(j, 4)
        box = (col * 12 + 1, row * 20 + 2, col * 12 + 9, row * 20 + 14)  # x0, y0, x1, y1 (exclusive)
        objects.append(((8 * image_index + j) % 80 + 1, box, "polygon" if j % 2 == 0 else "rle"))
    return objects


def make_coco(root, *, images_per_split: int = 20, seed: int = 0) -> None:
    """COCO 2014 layout with both mask sources for the same objects: annotations/instances_*.json
    (polygons and compressed RLE, real category ids) and annotations/<split>2014/*.png rendered by
    hand (in file order, a later object over an earlier one), with JPEGs in train2014/ and val2014/."""
    rng = np.random.default_rng(seed)
    height, width = 40, 48
    for folder in ("train2014", "val2014"):
        (root / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
        images, annotations = [], []
        for i in range(images_per_split):
            image_id = i + 1 if folder == "train2014" else 1000 + i
            file_name = f"COCO_{folder}_{image_id:012d}.jpg"
            Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / folder / file_name)
            images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
            painted = []
            for class_id, (x0, y0, x1, y1), kind in coco_objects(i, height, width):
                if kind == "polygon":
                    segmentation = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
                    exact = mask_utils.decode(rle).astype(bool)  # the COCO rasteriser decides the pixels
                else:
                    exact = np.zeros((height, width), bool)
                    exact[y0:y1, x0:x1] = True
                    rle = mask_utils.encode(np.asfortranarray(exact.astype(np.uint8)))
                    segmentation = {"size": rle["size"], "counts": rle["counts"].decode()}
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                    "category_id": data.COCO_CATEGORY_IDS[class_id - 1],
                                    "segmentation": segmentation, "area": float(exact.sum()),
                                    "bbox": [x0, y0, x1 - x0, y1 - y0]})
                painted.append((class_id, exact))
            label = np.zeros((height, width), np.uint8)
            for class_id, exact in painted:
                label[exact] = class_id
            Image.fromarray(label).save(root / "annotations" / folder / file_name.replace(".jpg", ".png"))
        categories = [{"id": cid, "name": name, "supercategory": "thing"}
                      for cid, name in zip(data.COCO_CATEGORY_IDS, data.COCO_CLASSES)]
        (root / "annotations" / f"instances_{folder}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def tree_state(root) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def pascal_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pascal")
    make_pascal(root)
    return root


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    make_coco(root)
    return root


def pascal(root, tmp_path, **kwargs):
    kwargs.setdefault("split", "test")
    kwargs.setdefault("fold", 0)
    kwargs.setdefault("image_size", SIZE)
    kwargs.setdefault("min_pixels", MIN_PIXELS)
    return data.build_dataset("pascal", data_root=root, cache_dir=tmp_path / "cache", **kwargs)


def synthetic(**kwargs):
    kwargs.setdefault("fold", 0)
    kwargs.setdefault("num_images", 120)
    return data.build_dataset("synthetic", image_size=SIZE, **kwargs)


def same_items(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


# --- the folds of Tables 8-10 ---------------------------------------------------------------------

def test_pascal_folds_are_table_8():
    names = data.class_names("pascal")
    assert [names[c - 1] for c in data.fold_classes("pascal", 0, "test")] == [
        "aeroplane", "bicycle", "bird", "boat", "bottle"]
    assert [names[c - 1] for c in data.fold_classes("pascal", 3, "test")] == [
        "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    for fold in range(4):
        test, train = data.fold_classes("pascal", fold, "test"), data.fold_classes("pascal", fold, "train")
        assert test == list(range(5 * fold + 1, 5 * fold + 6)) and sorted(test + train) == list(range(1, 21))


def test_coco_folds_follow_the_interleaved_rule_not_table_9s_misprints():
    names = data.class_names("coco")
    assert len(names) == 80 and names[:5] == ("person", "bicycle", "car", "motorcycle", "airplane")
    fold0 = [names[c - 1] for c in data.fold_classes("coco", 0, "test")]
    assert fold0[:5] == ["person", "airplane", "boat", "parking meter", "dog"]
    assert fold0[-1] == "scissors" and "refrigerator" in fold0 and fold0.count("spoon") == 1
    seen = []
    for fold in range(4):
        test = data.fold_classes("coco", fold, "test")
        assert len(test) == 20 and all((c - 1) % 4 == fold for c in test)
        assert sorted(test + data.fold_classes("coco", fold, "train")) == list(range(1, 81))
        seen += test
    assert sorted(seen) == list(range(1, 81))  # every class is tested in exactly one fold
    assert names.count("spoon") == names.count("sink") == 1


def test_coco2pascal_folds_are_table_10_and_their_classes_were_never_trained_on():
    pascal_names = data.class_names("coco2pascal")  # test ids are PASCAL ids
    table_10 = [{"aeroplane", "boat", "chair", "diningtable", "dog", "person"}, {"horse", "sofa", "bicycle", "bus"},
                {"bird", "car", "pottedplant", "sheep", "train", "tvmonitor"}, {"bottle", "cow", "cat", "motorbike"}]
    coco_name = {"aeroplane": "airplane", "diningtable": "dining table", "motorbike": "motorcycle",
                 "pottedplant": "potted plant", "sofa": "couch", "tvmonitor": "tv"}
    for fold in range(4):
        test = data.fold_classes("coco2pascal", fold, "test")
        assert {pascal_names[c - 1] for c in test} == table_10[fold]
        trained = {data.COCO_CLASSES[c - 1] for c in data.fold_classes("coco2pascal", fold, "train")}
        assert data.fold_classes("coco2pascal", fold, "train") == data.fold_classes("coco", fold, "train")
        # Table 10 is exactly the PASCAL classes whose COCO counterpart is held out in fold i
        held_out = {p for p in data.PASCAL_CLASSES if coco_name.get(p, p) not in trained}
        assert held_out == table_10[fold]
    assert data.class_names("coco2pascal", "train") == data.COCO_CLASSES


def test_bad_fold_split_or_name_is_explained():
    with pytest.raises(ValueError, match="fold must be 0..3"):
        data.fold_classes("pascal", 4, "test")
    with pytest.raises(ValueError, match="unknown split 'val'.*train, test"):
        data.build_dataset("synthetic", split="val", fold=0)
    with pytest.raises(ValueError, match="unknown dataset 'voc'"):
        data.build_dataset("voc", split="test", fold=0)
    with pytest.raises(ValueError, match="unknown label kind 'polygon'"):
        synthetic(split="test", label="polygon")


# --- PASCAL-5i from its on-disk layout ------------------------------------------------------------

def test_pascal_splits_come_from_val_txt_and_the_index_is_cached(pascal_root, tmp_path, monkeypatch):
    test = pascal(pascal_root, tmp_path)
    train = pascal(pascal_root, tmp_path, split="train")
    assert len(test.images.ids) == 27 and all(i.startswith("voc/2008_val") for i in test.images.ids)
    assert len(train.images.ids) == 14 and not set(train.images.ids) & set(test.images.ids)
    assert test.images.classes["voc/2008_val000"] == (1, 2, 3)
    index_files = list((tmp_path / "cache").glob("pascal-index-*.json"))
    assert len(index_files) == 1

    def no_rescan(*args, **kwargs):
        raise AssertionError("the cached index should have been used")

    monkeypatch.setattr(data, "_index_label_pngs", no_rescan)
    assert pascal(pascal_root, tmp_path).episodes == test.episodes


def test_objects_below_min_pixels_do_not_make_an_image_hold_their_class(pascal_root, tmp_path):
    assert data.MIN_OBJECT_PIXELS == 2 * 32 * 32  # the rule behind the authors' list files
    strict, lenient = pascal(pascal_root, tmp_path), pascal(pascal_root, tmp_path, min_pixels=1, fold=3)
    assert strict.images.classes["voc/2008_val000"] == (1, 2, 3)
    assert lenient.images.classes["voc/2008_val000"] == (1, 2, 3, 20)
    assert "voc/2008_val000" in lenient.images_of[20]
    assert "voc/2008_val000" not in pascal(pascal_root, tmp_path, fold=3).images_of[20]
    with pytest.raises(ValueError, match=r"class 1 \(aeroplane\) is in 0 image"):  # every fake object is < 2048 px
        pascal(pascal_root, tmp_path, min_pixels=data.MIN_OBJECT_PIXELS)


def test_pascal_item_shapes_values_and_k_shot_references(pascal_root, tmp_path):
    dataset = pascal(pascal_root, tmp_path, shots=3, label="box", num_episodes=12, original_size=True)
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["target_image"].shape == (3, SIZE, SIZE) and item["target_image"].dtype == torch.float32
        assert item["target_mask"].shape == (SIZE, SIZE) and item["target_mask"].dtype == torch.int64
        assert item["reference_images"].shape == (3, 3, SIZE, SIZE)
        assert item["reference_masks"].shape == item["reference_labels"].shape == (3, SIZE, SIZE)
        assert set(item["target_mask"].unique().tolist()) <= {0, 1, 255} and 255 in item["target_mask"]
        assert item["reference_labels"].dtype == torch.float32
        assert set(item["reference_labels"].unique().tolist()) == {0.0, 1.0}
        refs = item["reference_ids"]
        assert len(set(refs)) == 3 and item["target_id"] not in refs  # k distinct, never the target
        assert all(item["class_id"] in dataset.images.classes[r] for r in refs)
        assert all((m == 1).any() for m in item["reference_masks"])  # each reference shows the class
        _, label = dataset.images.load(item["target_id"])
        assert item["target_mask_original"].shape == label.shape
        assert torch.equal(item["target_mask_original"] == 1, torch.from_numpy(label == item["class_id"]))


def test_evaluation_walks_over_target_images_each_floor_or_ceil_of_n_over_m_times(pascal_root, tmp_path):
    dataset = pascal(pascal_root, tmp_path, num_episodes=25)
    holders = [i for i in dataset.images.ids if set(dataset.images.classes[i]) & {1, 2, 3, 4, 5}]
    counts = {i: 0 for i in holders}
    classes = {i: set() for i in holders}
    for episode in dataset.episodes:
        counts[episode.target_id] += 1
        classes[episode.target_id].add(episode.class_id)
        assert episode.class_id in dataset.images.classes[episode.target_id]
    low = 25 // len(holders)
    assert len(dataset) == 25 and set(counts.values()) <= {low, low + 1} and sum(counts.values()) == 25
    # an image holding two test classes is a target for either
    assert any(len(c) > 1 for c in classes.values())


def test_evaluation_episodes_are_fixed_by_the_seed_and_written_with_their_hash(pascal_root, tmp_path):
    first = pascal(pascal_root, tmp_path, label="point", num_episodes=30)
    again = pascal(pascal_root, tmp_path / "elsewhere", label="point", num_episodes=30)  # rebuilt index too
    other_seed = pascal(pascal_root, tmp_path, label="point", num_episodes=30, seed=1)
    assert first.episodes == again.episodes and data.episodes_hash(first) == data.episodes_hash(again)
    assert first.episodes != other_seed.episodes and data.episodes_hash(first) != data.episodes_hash(other_seed)
    assert data.episodes_hash(first) != data.episodes_hash(pascal(pascal_root, tmp_path, num_episodes=30))  # label

    path = tmp_path / "out" / "episodes.json"
    digest = data.write_episodes(first, path)
    assert digest == data.episodes_hash(first) == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    record = json.loads(path.read_text())
    assert record["seed"] == 0 and record["label"] == "point" and len(record["episodes"]) == 30
    assert record["episodes"][3] == {"target": first.episodes[3].target_id, "class": first.episodes[3].class_id,
                                     "references": list(first.episodes[3].reference_ids)}
    assert [p.name for p in path.parent.iterdir()] == ["episodes.json"]  # no temporary file left behind
    # More shots keep the targets and classes: k-shot results compare on the same targets.
    three = pascal(pascal_root, tmp_path, label="point", num_episodes=30, shots=3)
    assert [(e.target_id, e.class_id) for e in three.episodes] == [(e.target_id, e.class_id) for e in first.episodes]


def test_evaluation_items_do_not_depend_on_batch_size_or_workers(pascal_root, tmp_path):
    dataset = pascal(pascal_root, tmp_path, label="scribble", shots=2, num_episodes=8)
    direct = [dataset[i] for i in range(len(dataset))]
    batches = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=data.collate_episodes)
    loaded = []
    for batch in batches:
        assert batch["reference_labels"].shape[1:] == (2, SIZE, SIZE) and isinstance(batch["target_id"], list)
        for b in range(len(batch["target_id"])):
            loaded.append({k: v[b] for k, v in batch.items()})
    for a, b in zip(direct, loaded, strict=True):
        assert a["target_id"] == b["target_id"] and a["reference_ids"] == b["reference_ids"]
        assert int(b["episode"]) == a["episode"] and int(b["class_id"]) == a["class_id"]
        for key in ("target_image", "target_mask", "reference_images", "reference_masks", "reference_labels"):
            assert torch.equal(a[key], b[key]), key


def test_training_episodes_are_a_function_of_seed_epoch_and_index(pascal_root, tmp_path):
    dataset = pascal(pascal_root, tmp_path, split="train", label="point")
    dataset.set_epoch(3)
    epoch3 = [dataset[i] for i in range(len(dataset))]
    copy = pascal(pascal_root, tmp_path, split="train", label="point")  # a resumed run
    copy.set_epoch(3)
    loader = DataLoader(copy, batch_size=4, shuffle=True, num_workers=2, collate_fn=data.collate_episodes,
                        generator=torch.Generator().manual_seed(0))
    by_index = {}
    for batch in loader:
        for b, index in enumerate(batch["episode"].tolist()):
            by_index[index] = {k: v[b] for k, v in batch.items()}
    assert all(torch.equal(epoch3[i]["reference_labels"], by_index[i]["reference_labels"])
               and epoch3[i]["reference_ids"] == by_index[i]["reference_ids"] for i in range(len(dataset)))
    dataset.set_epoch(4)
    epoch4 = [dataset.episode(i) for i in range(len(dataset))]
    dataset.set_epoch(3)
    assert [dataset.episode(i) for i in range(len(dataset))] != epoch4
    assert same_items(dataset[5], epoch3[5])


def test_one_persistent_loader_with_epoch_order_serves_the_same_episodes_as_set_epoch(pascal_root, tmp_path):
    """train.py's loader: (epoch, index) pairs through persistent workers give, epoch after epoch,
    exactly the items that set_epoch(e) + dataset[index] give, in EpochOrder's seeded order."""
    dataset = pascal(pascal_root, tmp_path, split="train", label="scribble")
    order = data.EpochOrder(len(dataset))
    loader = DataLoader(dataset, batch_size=3, sampler=order, num_workers=2, persistent_workers=True,
                        collate_fn=data.collate_episodes)
    reference = pascal(pascal_root, tmp_path, split="train", label="scribble")
    for epoch in (2, 5):
        order.set_epoch(epoch, seed=100 + epoch)
        # the order of the loader train.py made per epoch before, on a generator seeded alike
        generator = torch.Generator().manual_seed(100 + epoch)
        sampler = torch.utils.data.RandomSampler(range(len(dataset)), generator=generator)
        expected = [int(i) for b in DataLoader(range(len(dataset)), sampler=sampler, generator=generator) for i in b]
        assert [index for _, index in order] == expected and {e for e, _ in order} == {epoch}
        got = [(index, {k: v[b] for k, v in batch.items()}) for batch in loader
               for b, index in enumerate(batch["episode"].tolist())]
        assert [index for index, _ in got] == expected[:len(got)] and len(got) == len(dataset) // 3 * 3
        reference.set_epoch(epoch)
        for index, item in got:
            expected_item = reference[index]
            assert (
                item["target_id"] == expected_item["target_id"] and int(item["class_id"]) == expected_item["class_id"]
            )
            for key in ("target_image", "target_mask", "reference_images", "reference_labels"):
                assert torch.equal(item[key], expected_item[key]), (epoch, index, key)
    assert not same_items(dataset[(2, 0)], dataset[(5, 0)])
    with pytest.raises(IndexError):
        dataset[(0, len(dataset))]


def test_the_persistent_validation_loader_serves_the_same_episodes_every_epoch():
    """train.py validates every epoch through one evaluate.episode_loader kept alive: each pass over it
    gives the fixed episodes, in order, exactly as a fresh loader does."""
    dataset = data.build_dataset("synthetic", split="test", fold=0, image_size=64, num_episodes=10)
    kept = evaluate.episode_loader(dataset, batch_size=4, workers=2, device=torch.device("cpu"), persistent=True)
    fresh = [batch for batch in evaluate.episode_loader(dataset, batch_size=4, workers=0, device=torch.device("cpu"))]
    for _ in range(2):
        passes = list(kept)
        assert [b["episode"].tolist() for b in passes] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        for got, expected in zip(passes, fresh):
            for key in ("target_image", "target_mask", "reference_images", "reference_labels", "class_id"):
                assert torch.equal(got[key], expected[key]), key


def test_synthetic_images_render_once_and_hand_out_copies(monkeypatch):
    images = SyntheticImages(seed=0, split="test", num_images=4)
    renders = []
    real_scene = images.scene
    monkeypatch.setattr(images, "scene", lambda image_id: renders.append(image_id) or real_scene(image_id))
    image, label = images.load(images.ids[1])
    image[:] = 0
    label[:] = 0
    again, again_label = images.load(images.ids[1])
    assert renders == [images.ids[1]]  # rendered once
    fresh = SyntheticImages(seed=0, split="test", num_images=4).load(images.ids[1])
    assert np.array_equal(again, fresh[0]) and np.array_equal(again_label, fresh[1]) and again.any()


def test_test_classes_are_never_foreground_in_training_episodes(pascal_root, tmp_path):
    dataset = pascal(pascal_root, tmp_path, split="train", fold=1)
    test_classes = set(data.fold_classes("pascal", 1, "test"))
    assert any(set(c) & test_classes for c in dataset.images.classes.values())  # they are in the images
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            assert item["class_id"] not in test_classes
            for image_id, mask in [(item["target_id"], item["target_mask"])] + list(
                    zip(item["reference_ids"], item["reference_masks"])):
                _, label = dataset.images.load(image_id)
                small = np.array(Image.fromarray(label).resize((SIZE, SIZE), Image.NEAREST))
                assert not (mask[torch.from_numpy(np.isin(small, list(test_classes)))] == 1).any()


def test_a_reference_object_too_thin_for_nearest_resizing_still_gets_a_label(tmp_path):
    make_pascal(tmp_path / "thin")
    dataset = pascal(tmp_path / "thin", tmp_path, label="point", num_episodes=20, image_size=3)
    for index in range(len(dataset)):
        item = dataset[index]
        assert (item["reference_masks"] == 1).any() and (item["reference_labels"] > 0).any()
        assert not (item["reference_labels"].bool() & (item["reference_masks"] != 1)).any()


def test_denormalize_inverts_the_normalisation():
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    tensor = data.image_tensor(image, SIZE)
    assert tensor.mean(dim=(1, 2)).abs().max() < 2.5
    assert np.abs(data.denormalize(tensor).astype(int) - image).max() <= 1


# --- COCO-20i: the PNG route and the pycocotools route --------------------------------------------

def test_the_pycocotools_route_equals_the_png_route(coco_root, tmp_path):
    common = dict(data_root=coco_root, cache_dir=tmp_path / "cache", image_size=SIZE, fold=0, label="scribble",
                  min_pixels=MIN_PIXELS)
    for split in ("train", "test"):
        from_png = data.build_dataset("coco", split=split, coco_masks="png", **common)
        from_json = data.build_dataset("coco", split=split, coco_masks="json", **common)
        assert from_json.images.classes == from_png.images.classes
        for image_id in from_png.images.ids:
            assert np.array_equal(from_json.images.load(image_id)[1], from_png.images.load(image_id)[1])
        for index in (0, 7):
            assert same_items(from_json[index], from_png[index])
    # the small objects listed after the large class-80 one are painted over it: file order
    assert data.build_dataset("coco", split="train", coco_masks="json", **common).images.classes[
        "coco/train2014/COCO_train2014_000000000001"] == (1, 2, 3, 4, 5, 6, 7, 8, 80)
    assert len(list((tmp_path / "cache").glob("coco-masks-*/train2014/COCO_train2014_000000000001.png"))) == 1


def test_coco_episodes_draw_fold_classes_and_ids_name_the_split(coco_root, tmp_path):
    dataset = data.build_dataset("coco", split="test", fold=2, data_root=coco_root, cache_dir=tmp_path,
                                 image_size=SIZE, num_episodes=40, coco_masks="png", min_pixels=MIN_PIXELS)
    assert {e.class_id for e in dataset.episodes} <= set(data.fold_classes("coco", 2, "test"))
    assert all(e.target_id.startswith("coco/val2014/COCO_val2014_") for e in dataset.episodes)
    train = data.build_dataset("coco", split="train", fold=2, data_root=coco_root, cache_dir=tmp_path,
                               image_size=SIZE, coco_masks="png", min_pixels=MIN_PIXELS)
    assert all(i.startswith("coco/train2014/") for i in train.targets)


def test_coco2pascal_trains_on_coco_and_tests_on_pascal_val_table_10_classes(tmp_path):
    root = tmp_path / "both"  # one folder serving both, as train.py passes one --data-root
    make_pascal(root)
    make_coco(root / "COCO2014")
    train = data.build_dataset("coco2pascal", split="train", fold=3, data_root=root, cache_dir=tmp_path / "c",
                               image_size=SIZE, min_pixels=MIN_PIXELS)
    test = data.build_dataset("coco2pascal", split="test", fold=3, data_root=root, cache_dir=tmp_path / "c",
                              image_size=SIZE, num_episodes=20, min_pixels=MIN_PIXELS)
    assert train.targets[0].startswith("coco/train2014/") and train.class_names == data.COCO_CLASSES
    assert all(e.target_id.startswith("voc/2008_val") for e in test.episodes)
    assert {e.class_id for e in test.episodes} == set(data.COCO2PASCAL_FOLDS[3]) == {5, 8, 10, 14}


def test_nothing_is_written_under_the_data_root(coco_root, pascal_root, tmp_path):
    before = tree_state(coco_root), tree_state(pascal_root)
    for masks in ("json", "png"):
        dataset = data.build_dataset("coco", split="test", fold=1, data_root=coco_root, cache_dir=tmp_path / "c",
                                     image_size=SIZE, num_episodes=4, coco_masks=masks, min_pixels=MIN_PIXELS)
        list(DataLoader(dataset, batch_size=2, collate_fn=data.collate_episodes))
    dataset = pascal(pascal_root, tmp_path / "d", split="train")
    [dataset[i] for i in range(3)]
    assert (tree_state(coco_root), tree_state(pascal_root)) == before


def test_the_default_cache_inside_the_data_root_is_refused(pascal_root, monkeypatch):
    monkeypatch.chdir(pascal_root)
    with pytest.raises(ValueError, match="inside data root .*pass cache_dir"):
        data.build_dataset("pascal", split="test", fold=0, data_root=pascal_root)
    assert not (pascal_root / "cache").exists()


# --- bad input: errors that name the file or class and say what to do ------------------------------

def test_missing_dataset_explains_the_layout_and_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs data_root") as info:
        data.build_dataset("pascal", split="test", fold=0)
    assert "SegmentationClassAug" in str(info.value) and "host.robots.ox.ac.uk" in str(info.value)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'} not found") as info:
        data.build_dataset("coco", split="test", fold=0, data_root=tmp_path / "nowhere", cache_dir=tmp_path)
    assert "cocodataset.org" in str(info.value) and "instances_train2014.json" in str(info.value)
    (tmp_path / "voc" / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="(?s)SegmentationClassAug not found.*SBD"):
        pascal(tmp_path / "voc", tmp_path)
    (tmp_path / "coco" / "val2014").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="instances_val2014.json not found"):
        data.build_dataset("coco", split="test", fold=0, data_root=tmp_path / "coco", cache_dir=tmp_path)


def test_missing_or_unreadable_files_are_named(tmp_path):
    root = tmp_path / "voc"
    make_pascal(root)
    voc = root / "VOC2012"
    (voc / "JPEGImages" / "2008_val003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="2008_val003.jpg not found"):
        pascal(root, tmp_path)
    Image.new("RGB", (10, 10)).save(voc / "JPEGImages" / "2008_val003.jpg")
    # val images 0 and 1 hold fold-0 classes, so episodes target them
    Image.new("RGB", (10, 10)).save(voc / "JPEGImages" / "2008_val000.jpg")  # wrong size for its label
    (voc / "JPEGImages" / "2008_val001.jpg").write_bytes(b"not a jpeg")
    dataset = pascal(root, tmp_path, num_episodes=40)
    with pytest.raises(ValueError, match="2008_val000.jpg is 10x10 but its label .*2008_val000.png is 44x30"):
        dataset[next(i for i, e in enumerate(dataset.episodes) if e.target_id == "voc/2008_val000")]
    with pytest.raises(OSError, match="image .*2008_val001.jpg could not be read"):
        dataset[next(i for i, e in enumerate(dataset.episodes) if e.target_id == "voc/2008_val001")]
    (voc / "SegmentationClassAug" / "2008_val005.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(OSError, match="label .*2008_val005.png could not be read"):
        pascal(root, tmp_path / "fresh-cache")
    Image.new("RGB", (44, 30)).save(voc / "SegmentationClassAug" / "2008_val005.png")
    with pytest.raises(ValueError, match="2008_val005.png is a RGB PNG.*SegmentationClassAug"):
        pascal(root, tmp_path / "another-cache")
    (voc / "SegmentationClassAug" / "2008_val005.png").unlink()
    with pytest.raises(FileNotFoundError, match="2008_val005.png not found .*val.txt"):
        pascal(root, tmp_path / "third-cache")


def test_a_class_with_fewer_than_two_images_is_named(tmp_path):
    make_pascal(tmp_path / "few", val=8)  # val images 0..7 show classes 1..20, then 1..4 again: 5 only once
    with pytest.raises(ValueError, match=r"class 5 \(bottle\) is in 1 image"):
        pascal(tmp_path / "few", tmp_path, fold=0)
    with pytest.raises(
        ValueError, match=r"class 1 \(aeroplane\) is in 2 image.*2-shot episode needs a target and 2 other"
    ):
        pascal(tmp_path / "few", tmp_path, fold=0, shots=2)


# --- the embedded synthetic benchmark ----------------------------------------------------------------

def test_synthetic_classes_have_images_in_both_splits_and_the_index_tells_the_truth():
    for split, count in (("train", 2000), ("test", 1000)):
        images = SyntheticImages(seed=0, split=split, num_images=count)
        per_class = np.bincount([c for i in images.ids for c in images.classes[i]], minlength=21)[1:]
        assert per_class.min() >= count // 20  # ~10% of images per class, 1-3 classes per image
        for image_id in images.ids[:25]:
            scene = images.scene(image_id)
            assert set(np.unique(scene.label)) - {0, 255} == set(images.classes[image_id])
            assert len(scene.instances) - len(images.classes[image_id]) <= 3  # distractors
    # images of the two splits are different scenes
    assert not np.array_equal(SyntheticImages(seed=0, split="train", num_images=1).load("synthetic-s0/train/00000")[0],
                              SyntheticImages(seed=0, split="test", num_images=1).load("synthetic-s0/test/00000")[0])


def test_a_synthetic_scene_is_identical_when_rendered_again():
    a = SyntheticImages(seed=3, split="test", num_images=10)
    b = SyntheticImages(seed=3, split="test", num_images=10)
    image, label = a.load("synthetic-s3/test/00007")
    assert image.shape == (128, 128, 3) and label.shape == (128, 128)
    assert all(np.array_equal(x, y) for x, y in zip((image, label), b.load("synthetic-s3/test/00007")))
    assert not np.array_equal(image, SyntheticImages(seed=4, split="test", num_images=10).load(
        "synthetic-s4/test/00007")[0])


def test_synthetic_test_classes_are_background_in_its_training_episodes():
    dataset = synthetic(split="train", fold=2, label="point")
    test_classes = list(range(11, 16))
    shown = 0
    for index in range(0, len(dataset), 3):
        item = dataset[index]
        assert item["class_id"] not in test_classes
        _, label = dataset.images.load(item["target_id"])
        small = np.array(Image.fromarray(label).resize((SIZE, SIZE), Image.NEAREST))
        held_out = torch.from_numpy(np.isin(small, test_classes))
        shown += int(held_out.any())
        assert not (item["target_mask"][held_out] == 1).any()
    assert shown > 0  # the test classes were in the images, as background


def test_synthetic_defaults_and_evaluation_list():
    dataset = data.build_dataset("synthetic", split="test", fold=1, num_episodes=50)
    assert len(dataset.images.ids) == 1000 and dataset.image_size == 128 and len(dataset) == 50
    assert {e.class_id for e in dataset.episodes} <= set(range(6, 11))
    item = dataset[0]
    assert item["target_image"].shape == (3, 128, 128) and item["target_id"].startswith("synthetic-s0/test/")
    assert len(data.build_dataset("synthetic", split="train", fold=1, num_images=300).images.ids) == 300
