"""Every frozen SAM `--sam` names (model.SAM_SPECS): SAM 2 and MobileSAM decode as their own
predictors do, the embedding cache keeps the families apart, a wrong file or SAM is one clear line,
and train.py / evaluate.py / segment.py run on SAM 2 without asking which family it is.

Random tiny configurations only: the tiny SAM 2 of the synthetic benchmark (sam2_backend.TINY_SAM2,
built once per module), and a MobileSAM whose TinyViT is shrunk (it only runs at 1024²)."""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from dataclasses import asdict

import numpy as np
import pytest
import torch

import evaluate
import model
import sam2_backend
import train
import video
from segment import VRPPredictor
from synthetic import synthetic_scene

IMAGENET_MEAN, IMAGENET_STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def normalised(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) ImageNet-normalised, as data.py feeds SAM."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return (x - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]


@pytest.fixture(scope="module")
def sam2_tiny():
    return model.build_sam("sam2_tiny")


@pytest.fixture(scope="module")
def sam2_tiny_file(tmp_path_factory, sam2_tiny):
    """The random tiny SAM 2 as SAM 2's official files hold weights: {"model": state_dict} (fp16 here)."""
    path = tmp_path_factory.mktemp("sam2") / "sam2_tiny_random.pt"
    torch.save({"model": {k: v.half() if v.is_floating_point() else v for k, v in sam2_tiny.state_dict().items()}},
               path)
    return path


# --- the registry ----------------------------------------------------------------------------------

def test_every_sam_has_a_family_a_decoder_group_and_its_official_file():
    assert set(model.SAM_TYPES) == {"vit_h", "vit_l", "vit_b", "vit_t", "tiny", "tiny_distilled", "sam2_tiny",
                                    *sam2_backend.SAM2_MODELS}
    files = {name: model.default_sam_checkpoint(name).name for name in model.SAM_TYPES}
    assert files["vit_h"] == "sam_vit_h_4b8939.pth" and files["vit_t"] == "mobile_sam.pt"
    assert files["sam2.1_hiera_l"] == "sam2.1_hiera_large.pt" and files["sam2_hiera_b+"] == "sam2_hiera_base_plus.pt"
    assert model.default_sam_checkpoint("sam2_tiny") == model.CHECKPOINT_DIR / "sam2_tiny_synthetic.pth"
    assert model.default_sam_checkpoint("tiny_distilled") == model.CHECKPOINT_DIR / "sam_tiny_distilled.pth"
    groups = {name: spec.decoder for name, spec in model.SAM_SPECS.items()}
    assert groups["vit_t"] == groups["vit_h"] and groups["tiny_distilled"] == groups["tiny"]
    others = [g for n, g in groups.items() if n not in ("vit_t", "tiny_distilled")]
    assert len(set(others)) == len(others)  # every other SAM, each SAM 2 checkpoint included, has its own
    assert {spec.family for spec in model.SAM_SPECS.values()} == {"sam", "sam2"}
    assert all(("sam2" in name) == (spec.family == "sam2") for name, spec in model.SAM_SPECS.items())


def test_mobile_sam_has_sam_vit_h_prompt_encoder_and_mask_decoder_shapes():
    """What the vit_t / vit_h decoder group rests on, checked on shapes (no weights: the meta device)."""
    vit_t = model.build_sam("vit_t")  # random, as the benchmarks use it; TinyViT cannot be built on meta
    with torch.device("meta"):
        vit_h = model.SAM_SPECS["vit_h"].build()
    def decoder(sam):
        return {k: v.shape for k, v in sam.state_dict().items() if not k.startswith("image_encoder.")}

    assert decoder(vit_t) == decoder(vit_h)
    assert model.sam_type_of_model(vit_t) == "vit_t" and model.sam_input_size(vit_t) == 1024
    assert model.sam_embedding_shape(vit_t) == model.sam_embedding_shape(vit_h) == (256, 64, 64)


def _identifying(kind: str) -> dict[str, torch.Tensor]:
    """Only the tensors that name a SAM's type (real files are 40 MB to 2.5 GB)."""
    if kind == "vit_b":
        state = {"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 1, 1)}
        state.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(12)})
    elif kind == "vit_t":
        state = {"image_encoder.patch_embed.seq.0.c.weight": torch.zeros(32, 3, 3, 3)}
    elif kind.startswith("sam2"):  # Hiera-L: embed_dim 144, 48 blocks; SAM 2.1 adds no_obj_embed_spatial
        state = {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(144, 3, 1, 1)}
        state.update({f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(48)})
        if kind.startswith("sam2.1"):
            state["no_obj_embed_spatial"] = torch.zeros(1, 256)
    return state


@pytest.mark.parametrize("kind", ["vit_b", "vit_t", "sam2_hiera_l", "sam2.1_hiera_l"])
def test_a_state_dict_names_its_sam(kind):
    assert model.sam_type_of_state_dict(_identifying(kind)) == kind


def test_a_built_sam_names_itself(sam2_tiny):
    assert model.sam_type_of_model(sam2_tiny) == "sam2_tiny" and model.sam_family(sam2_tiny) == "sam2"
    assert model.sam_input_size(sam2_tiny) == 256 and model.sam_embedding_shape(sam2_tiny) == (1024, 16, 16)
    distilled = model.build_sam("tiny_distilled")
    assert model.sam_type_of_model(distilled) == "tiny_distilled" and model.sam_embedding_shape(distilled) == (
        256, 16, 16)


# --- bad input: one line naming the file or flag ---------------------------------------------------

@pytest.mark.parametrize("requested, holds, words", [
    ("vit_h", "sam2.1_hiera_l", r"requested as vit_h but looks like sam2\.1_hiera_l \(--sam sam2\.1_hiera_l\)"),
    ("sam2_hiera_t", "vit_b", r"requested as sam2_hiera_t but looks like vit_b \(--sam vit_b\)"),
    ("vit_b", "vit_t", r"requested as vit_b but looks like vit_t \(--sam vit_t\)"),
])
def test_a_checkpoint_of_another_sam_is_refused_naming_both(tmp_path, requested, holds, words):
    path = tmp_path / "weights.pt"
    state = _identifying(holds)
    torch.save({"model": state} if holds.startswith("sam2") else state, path)  # as the official files hold them
    with pytest.raises(ValueError, match=rf"weights\.pt was {words}"):
        model.build_sam(requested, path)


def test_a_missing_sam_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sam2\.1_hiera_large\.pt not found: download https://dl\.fbaipublic"
                                                r"files\.com/segment_anything_2/092824/sam2\.1_hiera_large\.pt"):
        model.build_sam("sam2.1_hiera_l", tmp_path / "sam2.1_hiera_large.pt")
    args = argparse.Namespace(backbone="tiny", backbone_weights="random", dataset="synthetic", data_root=tmp_path)
    for sam, words in (("vit_t", r"mobile_sam\.pt: SAM vit_t checkpoint; download weights/mobile_sam\.pt from "
                                 r"https://github\.com/ChaoningZhang/MobileSAM"),
                       ("sam2_hiera_b+", r"sam2_hiera_base_plus\.pt: SAM sam2_hiera_b\+ checkpoint; download .*"
                                         r"072824/sam2_hiera_base_plus\.pt \(listed at https://github\.com/"
                                         r"facebookresearch/sam2#model-description\)")):
        with pytest.raises(FileNotFoundError, match=words):
            evaluate.check_prerequisites(argparse.Namespace(**vars(args), sam=sam,
                                                            sam_checkpoint=model.default_sam_checkpoint(sam)))


def test_a_missing_sam2_config_names_the_config_and_the_package():
    with pytest.raises(FileNotFoundError, match=r"SAM 2 config configs/sam2/gone\.yaml is not in the installed sam2 "
                                                r"package .*reinstall"):
        sam2_backend.build_sam2_model("configs/sam2/gone.yaml")


def test_the_sam2_loader_reads_the_official_wrapping_strictly(sam2_tiny, sam2_tiny_file):
    loaded, random = model.build_sam("sam2_tiny", sam2_tiny_file).state_dict(), sam2_tiny.state_dict()
    assert loaded.keys() == random.keys() and all(v.dtype == random[k].dtype for k, v in loaded.items())
    assert all(torch.equal(v, random[k].half().float() if v.is_floating_point() else random[k])
               for k, v in loaded.items())
    partial = sam2_tiny_file.with_name("partial.pt")
    state = torch.load(sam2_tiny_file, weights_only=True)["model"]
    del state["no_mem_embed"]
    torch.save({"model": state}, partial)
    with pytest.raises(ValueError, match=r"partial\.pt does not fit SAM sam2_tiny: 1 keys missing \(e\.g\. "
                                         r"no_mem_embed\); pass the official sam2_tiny_synthetic\.pth"):
        model.build_sam("sam2_tiny", partial)


def test_another_sam_is_allowed_only_with_the_same_decoder(tmp_path, caplog):
    state = {"config": asdict(model.VRPConfig(backbone="tiny", sam="tiny")), "args": {"backbone_weights": "random"},
             "model": model.build_vrp_sam(model.VRPConfig(backbone="tiny", sam="tiny"), seed=0).learnable_state_dict()}
    with pytest.raises(ValueError, match=r"^run\.pt was trained on SAM tiny, and SAM sam2_tiny has another prompt "
                                         r"encoder and mask decoder.*use --sam tiny or tiny_distilled"):
        model.build_from_checkpoint(state, sam="sam2_tiny", source="run.pt")
    assert model.sam_switch_problem("vit_h", "vit_t") is None and model.sam_switch_problem("vit_t", "vit_h") is None
    assert "vit_b" in model.sam_switch_problem("vit_b", "vit_h") and model.sam_switch_problem("sam2_hiera_l",
                                                                                              "sam2.1_hiera_l")
    distilled = tmp_path / "sam_tiny_distilled.pth"
    torch.save(model.build_sam("tiny_distilled").state_dict(), distilled)
    with caplog.at_level(logging.WARNING, logger="model"):
        vrp = model.build_from_checkpoint(state, sam="tiny_distilled", sam_checkpoint=distilled, source="run.pt")
    assert vrp.config.sam == "tiny_distilled" and model.sam_type_of_model(vrp.sam) == "tiny_distilled"
    assert [r.getMessage() for r in caplog.records] == [
        "run.pt was trained on SAM tiny; running it on SAM tiny_distilled, which has the same prompt encoder and "
        "mask decoder (tiny's)"]
    assert all(torch.equal(v, state["model"][k]) for k, v in vrp.learnable_state_dict().items())


# --- parity with the official predictors ---------------------------------------------------------

@pytest.mark.parametrize("config", ["configs/sam2.1/sam2.1_hiera_t.yaml", "configs/sam2/sam2_hiera_t.yaml"])
def test_sam2_decodes_a_batch_as_its_image_predictor(config):
    """Our packed features + batched decoder vs SAM2ImagePredictor.set_image / predict(box=...), per
    image; SAM 2.1's config and SAM 2's, shrunk as the tiny SAM 2."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    sam = sam2_backend.build_sam2_model(config, sam2_backend.TINY_SAM2[1], seed=1)
    size = sam2_backend.input_size(sam)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    boxes = torch.tensor([[20.0, 30.0, 200.0, 150.0], [0.0, 64.0, 255.0, 255.0]])
    with torch.no_grad():
        features = model.sam_image_embeddings(sam, normalised(images))
        ours = model.decode_prompts(sam, features, boxes=boxes)  # (2, 1, 64, 64)
    predictor = SAM2ImagePredictor(sam, disable_torch_jit=True)
    predictor._bb_feat_sizes = [(side, side) for _, side in sam2_backend.level_shapes(sam)]  # the tiny grid
    for b in range(2):
        predictor.set_image(images[b])
        _, _, low_res = predictor.predict(box=boxes[b].numpy(), multimask_output=False, return_logits=True)
        # the predictor clamps its low-res logits to ±32; the decoder's own output is ours
        torch.testing.assert_close(ours[b].clamp(-32, 32), torch.from_numpy(low_res), atol=2e-5, rtol=1e-5)
        embedding = predictor.get_image_embedding()
        torch.testing.assert_close(sam2_backend.unpack_levels(sam, features[b:b + 1])[-1], embedding)


def test_mobile_sam_decodes_a_batch_as_its_predictor():
    """MobileSAM's classes (TinyViT only runs at 1024²: shrunk in width and depth, ~0.3 s an image)
    through our embedding and batched decoder vs mobile_sam's SamPredictor.predict(box=...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's deprecation warnings, on import
        from mobile_sam import SamPredictor
        from mobile_sam.modeling import MaskDecoder, PromptEncoder, Sam, TinyViT, TwoWayTransformer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        sam = Sam(image_encoder=TinyViT(img_size=1024, num_classes=0, embed_dims=[4, 8, 8, 320], depths=[1, 1, 1, 1],
                                        num_heads=[1, 1, 1, 5], mlp_ratio=1.0, mbconv_expand_ratio=1.0),
                  prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                               input_image_size=(1024, 1024), mask_in_chans=16),
                  mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=256,
                                           transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                         num_heads=8))).eval()
    assert model.sam_type_of_model(sam) == "vit_t" and model.sam_family(sam) == "sam"
    images = np.random.default_rng(0).integers(0, 256, (2, 1024, 1024, 3), dtype=np.uint8)
    boxes = torch.tensor([[100.0, 200.0, 700.0, 650.0], [0.0, 512.0, 1023.0, 1023.0]])
    with torch.no_grad():
        embeddings = model.sam_image_embeddings(sam, normalised(images))
        ours = model.decode_prompts(sam, embeddings, boxes=boxes)  # (2, 1, 256, 256)
    predictor = SamPredictor(sam)
    for b in range(2):
        predictor.set_image(images[b])
        torch.testing.assert_close(embeddings[b:b + 1], predictor.features, atol=1e-4, rtol=1e-4)
        _, _, low_res = predictor.predict(box=boxes[b].numpy(), multimask_output=False, return_logits=True)
        torch.testing.assert_close(ours[b], torch.from_numpy(low_res), atol=1e-4, rtol=1e-4)


# --- the embedding cache ---------------------------------------------------------------------------

def test_sam2_features_are_cached_apart_and_bit_equal_warm_cold_or_uncached(tmp_path, sam2_tiny):
    images = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    cache = model.EmbeddingCache(tmp_path, sam2_tiny, 128)
    with torch.no_grad():
        uncached = model.embed_targets(sam2_tiny, images, ["a", "b"], None)
    cold = model.embed_targets(sam2_tiny, images, ["a", "b"], cache)
    warm = model.embed_targets(sam2_tiny, images, ["a", "b"], cache)
    assert uncached.shape == (2, 1024, 16, 16) and torch.equal(uncached, cold) and torch.equal(cold, warm)
    assert cache.directory.relative_to(tmp_path).parts[:2] == ("sam2_tiny", "128")
    assert len(list(cache.directory.iterdir())) == 2
    # SAM 1's folders are as before (the main job's cache stays valid): the tiny SAM's, random and shipped
    random_tiny = model.EmbeddingCache(tmp_path, model.build_sam("tiny"), 128)
    assert random_tiny.directory == tmp_path / "tiny/128/135b73d5a60e346e"
    shipped = model.build_sam("tiny", model.default_sam_checkpoint("tiny"))
    assert model.EmbeddingCache(tmp_path, shipped, 128).directory == tmp_path / "tiny/128/7686af23f2fe07be"
    with pytest.raises(ValueError, match="another SAM"):
        model.decode_masks(shipped, cold, torch.zeros(2, 50, 256))  # SAM 2 features never reach a SAM 1 decoder


# --- the loops never ask the family --------------------------------------------------------------

def test_train_evaluate_video_and_segment_run_on_sam2(tmp_path, sam2_tiny_file, capsys):
    out = tmp_path / "runs" / "sam2"
    common = ["--workers", "0", "--cache-dir", str(tmp_path / "cache")]
    train.main(["--dataset", "synthetic", "--sam", "sam2_tiny", "--sam-checkpoint", str(sam2_tiny_file),
                "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--val-episodes", "4",
                "--out", str(out), *common])
    config = json.loads((out / "config.json").read_text())
    assert config["sam"] == "sam2_tiny" and config["sam_checkpoint"] == str(sam2_tiny_file)
    result = evaluate.main(["--runs", str(tmp_path / "runs"), "--dataset", "synthetic", "--folds", "0",
                            "--episodes", "4", "--sam", "sam2_tiny", *common])
    assert "VRP-SAM on synthetic, on SAM sam2_tiny" in capsys.readouterr().out and 0 <= result["mask/1"][0]["miou"]
    gp_sam = evaluate.main(["--runs", str(tmp_path / "runs"), "--dataset", "synthetic", "--folds", "0", "--episodes",
                            "4", "--method", "gp-sam", "--gp-prompt", "box+point", *common])  # SAM 2's own prompts
    assert 0 <= gp_sam["mask/box+point/1"][0]["miou"] <= 100
    with pytest.raises(SystemExit, match=r"no run under .* --sam tiny; there are synthetic mask-trained tiny on SAM "
                                         r"sam2_tiny \(fold 0\)"):
        evaluate.main(["--runs", str(tmp_path / "runs"), "--dataset", "synthetic", "--folds", "0", "--sam", "tiny"])
    with pytest.raises(SystemExit, match=r"best\.pt was trained on SAM sam2_tiny, and SAM vit_h has another prompt"):
        evaluate.main(["--checkpoint", str(out / "best.pt"), "--dataset", "synthetic", "--folds", "0",
                       "--sam", "vit_h"])

    clip = video.main(["--dataset", "synthetic-video", "--checkpoint", str(out / "best.pt"), "--videos", "1",
                       "--frames", "3-3", "--out", str(tmp_path / "video"), *common[2:]])
    assert clip["sam"] == "sam2_tiny" and clip["target_frames"] >= 2

    predictor = VRPPredictor.from_checkpoint(out / "best.pt", device="cpu")
    scene = synthetic_scene(np.random.default_rng(0), classes=[17], num_distractors=1, size=128)
    predictor.set_references([(scene.image, {"mask": scene.label, "class_id": 17})])
    prediction = predictor.predict(scene.image)
    assert prediction.mask.shape == (128, 128) and model.sam_type_of_model(predictor.model.sam) == "sam2_tiny"
