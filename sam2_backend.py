"""SAM 2 / SAM 2.1 as VRP-SAM's frozen SAM: what only this family needs, beside model.py's SAM 1 path.

VRP-SAM (§4) hands SAM's mask decoder 50 prompt tokens per reference. SAM 2 keeps SAM's prompt
encoder and a mask decoder of the same interface, but its decoder also reads two higher-resolution
levels of the image features, and its lowest level gets `no_mem_embed` added when there is no
memory (an image, or a video's first frame). This file feeds SAM 2 exactly as its own
`SAM2ImagePredictor` does, but batched over (image, prompts) pairs:

- `SAM2_MODELS`        `--sam` name -> (config inside the `sam2` package, official checkpoint file).
- `TINY_SAM2`          the synthetic benchmark's tiny SAM 2: the Hiera-T config shrunk by overrides
                       (256² input -> 16×16 image embedding, as the tiny SAM's).
- `build_sam2_model`   the frozen `SAM2Base` of a name, random (seeded) or from a checkpoint.
- `image_features`     images -> one (B, C, h, w) tensor that packs the three levels the decoder
                       reads (`pack_levels` / `unpack_levels`), so that caches, batching and the
                       training loop handle SAM 2's features as they handle SAM 1's embedding.
- `decode_masks`       SAM 2's mask decoder on B images, each with its own N prompt tokens.

The official code comes from the `sam2` package (requirements.txt); nothing of it is copied here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --sam name -> (hydra config name inside the sam2 package, official checkpoint file name)
SAM2_MODELS = {
    "sam2_hiera_t": ("configs/sam2/sam2_hiera_t.yaml", "sam2_hiera_tiny.pt"),
    "sam2_hiera_s": ("configs/sam2/sam2_hiera_s.yaml", "sam2_hiera_small.pt"),
    "sam2_hiera_b+": ("configs/sam2/sam2_hiera_b+.yaml", "sam2_hiera_base_plus.pt"),
    "sam2_hiera_l": ("configs/sam2/sam2_hiera_l.yaml", "sam2_hiera_large.pt"),
    "sam2.1_hiera_t": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt"),
    "sam2.1_hiera_s": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt"),
    "sam2.1_hiera_b+": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt"),
    "sam2.1_hiera_l": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt"),
}

# The synthetic benchmark's tiny SAM 2: SAM 2.1's Hiera-T config at 256² input with a 4-block,
# 32-wide Hiera and one memory-attention layer. The decoder (fixed by SAM2Base) is full size.
# Levels at 256²: 64² (32 ch), 32² (64 ch), 16² (256 ch, the image embedding).
TINY_SAM2_SIZE = 256
TINY_SAM2 = ("configs/sam2.1/sam2.1_hiera_t.yaml", (
    f"++model.image_size={TINY_SAM2_SIZE}",
    "++model.image_encoder.trunk.embed_dim=32",
    "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.trunk.window_spec=[8,4,8,4]",
    "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
    "++model.image_encoder.neck.backbone_channel_list=[256,128,64,32]",
    "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.dim_feedforward=512",
    f"++model.memory_attention.layer.self_attention.feat_sizes=[{TINY_SAM2_SIZE // 16},{TINY_SAM2_SIZE // 16}]",
    f"++model.memory_attention.layer.cross_attention.feat_sizes=[{TINY_SAM2_SIZE // 16},{TINY_SAM2_SIZE // 16}]",
    "++model.memory_encoder.fuser.num_layers=1",
))


def build_sam2_model(config: str, overrides: tuple[str, ...] = (), *, seed: int = 0) -> nn.Module:
    """SAM2Base from a config of the `sam2` package with hydra overrides, randomly initialised
    from `seed`, frozen and in eval mode. Loading weights is the caller's (model.build_sam)."""
    from sam2.build_sam import build_sam2  # hydra and the sam2 package load only when a SAM 2 is asked for

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = build_sam2(config, None, device="cpu", mode="eval", hydra_overrides_extra=list(overrides),
                         apply_postprocessing=False)
    sam.requires_grad_(False)
    return sam.eval()


def level_shapes(sam: nn.Module) -> list[tuple[int, int, int]]:
    """(channels, side) of the decoder's three inputs, finest first: the two high-resolution levels
    (after the decoder's conv_s0 / conv_s1) and the image embedding. At 1024²: (32, 256), (64, 128), (256, 64)."""
    side = sam.image_size // 16  # the lowest level is at stride 16 (SAM2Base.backbone_stride)
    decoder = sam.sam_mask_decoder
    return [(decoder.conv_s0.out_channels, 4 * side), (decoder.conv_s1.out_channels, 2 * side),
            (sam.sam_prompt_embed_dim, side)]


def pack_levels(levels: list[Tensor]) -> Tensor:
    """[(B, 32, 4h, 4w), (B, 64, 2h, 2w), (B, 256, h, w)] -> (B, 32·16 + 64·4 + 256, h, w): each level
    folded to the embedding's grid by pixel_unshuffle (lossless, undone by unpack_levels)."""
    side = levels[-1].shape[-1]
    return torch.cat([F.pixel_unshuffle(level, level.shape[-1] // side) for level in levels], dim=1)


def unpack_levels(sam: nn.Module, packed: Tensor) -> list[Tensor]:
    """Inverse of pack_levels for this SAM 2's level_shapes."""
    levels, start = [], 0
    for channels, side in level_shapes(sam):
        factor = side // packed.shape[-1]
        width = channels * factor * factor
        levels.append(F.pixel_shuffle(packed[:, start:start + width], factor))
        start += width
    return levels


def packed_channels(sam: nn.Module) -> int:
    """C of image_features' (B, C, h, w): 1024 for every official SAM 2 and the tiny one."""
    side = sam.image_size // 16
    return sum(channels * (level_side // side) ** 2 for channels, level_side in level_shapes(sam))


def image_features(sam: nn.Module, images: Tensor) -> Tensor:
    """SAM 2's decoder inputs for ImageNet-normalised images (B, 3, S, S) -> packed (B, C, h, w).

    As SAM2ImagePredictor.set_image: the image is resized to SAM 2's square input (no padding,
    unlike SAM 1; bilinear, align_corners=True as model.sam_image_embeddings), the two finer
    levels go through the decoder's conv_s0/conv_s1 (inside forward_image), and the lowest level
    gets no_mem_embed (SAM 2's `directly_add_no_mem_embed`: an image has no memory).
    """
    size = sam.image_size
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=True)
    backbone_out = sam.forward_image(images)
    _, features, _, sizes = sam._prepare_backbone_features(backbone_out)  # (hw, B, C) per level, finest first
    if sam.directly_add_no_mem_embed:
        features[-1] = features[-1] + sam.no_mem_embed
    b = images.shape[0]
    levels = [f.permute(1, 2, 0).reshape(b, -1, *hw) for f, hw in zip(features, sizes)]
    return pack_levels(levels)


def decode_masks(sam: nn.Module, packed: Tensor, sparse_prompt_embeddings: Tensor,
                 dense_prompt_embeddings: Tensor | None = None) -> Tensor:
    """SAM 2's mask decoder for B images, each with its own N prompt tokens; single-mask output.

    packed (B, C, h, w) from image_features, sparse (B, N, 256), dense (B, 256, h, w) or None for the
    no-mask embedding -> low-res logits (B, 1, 4h, 4w). `repeat_image=False` pairs image b with
    prompt set b, so any batch size decodes in one call; no object-score gating, as SAM 2's image predictor.
    """
    *high_res, embedding = unpack_levels(sam, packed)
    prompt_encoder = sam.sam_prompt_encoder
    b, _, h, w = embedding.shape
    if dense_prompt_embeddings is None:
        dense_prompt_embeddings = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, h, w)
    low_res, *_ = sam.sam_mask_decoder(
        image_embeddings=embedding, image_pe=prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse_prompt_embeddings.to(embedding.dtype),
        dense_prompt_embeddings=dense_prompt_embeddings, multimask_output=False, repeat_image=False,
        high_res_features=high_res,
    )
    return low_res
