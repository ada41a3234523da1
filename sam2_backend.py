"""SAM 2 / SAM 2.1 as VRP-SAM's frozen SAM: what only this family needs, beside model.py's SAM 1 path.

VRP-SAM (§4) hands SAM's mask decoder 50 prompt tokens per reference. SAM 2 keeps SAM's prompt
encoder and a mask decoder of the same interface, but its decoder also reads two higher-resolution
levels of the image features, and its lowest level gets `no_mem_embed` added when there is no
memory (an image, or a video's first frame). This file feeds SAM 2 exactly as its own
`SAM2ImagePredictor` does, but batched over (image, prompts) pairs:

- `SAM2_MODELS`        `--sam` name -> (config inside the `sam2` package, official checkpoint file).
- `TINY_SAM2`          the synthetic benchmark's tiny SAM 2 (`--sam sam2_tiny`): the Hiera-T config
                       shrunk by overrides (256² input -> 16×16 image embedding, as the tiny SAM's).
- `build_sam2_model`   the frozen `SAM2Base` of a config, randomly initialised (model.build_sam loads weights).
- `name_of_state_dict` which `--sam` name a state_dict (a file's or a model's) holds.
- `input_size`, `embedding_shape`, `feature_modules`   what model.py's family-blind helpers ask of a SAM 2.
- `image_features`     images -> one (B, C, h, w) tensor that packs the three levels the decoder
                       reads (`pack_levels` / `unpack_levels`), so that caches, batching and the
                       training loop handle SAM 2's features as they handle SAM 1's embedding.
- `decode_masks`       SAM 2's mask decoder on B images, each with its own N prompt tokens.
- `prompt_embeddings`  SAM 2's own point / box prompts, embedded as SAM2ImagePredictor embeds them.

The official code comes from the `sam2` package (requirements.txt); nothing of it is copied here.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass

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
TINY_SAM2_NAME = "sam2_tiny"

# What image_features does to an image before SAM 2 sees it. Part of the embedding cache's key
# (model.EmbeddingCache), as model.SAM_PREPROCESSING is SAM 1's: change it whenever this changes.
PREPROCESSING = ("sam2: imagenet-normalised; bilinear align_corners=True to image_size, no padding; "
                 "conv_s0/conv_s1 levels and no_mem_embed; packed by pixel_unshuffle")

# (Hiera embed_dim, number of blocks) -> size, to name the SAM 2 a state_dict holds; SAM 2.1's
# models (and files) also hold no_obj_embed_spatial, SAM 2's do not.
HIERA_SIZES = {(96, 12): "hiera_t", (96, 16): "hiera_s", (112, 24): "hiera_b+", (144, 48): "hiera_l"}
TINY_HIERA = (32, 5)  # TINY_SAM2's trunk: embed_dim 32, stages [1, 1, 2, 1]


def build_sam2_model(config: str, overrides: tuple[str, ...] = (), *, seed: int = 0) -> nn.Module:
    """SAM2Base from a config of the `sam2` package with hydra overrides, randomly initialised
    from `seed` (without touching the caller's random state), frozen and in eval mode. Loading
    weights is the caller's (model.build_sam). No postprocessing overrides: the single-mask output
    is always mask token 0, as SAM 1's (SAM 2's image predictor may swap in a multimask output)."""
    try:
        from hydra.errors import MissingConfigException
        from sam2.build_sam import build_sam2  # hydra and the sam2 package load only when a SAM 2 is asked for
    except ImportError as error:
        raise ImportError(f"SAM 2 needs the `sam2` package ({error}): pip install -r requirements.txt "
                          "(rf-sam-2, the official sam2 module)") from error
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        try:
            sam = build_sam2(config, None, device="cpu", mode="eval", hydra_overrides_extra=list(overrides),
                             apply_postprocessing=False)
        except MissingConfigException as error:
            import sam2

            raise FileNotFoundError(f"SAM 2 config {config} is not in the installed sam2 package "
                                    f"({next(iter(sam2.__path__))}): reinstall it with pip install -r requirements.txt "
                                    "(rf-sam-2 ships the SAM 2 and SAM 2.1 configs)") from error
    sam.requires_grad_(False)
    return sam.eval()


def name_of_state_dict(state: dict[str, Tensor]) -> str | None:
    """The `--sam` name (SAM2_MODELS' keys, or TINY_SAM2_NAME) of the SAM 2 whose weights `state`
    holds, from its Hiera trunk's width and depth; None when it is no SAM 2 of those."""
    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        return None
    blocks = {int(m.group(1)) for key in state if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", key))}
    trunk, version = (patch.shape[0], len(blocks)), "sam2.1" if "no_obj_embed_spatial" in state else "sam2"
    if trunk == TINY_HIERA and version == "sam2.1":
        return TINY_SAM2_NAME
    return f"{version}_{HIERA_SIZES[trunk]}" if trunk in HIERA_SIZES else None


def input_size(sam: nn.Module) -> int:
    """The side of SAM 2's square input (1024; 256 for the tiny one)."""
    return sam.image_size


def level_shapes(sam: nn.Module) -> list[tuple[int, int]]:
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


def embedding_shape(sam: nn.Module) -> tuple[int, int, int]:
    """(C, h, w) of one image's packed features (image_features): (1024, 64, 64) at 1024²."""
    side = sam.image_size // 16
    return packed_channels(sam), side, side


def feature_modules(sam: nn.Module) -> nn.Module:
    """Everything image_features reads (the image encoder, the decoder's conv_s0 / conv_s1 and
    no_mem_embed), in one module whose weights key the embedding cache (model.module_fingerprint)."""
    modules = nn.ModuleDict({"image_encoder": sam.image_encoder, "conv_s0": sam.sam_mask_decoder.conv_s0,
                             "conv_s1": sam.sam_mask_decoder.conv_s1})
    if sam.directly_add_no_mem_embed:
        modules["no_mem"] = nn.ParameterDict({"embed": sam.no_mem_embed})
    return modules


def prompt_embeddings(sam: nn.Module, *, points: Tensor | None = None, labels: Tensor | None = None,
                      boxes: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """SAM 2's own geometric prompts -> sparse (B, n, 256) and dense (B, 256, h, w) embeddings, made
    as SAM2ImagePredictor makes them: a box (B, 4) becomes two corner points labelled 2 and 3, put
    before the points (B, N, 2) with `labels` (B, N), and the prompt encoder pads the sequence with
    one not-a-point (SAM 1 embeds a box as two tokens without it). Coordinates in SAM 2's input frame."""
    if boxes is not None:
        corners = boxes.reshape(-1, 2, 2)
        corner_labels = torch.tensor([2, 3], dtype=torch.int64, device=boxes.device).expand(len(corners), 2)
        if points is None:
            points, labels = corners, corner_labels
        else:
            points = torch.cat([corners, points.to(corners.dtype)], dim=1)
            labels = torch.cat([corner_labels, labels.to(torch.int64)], dim=1)
    return sam.sam_prompt_encoder(points=None if points is None else (points, labels), boxes=None, masks=None)


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
    if tuple(packed.shape[1:]) != embedding_shape(sam):
        raise ValueError(f"image features are {tuple(packed.shape[1:])} but this SAM 2 expects {embedding_shape(sam)}: "
                         "were they computed (or cached) with another SAM?")
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


# =============================================================================================
# Video memory (issue #30): SAM 2's memory of objects across frames, for video.py --memory.
#
# SAM2VideoPredictor (init_state, add_new_mask on frame 0, propagate_in_video) follows each
# object with SAM2Base.track_step: frame 0 is a conditioning frame (its mask given); every later
# frame reads, through memory attention, the memories (memory encoder: frame features + predicted
# mask) of the conditioning frame and of the num_maskmem - 1 frames before it, and the object
# pointers (a vector per frame from the decoder's output token) of up to max_obj_ptrs_in_encoder - 1
# frames before it. It keeps every frame's outputs and every frame's pixels. MemoryTracker takes the
# frames one at a time, runs the same SAM2Base steps and drops what no later frame reads: the spatial
# memory of frames that left the window (their pointer is kept while a later frame may read it), then
# the pointer too. A video of any length then holds at most num_maskmem memories (1 conditioning
# + num_maskmem - 1) and max_obj_ptrs_in_encoder - 1 pointers per object, and its masks equal
# SAM2VideoPredictor's (tests/test_video_memory.py).
#
# SAM2Base's own underscored methods (_prepare_backbone_features, _encode_new_memory,
# _prepare_memory_conditioned_features, _forward_sam_heads) are called here because SAM2VideoPredictor
# composes track_step from exactly them; calling them keeps SAM 2's code, not a copy of it.
# =============================================================================================


@dataclass
class FrameFeatures:
    """One frame's backbone output in track_step's layout, shared by the B objects followed.

    vision_feats, vision_pos: one (h·w, B, C) tensor per level, finest first; sizes: (h, w) per level.
    """

    vision_feats: list[Tensor]
    vision_pos: list[Tensor]
    sizes: list[tuple[int, int]]


def frame_features(sam: nn.Module, image: Tensor, num_objects: int) -> FrameFeatures:
    """An ImageNet-normalised frame (1, 3, H, W) -> its FrameFeatures for `num_objects` objects.

    The backbone runs once and its output is expanded to the objects (a view, not a copy), as in
    SAM2VideoPredictor._get_image_feature. A frame not at SAM 2's square input size is resized as
    image_features resizes (bilinear, align_corners=True), so VRP's decoder and the memory see the
    same pixels; SAM2VideoPredictor resizes with PIL instead, so for equal masks pass its pixels.
    """
    size = sam.image_size
    if image.shape[-2:] != (size, size):
        image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=True)
    backbone_out = sam.forward_image(image)
    expanded = {key: [x.expand(num_objects, -1, -1, -1) for x in backbone_out[key]]
                for key in ("backbone_fpn", "vision_pos_enc")}
    _, feats, pos, sizes = sam._prepare_backbone_features(expanded)
    return FrameFeatures(feats, pos, sizes)


@contextmanager
def sparse_prompt_tokens(sam: nn.Module, tokens: Tensor):
    """Within the block, SAM 2's prompt encoder returns `tokens` (B, N, 256) as its sparse prompt
    embeddings (its dense mask embedding is kept), so that SAM2Base._forward_sam_heads decodes VRP's
    prompt tokens with all of SAM 2's own handling of its outputs (object-score gating, object
    pointer, high-res masks). A forward hook, removed on exit: not for one model shared by threads."""
    def replace(module: nn.Module, inputs: tuple, output: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return tokens.to(output[0].dtype), output[1]

    handle = sam.sam_prompt_encoder.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


class MemoryTracker:
    """B objects followed through one video with SAM 2's memory, one frame at a time:

        tracker = MemoryTracker(sam, num_frames=T)
        logits = tracker.start(frame_features(sam, frame0, B), masks)   # frame 0: a mask per object
        logits = tracker.step(frame_features(sam, frame_t, B))          # frames 1, 2, ... in order

    start is SAM2VideoPredictor.add_new_mask (plus the memory encoding that propagate_in_video's
    preflight does); step is one frame of propagate_in_video; both return low-res logits
    (B, 1, S/4, S/4), S = sam.image_size. The objects run as one batch (SAM2VideoPredictor runs them
    one by one: the same masks up to float rounding, since nothing in SAM 2's tracking mixes objects
    unless non_overlap_masks_for_mem_enc, which the official configs leave off).

    num_frames: the video's length, which SAM 2 reads (it caps the pointers at min(num_frames,
    max_obj_ptrs_in_encoder)); any value >= max_obj_ptrs_in_encoder gives the same masks, so a
    stream of unknown length may pass that.
    """

    def __init__(self, sam: nn.Module, *, num_frames: int) -> None:
        if sam.training:
            raise ValueError("MemoryTracker needs SAM 2 in eval mode (its memory window and strides are the eval ones)")
        self.sam = sam
        self.num_frames = int(num_frames)
        self.frame_index = -1  # the last frame seen
        # track_step's output_dict: the conditioning frame and the non-conditioning frames still read
        self.outputs: dict[str, dict[int, dict]] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        self.memory_pos_enc: list[Tensor] | None = None  # the memory's position encoding: the same for every frame

    @property
    def kept_memories(self) -> int:
        """Frames whose spatial memory is held (the conditioning frame included)."""
        return sum("maskmem_features" in out for outputs in self.outputs.values() for out in outputs.values())

    @property
    def kept_pointers(self) -> int:
        """Non-conditioning frames whose object pointer is held (with or without their memory)."""
        return len(self.outputs["non_cond_frame_outputs"])

    def _store(self, out: dict, memory: Tensor, pos_enc: list[Tensor]) -> dict:
        """The compact output kept for later frames: the memory in bfloat16 as SAM2VideoPredictor
        stores it (half the bytes; memory attention reads it so, and equal masks need equal inputs)."""
        if self.memory_pos_enc is None:
            self.memory_pos_enc = pos_enc
        return {"maskmem_features": memory.to(torch.bfloat16), "maskmem_pos_enc": self.memory_pos_enc,
                "obj_ptr": out["obj_ptr"]}

    @torch.no_grad()
    def start(self, features: FrameFeatures, masks: Tensor) -> Tensor:
        """Frame 0 as the conditioning frame, each object given by its mask: masks (B, H, W) bool,
        any size (resized to S with antialiased bilinear, then >= 0.5, as add_new_mask does).
        With the official configs (use_mask_input_as_output_without_sam) the output is the mask itself."""
        if self.frame_index != -1:
            raise RuntimeError("start() is for frame 0; this tracker has already seen a video")
        sam, size = self.sam, self.sam.image_size
        mask_inputs = masks[:, None].float()
        if mask_inputs.shape[-2:] != (size, size):
            mask_inputs = F.interpolate(mask_inputs, size=(size, size), mode="bilinear", align_corners=False,
                                        antialias=True)
            mask_inputs = (mask_inputs >= 0.5).float()
        out = sam.track_step(frame_idx=0, is_init_cond_frame=True, current_vision_feats=features.vision_feats,
                             current_vision_pos_embeds=features.vision_pos, feat_sizes=features.sizes,
                             point_inputs=None, mask_inputs=mask_inputs, output_dict=self.outputs,
                             num_frames=self.num_frames, run_mem_encoder=False)
        # The conditioning frame's memory is encoded from its low-res mask brought back to S, as
        # SAM2VideoPredictor.propagate_in_video_preflight does for a frame given by add_new_mask.
        high_res = F.interpolate(out["pred_masks"], size=(size, size), mode="bilinear", align_corners=False)
        memory, pos_enc = sam._encode_new_memory(features.vision_feats, features.sizes, high_res,
                                                 out["object_score_logits"], is_mask_from_pts=True)
        self.outputs["cond_frame_outputs"][0] = self._store(out, memory, pos_enc)
        self.frame_index = 0
        return out["pred_masks"]

    @torch.no_grad()
    def step(self, features: FrameFeatures, prompt_tokens: Tensor | None = None) -> Tensor:
        """The next frame, read through the memory of the frames before it.

        prompt_tokens (B, N, 256) or None. None: SAM 2's own tracking step (track_step: no prompt,
        multimask output where the config asks for it, the most confident mask). Given (VRP's prompt
        tokens): they are the decoder's sparse prompt on the memory-conditioned features, with one
        mask output (mask token 0, as VRP was trained to steer), so the class prompt and the instance
        memory decide the mask together; its pointer and memory are made from that output as track_step does.
        """
        if self.frame_index < 0:
            raise RuntimeError("call start() with frame 0 first")
        sam, t = self.sam, self.frame_index + 1
        feats, pos, sizes = features.vision_feats, features.vision_pos, features.sizes
        if prompt_tokens is None:
            out = sam.track_step(frame_idx=t, is_init_cond_frame=False, current_vision_feats=feats,
                                 current_vision_pos_embeds=pos, feat_sizes=sizes, point_inputs=None, mask_inputs=None,
                                 output_dict=self.outputs, num_frames=self.num_frames, run_mem_encoder=True)
            memory, pos_enc = out["maskmem_features"], out["maskmem_pos_enc"]
        else:
            pix_feat = sam._prepare_memory_conditioned_features(
                frame_idx=t, is_init_cond_frame=False, current_vision_feats=feats[-1:],
                current_vision_pos_embeds=pos[-1:], feat_sizes=sizes[-1:], output_dict=self.outputs,
                num_frames=self.num_frames)
            b = feats[-1].shape[1]
            high_res = [x.permute(1, 2, 0).reshape(b, -1, *s) for x, s in zip(feats[:-1], sizes[:-1])] or None
            with sparse_prompt_tokens(sam, prompt_tokens):
                *_, low_res, high_res_masks, obj_ptr, scores = sam._forward_sam_heads(
                    backbone_features=pix_feat, high_res_features=high_res, multimask_output=False)
            out = {"pred_masks": low_res, "obj_ptr": obj_ptr}
            memory, pos_enc = sam._encode_new_memory(feats, sizes, high_res_masks, scores, is_mask_from_pts=False)
        self.outputs["non_cond_frame_outputs"][t] = self._store(out, memory, pos_enc)
        self.frame_index = t
        self._forget(next_frame=t + 1)
        return out["pred_masks"]

    def memory_frames(self, frame: int) -> set[int]:
        """The earlier non-conditioning frames whose memory SAM 2 reads for `frame` (eval mode):
        the frame before it, and num_maskmem - 2 more among every r-th frame (r =
        memory_temporal_stride_for_eval, 1 in the official configs: the frames just before)."""
        sam, r = self.sam, self.sam.memory_temporal_stride_for_eval
        nearest = ((frame - 2) // r) * r
        return {frame - 1} | {nearest - k * r for k in range(sam.num_maskmem - 2)}

    def _forget(self, next_frame: int) -> None:
        """Drop what no frame from `next_frame` on reads. The frames read only move forward (the
        r-th frames and the pointers' window alike), so a frame dropped is never needed again."""
        sam, kept = self.sam, self.outputs["non_cond_frame_outputs"]
        spatial = self.memory_frames(next_frame)
        pointers = min(self.num_frames, sam.max_obj_ptrs_in_encoder) - 1 if sam.use_obj_ptrs_in_encoder else 0
        for frame in list(kept):
            if frame in spatial:
                continue
            if frame >= next_frame - pointers:
                kept[frame] = {"obj_ptr": kept[frame]["obj_ptr"]}  # its memory is no longer read, its pointer is
            else:
                del kept[frame]
