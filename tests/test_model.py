"""Tests for model.py: the VRP encoder (§4.1–4.2), the frozen SAM, Eq. 6 and checkpoints.

Everything runs on CPU with the tiny backbone and tiny SAM (128² images, 16² SAM embedding).
"""

import math
import urllib.error
from dataclasses import replace

import pytest
import torch

import model

S = 128
TINY = model.VRPConfig(backbone="tiny", sam="tiny")


def tiny_model(seed: int = 0, config: model.VRPConfig = TINY) -> model.VRPSAM:
    return model.build_vrp_sam(config, seed=seed)


def disk(cy: int, cx: int, r: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r * r


def episode_batch(k: int = 1, batch: int = 2, seed: int = 0):
    """Targets and k references with one red disk each; labels are the disks' masks."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randint(30, S - 30, (batch, k + 1, 2), generator=g)
    images = 0.3 * torch.randn(batch, k + 1, 3, S, S, generator=g)
    masks = torch.zeros(batch, k + 1, S, S)
    for b in range(batch):
        for i in range(k + 1):
            masks[b, i] = disk(int(centres[b, i, 0]), int(centres[b, i, 1]), 18).float()
    images[:, :, 0] += 2.0 * masks
    return images[:, 0], images[:, 1:], masks[:, 1:], masks[:, 0].long()


@pytest.mark.parametrize("k", [1, 5])
@torch.no_grad()
def test_shapes_one_and_five_shot(k):
    vrp = tiny_model().eval()
    target, references, labels, _ = episode_batch(k=k)
    embeddings = model.sam_image_embeddings(vrp.sam, target)
    assert embeddings.shape == (2, 256, 16, 16)
    prompts = vrp.prompt_embeddings(target, references, labels)
    assert prompts.shape == (2, k * TINY.num_queries, 256)  # k×N prompts, concatenated (Table 7)
    logits = vrp(target, references, labels)
    assert logits.shape == (2, S, S)
    # Cached embeddings give the same logits as computing them inside forward.
    torch.testing.assert_close(vrp(target, references, labels, embeddings), logits)


def test_mismatched_image_and_annotation_sizes_name_both_shapes():
    vrp = tiny_model().eval()
    target, references, labels, _ = episode_batch(k=1)
    with pytest.raises(ValueError, match=r"reference_labels \(2, 1, 64, 64\)"):
        vrp(target, references, labels[..., :64, :64])
    with pytest.raises(ValueError, match=r"target_images \(2, 3, 64, 64\)"):
        vrp(target[..., :64, :64], references, labels)


def test_k_shot_prompts_are_the_one_shot_prompts_of_each_reference():
    vrp = tiny_model().eval()
    target, references, labels, _ = episode_batch(k=3)
    prompts = vrp.prompt_embeddings(target, references, labels)
    second = vrp.prompt_embeddings(target, references[:, 1:2], labels[:, 1:2])
    torch.testing.assert_close(prompts[:, 50:100], second, atol=1e-5, rtol=1e-4)


def test_only_the_vrp_encoder_learns():
    vrp = tiny_model().train()
    frozen = {n: p.detach().clone() for n, p in vrp.named_parameters() if not n.startswith("encoder.")}
    assert all(not p.requires_grad for n, p in vrp.named_parameters() if n in frozen)
    optimizer = torch.optim.AdamW(vrp.learnable_parameters(), lr=1e-2)
    target, references, labels, mask = episode_batch()
    loss = model.vrp_loss(vrp(target, references, labels), mask)
    loss.backward()
    for name, p in vrp.named_parameters():
        if name in frozen:
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    optimizer.step()
    for name, p in vrp.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), f"frozen {name} changed"


def test_frozen_batchnorm_and_sam_stay_in_eval_mode():
    vrp = tiny_model().train()
    assert vrp.training and vrp.encoder.training
    assert not vrp.backbone.training and not vrp.sam.training
    assert all(not m.training for m in vrp.backbone.modules())
    stats = {n: b.clone() for n, b in vrp.backbone.named_buffers()}
    target, references, labels, _ = episode_batch()
    vrp(target, references, labels)
    for name, buffer in vrp.backbone.named_buffers():
        assert torch.equal(buffer, stats[name]), f"BatchNorm buffer {name} moved in train mode"


def test_learnable_parameter_count_of_the_paper_configuration():
    # ResNet-50 mid-level features are layer2 ⊕ layer3 = 512 + 1024 channels; SAM prompts are 256-d.
    encoder = model.VRPEncoder(mid_channels=1536, embed_dim=256, num_queries=50, num_heads=4)
    count = sum(p.numel() for p in encoder.parameters())
    # projection 393,216 + merge 131,328 + 4 × (attention 263,168 + LayerNorm 512) + queries 12,800
    assert count == 1_592_064
    assert abs(count - 1.6e6) / 1.6e6 < 0.05  # Table 2: "1.6M"
    vrp = tiny_model()
    assert vrp.num_learnable_parameters() == sum(p.numel() for p in vrp.encoder.parameters())


@pytest.mark.parametrize(
    "name, channels, stride", [("resnet50", (1536, 2048), 8), ("vgg16", (768, 512), 16), ("tiny", (160, 128), 8)]
)
def test_backbone_blocks_channels_and_output_stride(name, channels, stride):
    backbone = model.build_backbone(name)
    assert (backbone.mid_channels, backbone.high_channels) == channels
    with torch.no_grad():
        mid, last = backbone.mid_features(torch.randn(1, 3, 64, 64))
        high = backbone.high_features(last)
    assert mid.shape == (1, channels[0], 64 // stride, 64 // stride)
    assert high.shape == (1, channels[1], 64 // stride, 64 // stride)
    torch.testing.assert_close(mid[:, -last.shape[1]:], last)  # mid = block 3 ⊕ block 4


def test_random_builds_are_identical_and_leave_the_callers_rng_alone():
    state = torch.get_rng_state()
    a, b = model.build_backbone("tiny"), model.build_backbone("tiny")
    sam_a, sam_b = model.build_sam("tiny"), model.build_sam("tiny")
    assert torch.equal(torch.get_rng_state(), state)
    for x, y in zip(list(a.state_dict().values()) + list(sam_a.state_dict().values()),
                    list(b.state_dict().values()) + list(sam_b.state_dict().values())):
        assert torch.equal(x, y)


def test_encoder_initialisation_follows_the_seed():
    fixed_a, fixed_b = tiny_model(seed=3), tiny_model(seed=3)
    torch.manual_seed(5)
    from_global = tiny_model(seed=None)
    torch.manual_seed(5)
    reset = tiny_model(seed=1)
    reset.reset_learnable_parameters()  # what evaluating an untrained model relies on
    pairs = [(fixed_a, fixed_b, True), (from_global, reset, True), (fixed_a, from_global, False)]
    for x, y, same in pairs:
        assert all(torch.equal(p, q) for p, q in zip(x.learnable_parameters(), y.learnable_parameters())) == same


def test_backbone_weights_file_loads_and_a_foreign_one_is_refused(tmp_path):
    trained = model.build_backbone("tiny")
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.1)
    torch.save(trained.state_dict(), tmp_path / "tiny.pth")
    loaded = model.build_backbone("tiny", weights=tmp_path / "tiny.pth")
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), loaded.state_dict().values()))
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match=r"resnet\.pth does not fit the tiny backbone"):
        model.build_backbone("tiny", weights=tmp_path / "resnet.pth")


def test_imagenet_weights_offline_error_names_the_file_and_flag(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(FileNotFoundError, match=r"resnet50-0676ba61\.pth.*--backbone-weights"):
        model.build_backbone("resnet50", weights="imagenet")


def test_area_downsampling_keeps_single_point_labels_that_nearest_drops():
    labels = torch.zeros(1, S, S)
    labels[0, 37, 91] = 1  # one simulated click, off the nearest-neighbour sampling grid
    assert model.downsample_label(labels, (16, 16), "nearest").sum() == 0  # authors' code: the click is lost
    area = model.downsample_label(labels, (16, 16), "area")
    assert area[0, 0, 37 // 8, 91 // 8] == pytest.approx(1 / 64) and area.sum() == pytest.approx(1 / 64)
    assert model.downsample_label(labels, (16, 16), "max")[0, 0, 37 // 8, 91 // 8] == 1
    full = torch.ones(1, S, S)
    for mode in model.LABEL_DOWNSAMPLING:  # dense masks are unchanged by the choice
        assert torch.equal(model.downsample_label(full, (16, 16), mode), torch.ones(1, 1, 16, 16))


def test_pseudo_mask_finds_the_annotated_reference_pixel():
    g = torch.Generator().manual_seed(0)
    features = torch.rand(1, 32, 8, 8, generator=g)
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 2, 5] = 1
    raw = model.pseudo_mask(features, features, mask)
    assert raw[0, 0, 2, 5] == pytest.approx(1.0, abs=1e-5)  # the same pixel: cosine 1
    assert raw.max() <= 1 + 1e-5 and raw.min() >= 0  # non-negative features: cosine in [0, 1]
    assert raw.view(-1).argmax() == 2 * 8 + 5
    normalised = model.pseudo_mask(features, features, mask, norm="minmax")
    assert normalised.min() == pytest.approx(0, abs=1e-5) and normalised.max() == pytest.approx(1, abs=1e-5)
    empty = model.pseudo_mask(features, features, torch.zeros(1, 1, 8, 8))
    assert torch.equal(empty, torch.zeros(1, 1, 8, 8))  # no annotation left: no NaN


def test_key_positional_encoding_is_detrs_normalised_sine():
    h, w = 5, 7
    pos = model.sine_position_encoding(h, w)  # 128 features per axis, temperature 10000
    assert pos.shape == (h * w, 256)
    row, col = 3, 2
    y, x = 2 * math.pi * (row + 1) / h, 2 * math.pi * (col + 1) / w
    expected = {0: math.sin(y), 1: math.cos(y), 2: math.sin(y / 10000 ** (2 / 128)),
                128: math.sin(x), 129: math.cos(x), 255: math.cos(x / 10000 ** (126 / 128))}
    for index, value in expected.items():
        assert pos[row * w + col, index].item() == pytest.approx(value, abs=1e-5)


def test_vrp_loss_matches_hand_computation_and_ignores_255():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 3.0]]])
    target = torch.tensor([[[1, 0], [255, 1]]])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # BCE over the 3 valid pixels: -log σ(0), -log(1 - σ(2)), -log σ(3)
    bce = (math.log(2) + math.log(1 + math.exp(2)) + math.log(1 + math.exp(-3))) / 3
    p = [sig(0.0), sig(2.0), sig(3.0)]
    dice = 1 - (2 * (p[0] + p[2]) + 1) / (sum(p) + 2 + 1)
    assert model.vrp_loss(logits, target).item() == pytest.approx(bce + dice, rel=1e-6)
    assert bce + dice == pytest.approx(1.22401, abs=1e-5)

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 16, 16, generator=g)
    target = (torch.rand(2, 16, 16, generator=g) > 0.5).long()
    target[:, :4] = 255
    changed = logits.clone()
    changed[:, :4] = 100 * torch.randn(2, 4, 16, generator=g)
    assert model.vrp_loss(changed, target) == model.vrp_loss(logits, target)
    as_background = torch.where(target == 255, 0, target)  # what the authors train with
    assert model.vrp_loss(changed, as_background) != model.vrp_loss(logits, as_background)


def test_batched_decode_equals_per_image_mask_decoder():
    sam = model.build_sam("tiny")
    g = torch.Generator().manual_seed(0)
    embeddings = torch.randn(3, 256, 16, 16, generator=g)
    prompts = torch.randn(3, 7, 256, generator=g)
    dense = torch.randn(3, 256, 16, 16, generator=g)
    no_mask = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, 16, 16)
    with torch.no_grad():
        for dense_input in (None, dense):
            batched = model.decode_masks(sam, embeddings, prompts, dense_input)
            assert batched.shape == (3, 1, 64, 64)
            for b in range(3):
                single, _ = sam.mask_decoder(
                    image_embeddings=embeddings[b:b + 1], image_pe=sam.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=prompts[b:b + 1],
                    dense_prompt_embeddings=no_mask if dense_input is None else dense[b:b + 1],
                    multimask_output=False)
                torch.testing.assert_close(batched[b:b + 1], single, atol=1e-5, rtol=1e-4)


def test_loss_halves_on_one_fixed_batch():
    vrp = tiny_model()
    # A random decoder's hypernetwork keeps logits within about ±0.3, so no prompt can lower the
    # BCE; scale its output to the logit range of a trained SAM (tens). Where the mask lands is
    # still decided by the prompts the VRP encoder learns to make.
    last = vrp.sam.mask_decoder.output_hypernetworks_mlps[0].layers[-1]
    with torch.no_grad():
        last.weight.mul_(30)
        last.bias.mul_(30)
    target, references, labels, mask = episode_batch(seed=1)
    embeddings = model.sam_image_embeddings(vrp.sam, target)
    optimizer = torch.optim.AdamW(vrp.learnable_parameters(), lr=3e-3)
    vrp.train()
    losses = []
    for _ in range(25):
        loss = model.vrp_loss(vrp(target, references, labels, embeddings), mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses  # halved within ~12 steps on this batch


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    target, references, labels, _ = episode_batch()
    trained = tiny_model(seed=0).eval()
    with torch.no_grad():
        trained.encoder.prompt_generator.queries.weight.add_(1.0)  # weights no fresh build has
        expected = trained(target, references, labels)
    path = tmp_path / "run" / "last.pt"
    model.save_checkpoint(path, trained, epoch=3, best_miou=41.5)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left behind

    checkpoint = model.load_checkpoint(path, config=TINY)
    assert checkpoint["epoch"] == 3 and checkpoint["best_miou"] == 41.5
    assert model.VRPConfig(**checkpoint["config"]) == TINY
    assert not any(k.startswith(("sam.", "backbone.")) for k in checkpoint["model"])  # learnable weights only
    fresh = tiny_model(seed=1).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(target, references, labels), expected)
        fresh.load_learnable_state_dict(checkpoint["model"])
        assert torch.equal(fresh(target, references, labels), expected)


def test_checkpoint_from_another_configuration_is_refused(tmp_path):
    path = tmp_path / "vrp.pt"
    model.save_checkpoint(path, tiny_model())
    requested = replace(TINY, label_downsample="nearest", num_queries=10)
    with pytest.raises(ValueError) as error:
        model.load_checkpoint(path, config=requested)
    assert "label_downsample: checkpoint area, requested nearest" in str(error.value)
    assert "num_queries: checkpoint 50, requested 10" in str(error.value)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        model.load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weight": torch.zeros(1)}, tmp_path / "sam.pth")
    with pytest.raises(ValueError, match="not a VRP-SAM checkpoint"):
        model.load_checkpoint(tmp_path / "sam.pth")


def test_build_sam_errors_name_the_file_and_the_fix(tmp_path):
    missing = tmp_path / "sam_vit_h_4b8939.pth"
    with pytest.raises(FileNotFoundError, match=r"sam_vit_h_4b8939\.pth.*dl\.fbaipublicfiles\.com"):
        model.build_sam("vit_h", missing)

    # Only the tensors that identify the encoder: a real ViT-B file is 360 MB.
    vit_b = {"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16, dtype=torch.float16)}
    vit_b.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(768, dtype=torch.float16) for i in range(12)})
    wrong = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(vit_b, wrong)
    with pytest.raises(ValueError, match=r"sam_vit_b_01ec64\.pth.*requested as vit_h.*looks like vit_b"):
        model.build_sam("vit_h", wrong)

    corrupt = tmp_path / "broken.pth"
    corrupt.write_bytes(b"PK\x03\x04 half a download")
    with pytest.raises(ValueError, match="broken.pth"):
        model.build_sam("tiny", corrupt)


def test_build_sam_accepts_fp16_checkpoints(tmp_path):
    reference = model.build_sam("tiny")
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.01)  # differs from a fresh random build
    path = tmp_path / "sam_tiny.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in reference.state_dict().items()}, path)
    sam = model.build_sam("tiny", path)
    assert not sam.training and not any(p.requires_grad for p in sam.parameters())
    for name, p in sam.named_parameters():
        assert p.dtype == torch.float32
        torch.testing.assert_close(p, dict(reference.named_parameters())[name].half().float())


def test_embedding_cache_misses_an_image_that_changed_under_the_same_id(tmp_path):
    """A dataset extracted again, or an edited synthetic renderer, keeps its ids: the pixels key the cache too."""
    sam = model.build_sam("tiny")
    cache = model.EmbeddingCache(tmp_path, sam, S)
    g = torch.Generator().manual_seed(1)
    before, after = torch.randn(1, 3, S, S, generator=g), torch.randn(1, 3, S, S, generator=g)
    first = cache.embed(sam, before, ["2007_000032"])
    calls = []
    sam.image_encoder.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    assert torch.equal(cache.embed(sam, before.clone(), ["2007_000032"]), first) and calls == []  # same pixels: a hit
    changed = cache.embed(sam, after, ["2007_000032"])
    assert calls == [1]  # recomputed
    with torch.no_grad():
        torch.testing.assert_close(changed, model.sam_image_embeddings(sam, after).half().float())
    assert not torch.equal(changed, first)
    assert cache.key("a", before[0]) != cache.key("a", after[0]) != cache.key("b", after[0])


def test_embedding_cache_stores_fp16_and_computes_only_missing_rows(tmp_path):
    sam = model.build_sam("tiny")
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, S, S, generator=g)
    with torch.no_grad():
        direct = model.sam_image_embeddings(sam, images[[0, 2]])
    computed_rows = []
    sam.image_encoder.register_forward_hook(lambda module, inputs, output: computed_rows.append(inputs[0].shape[0]))
    cache = model.EmbeddingCache(tmp_path, sam, S)
    ids = ["2007_000032", "COCO/train2014/000000000009.jpg", "2007_000032|flip"]

    stored = torch.randn(256, 16, 16, generator=g)
    keys = [cache.key(i, image) for i, image in zip(ids, images)]
    cache.put(keys[1], stored)
    assert cache.get(keys[1]).dtype == torch.float16
    torch.testing.assert_close(cache.get(keys[1]), stored.half())
    assert cache.get(keys[0]) is None

    embeddings = cache.embed(sam, images, ids)
    assert computed_rows == [2]  # rows 0 and 2 only
    assert embeddings.shape == (3, 256, 16, 16) and embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings[1], stored.half().float())
    torch.testing.assert_close(embeddings[[0, 2]], direct.half().float())
    assert torch.equal(cache.embed(sam, images, ids), embeddings)  # warm cache: same values, no SAM call
    assert computed_rows == [2]
    files = sorted(p.name for p in cache.directory.iterdir())
    assert len(files) == 3 and all(name.endswith(".pt") and "/" not in name for name in files)


class _StandInDINOv2(torch.nn.Module):
    """The attributes of facebookresearch/dinov2's ViT that DINOv2Backbone uses, at toy size:
    patch_size, embed_dim, prepare_tokens_with_masks (class + patch tokens), blocks, norm."""

    patch_size, embed_dim = 14, 24

    def __init__(self):
        super().__init__()
        self.patch_embed = torch.nn.Conv2d(3, self.embed_dim, self.patch_size, stride=self.patch_size)
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(self.embed_dim, self.embed_dim) for _ in range(12))
        self.norm = torch.nn.LayerNorm(self.embed_dim)

    def prepare_tokens_with_masks(self, x):
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(len(x), -1, -1), patches], dim=1)


def test_dinov2_features_come_at_stride_8_from_blocks_6_9_and_12():
    backbone = model.DINOv2Backbone(vit=_StandInDINOv2()).freeze()
    images = torch.randn(2, 3, S, S)
    mid, last = backbone.mid_features(images)
    assert mid.shape == (2, 2 * 24, S // 8, S // 8) and last.shape == (2, 24, S // 8, S // 8)
    torch.testing.assert_close(mid[:, 24:], last)  # mid = block 6 ⊕ block 9; last = block 9
    assert backbone.high_features(last).shape == (2, 24, S // 8, S // 8)
    assert not any(p.requires_grad for p in backbone.parameters())


def test_embed_targets_gives_the_same_numbers_with_or_without_the_cache(tmp_path):
    """The one way every script embeds targets: --no-cache must never move a number."""
    sam = model.build_sam("tiny")
    images = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(1))
    ids = ["a", "b"]
    with torch.no_grad():
        without = model.embed_targets(sam, images, ids, None)
    cache = model.EmbeddingCache(tmp_path, sam, S)
    cold = model.embed_targets(sam, images, ids, cache)
    warm = model.embed_targets(sam, images, ids, cache)
    assert without.dtype == torch.float32 and torch.equal(without, cold) and torch.equal(cold, warm)
