"""VRP-SAM model: the Visual Reference Prompt encoder on top of a frozen SAM (paper §4, Fig. 3).

Reading order follows the paper:

- `VRPConfig`                 every choice that changes the learnable weights' shapes or meaning.
- `build_backbone`, `Backbone` the frozen encoder of §4.1 (ResNet-50/101, the authors' deep-stem
                               ResNet-50/101, VGG-16-BN, DINOv2, tiny):
                               mid-level features = 3rd ⊕ 4th block, high-level = 5th block.
- `pseudo_mask`               Appendix A: the target's pseudo mask from high-level cosine similarity.
- `FeatureAugmenter`          §4.1, Eqs. 1–3: shared projection, prototype by masked average
                               pooling (Eq. 1), reference / target augmentation (Eqs. 2–3).
- `PromptGenerator`           §4.2, Eqs. 4–5: learnable queries attend to the augmented reference,
                               then to the augmented target; the result is SAM's sparse prompt.
- `VRPEncoder`                FeatureAugmenter + PromptGenerator: everything that is trained
                               (1,592,064 parameters for ResNet-50, Table 2's "1.6M").
- `SAM_SPECS`, `build_sam`, `sam_image_embeddings`, `decode_masks`
                               the frozen SAM of §3.1 / §4: one registry of every SAM `--sam` names
                               (SAM ViT-H/L/B, MobileSAM, SAM 2 / 2.1, the tiny synthetic ones), each
                               the unmodified official package; image features and decoding batched
                               over (image, prompts) pairs for any of them (SAM 2's own path:
                               sam2_backend.py); `decode_prompts`: SAM's own point / box prompts.
                               `sam_input_size`, `sam_embedding_shape`: what the rest of the code asks
                               of a SAM, whatever its family; `check_sam_switch`: which SAMs share a
                               decoder, so that an encoder trained on one prompts another.
- `VRPSAM`, `build_vrp_sam`   the whole model; k-shot concatenates the k×N prompts (Table 7).
                               `encode_references` / `target_prompt_embeddings` split the prompts
                               into the reference's half (once per reference set, `ReferenceFeatures`)
                               and the target's (segment.py).
- `vrp_loss`                  Eq. 6: BCE + Dice (or either alone, Table 5's ablation).
- `save_checkpoint`, `load_checkpoint`, `build_from_checkpoint`, `EmbeddingCache`   plain-dict
                               checkpoints, the model a checkpoint describes (its frozen files chosen
                               by `run_sam_checkpoint` / `run_backbone_weights`, found again when a
                               run folder moved), and the on-disk cache of frozen SAM image embeddings.

Choices that differ from the paper or the authors' code (docs/differences.md lists them all):
label downsampling to feature resolution ("area", not the authors' "nearest" that drops sparse
labels), the pseudo mask left unnormalised (authors' code, not the paper's min-max), 255 pixels
ignored by the loss, torchvision's ResNet stem by default (the authors' deep stem is
`resnet50_deepstem` with their resnet50_v2.pth, loaded strictly), and our own
definition of Table 6's FP / BP / half query initialisations (PromptGenerator.initial_queries).
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import math
import os
import pickle
import re
import urllib.error
import warnings
import weakref
import zipfile
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
import torchvision
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

import cli
import sam2_backend
from prompts import IGNORE

log = logging.getLogger(__name__)

BACKBONES = ("resnet50", "resnet101", "vgg16", "dinov2_vitb14", "tiny", "resnet50_deepstem", "resnet101_deepstem")
# The authors' backbone: PSPNet's deep-stem ResNet, ImageNet-pretrained by PSPNet's authors and
# distributed as initmodel/resnet{50,101}_v2.pth with hszhao/semseg (PFENet and VRP-SAM load it).
DEEP_STEM_FILES = {"resnet50_deepstem": "resnet50_v2.pth", "resnet101_deepstem": "resnet101_v2.pth"}
SAM_CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
LABEL_DOWNSAMPLING = ("area", "max", "nearest")
PSEUDO_MASK_NORMS = ("none", "minmax")
# Table 6: how the N queries start. "random" = learnable embeddings only (the default, as in the
# authors' code); the others add a prototype of the reference to them (see PromptGenerator.initial_queries).
QUERY_INITS = ("random", "fp", "bp", "half")
LOSSES = ("bce+dice", "bce", "dice")  # Eq. 6 and Table 5's ablation of its two terms
TINY_BACKBONE_REMAKE = (
    "remake it with `python pretrain_tiny_backbone.py` (about 5 min on 2 CPU cores, see docs/synthetic.md)"
)
PROMPT_DIM = 256  # SAM's prompt embedding width: the VRP must speak it (§4.2)


@dataclass(frozen=True)
class VRPConfig:
    """Everything that changes the learnable weights' shapes or meaning; stored in checkpoints.

    backbone: one of BACKBONES (paper: resnet50; vgg16 and dinov2_vitb14 in Tables 2 / 5).
    sam: one of SAM_TYPES, the keys of SAM_SPECS (paper: vit_h).
    num_queries: N learnable queries = prompt tokens per reference (paper: 50).
    num_heads: attention heads in the prompt generator (authors' code: 4).
    label_downsample: how the S×S reference annotation is shrunk to the feature grid:
        "area" (ours: average pooling, a soft mask that keeps every labelled pixel; docs/differences.md),
        "max" (any labelled pixel marks its cell), "nearest" (authors' code: drops sparse labels).
    pseudo_mask_norm: "none" (authors' code; post-ReLU cosine is already in [0, 1]) or "minmax"
        (the paper's Appendix A wording: per-image min-max to [0, 1]).
    mask_scale: the annotation / pseudo-mask channel is multiplied by this before the merge
        convolution (authors' code: 10).
    dropout: Dropout2d probability after the shared projection (authors' code: 0.5).
    query_init: Table 6, one of QUERY_INITS: "random" (learnable queries alone, the authors' code);
        "fp" / "bp" add the reference's foreground / background prototype to every learnable
        query, "half" to the first / second half (our definition; the paper gives none).
    """

    backbone: str = "resnet50"
    sam: str = "vit_h"
    num_queries: int = 50
    num_heads: int = 4
    label_downsample: str = "area"
    pseudo_mask_norm: str = "none"
    mask_scale: float = 10.0
    dropout: float = 0.5
    query_init: str = "random"

    def __post_init__(self) -> None:
        choices = {
            "backbone": BACKBONES, "sam": SAM_TYPES, "label_downsample": LABEL_DOWNSAMPLING,
            "pseudo_mask_norm": PSEUDO_MASK_NORMS, "query_init": QUERY_INITS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"VRPConfig.{name}={getattr(self, name)!r} is not one of {allowed} (--{name.replace('_', '-')})"
                )
        if self.num_queries < 1:
            raise ValueError(f"VRPConfig.num_queries={self.num_queries} must be >= 1 (--num-queries)")
        if self.num_heads < 1 or PROMPT_DIM % self.num_heads:
            raise ValueError(f"VRPConfig.num_heads={self.num_heads} must divide {PROMPT_DIM} (--num-heads)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"VRPConfig.dropout={self.dropout} must be in [0, 1)")


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Build modules from a fixed CPU seed without changing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def autocast(device: torch.device):
    """bf16 autocast on CUDA (fp16 where bf16 is unsupported); plain fp32 on the CPU. Every script
    runs the model under it."""
    if device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


# How the files torch.save writes begin: a zip archive (torch >= 1.6), or the older format whose
# first pickle is torch's magic number 0x1950a86a20f9469cfc6c (protocol 2, LONG1 of 10 bytes).
TORCH_ZIP_MAGIC = b"PK\x03\x04"
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
# Files a user may pass by mistake, by their first bytes, to say what they are in place of torch's error.
OTHER_FILE_KINDS = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
                    b"\x93NUMPY": "a NumPy array file", b"\x1f\x8b": "a gzip archive"}


def _load_file(path: Path, what: str, instead: str, fix: str) -> object:
    """torch.load(path) on the CPU with weights_only=True: tensors and plain containers only, so
    nothing in the file can run code. Any failure is one ValueError line that says what the file
    is instead (a folder, an empty or cut-short file, a text file, an image, a pickle of other
    objects) and what to do, never torch's own advice to load it again with weights_only=False.

    what: the file that was asked for ("a VRP-SAM checkpoint written by train.py");
    instead: what to pass in its place, for a file of another kind ("pass a run's best.pt ...");
    fix: how to get a good copy of a damaged one (empty, truncated).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not {what}: {instead}")
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as error:
        raise OSError(f"{path} could not be read ({error.strerror or error}): check the file's permissions") from None
    if head.startswith((TORCH_ZIP_MAGIC, TORCH_LEGACY_MAGIC)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch's text advises unpickling the file unrestricted: never shown
            problem = _refused_torch_file(path, error)
    else:  # not handed to torch at all: its unpickler would only fail, after warnings of its own
        problem = _file_kind(head)
    if problem is None:  # the right kind of file, cut short or corrupt
        damage = "it is cut short or damaged" if head else "it is empty"
        raise ValueError(f"{path} could not be read as {what}: {damage}; {fix}")
    raise ValueError(f"{path} is {problem}, not {what}: {instead}")


def _refused_torch_file(path: Path, error: Exception) -> str | None:
    """What a file that begins like torch.save's but did not load holds, or None when it is
    damaged (cut short, a bad opcode)."""
    if isinstance(error, pickle.UnpicklingError) and "Unsupported operand" not in str(error):
        found = re.search(r"nsupported (?:global: )?GLOBAL ([\w.]+)", str(error))  # read whole: more than tensors
        objects = f" ({found.group(1)})" if found else ""
        return (f"a PyTorch file holding other objects than tensors{objects}, which are not loaded because "
                "unpickling them could run any code")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("/data.pkl") for name in archive.namelist()):
                return "a zip archive of other files than torch.save writes"
    return None


def _file_kind(head: bytes) -> str | None:
    """What a file that torch.save did not write is ("a text file", ...), from its first bytes;
    None for an empty one."""
    if not head:
        return None
    for magic, kind in OTHER_FILE_KINDS.items():
        if head.startswith(magic):
            return kind
    if head.startswith(TORCH_ZIP_MAGIC[:2]):
        return "a zip archive of other files than torch.save writes"
    if len(head) > 10 and head[8:10] == b'{"':  # an 8-byte header length, then the JSON header
        return "a safetensors file (read it with safetensors.torch.load_file and write it with torch.save)"
    if head[0] == 0x80 and 2 <= head[1] <= 5:  # a pickle's PROTO opcode
        return "a plain Python pickle (not written by torch.save)"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head)  # a multi-byte character may be cut at 4096
        if b"\0" not in head:
            return "a text file"
    except UnicodeDecodeError:
        pass
    return "a file of unknown kind (not written by torch.save)"


# ----------------------------------------------------------------------------------------------
# Frozen backbone (§4.1)


class Backbone(nn.Module):
    """A frozen image encoder split the way §4.1 uses it.

    `mid_features` gives the concatenation of the 3rd and 4th blocks (the input of the feature
    augmenter) and the 4th block alone (`last`); `high_features` runs the 5th block on `last`,
    which for the reference is first multiplied by its annotation (authors' code). Parameters never
    need gradients and BatchNorm always uses its running statistics: `train()` keeps eval mode.
    """

    name: str
    mid_channels: int
    high_channels: int

    def freeze(self) -> "Backbone":
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "Backbone":
        # Frozen BatchNorm: the paper trains only the VRP encoder, whatever mode the caller sets.
        return super().train(False)

    def mid_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def high_features(self, last: Tensor) -> Tensor:
        raise NotImplementedError


class CNNBackbone(Backbone):
    """Five sequential blocks (stem = block 1); mid = block3 ⊕ block4, high = block5.

    images (B, 3, S, S) -> mid (B, C3 + C4, h, w), last (B, C4, h, w); high (B, C5, h, w), with
    h = S/8 for the dilated ResNets and tiny, S/16 for VGG-16 (block 3 is resized to block 4's
    grid, as the authors do).
    """

    def __init__(self, *, name: str, blocks: Sequence[nn.Module], block3_channels: int,
                 block4_channels: int, block5_channels: int) -> None:
        super().__init__()
        if len(blocks) != 5:
            raise ValueError(f"{name}: expected 5 blocks, got {len(blocks)}")
        self.name = name
        self.blocks = nn.ModuleList(blocks)
        self.mid_channels = block3_channels + block4_channels
        self.high_channels = block5_channels

    def mid_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = self.blocks[1](self.blocks[0](images))
        block3 = self.blocks[2](x)
        block4 = self.blocks[3](block3)
        if block3.shape[-2:] != block4.shape[-2:]:  # VGG: block 3 is at S/8, block 4 at S/16
            block3 = F.interpolate(block3, size=block4.shape[-2:], mode="bilinear", align_corners=True)
        return torch.cat([block3, block4], dim=1), block4

    def high_features(self, last: Tensor) -> Tensor:
        return self.blocks[4](last)


class DINOv2Backbone(Backbone):
    """DINOv2 ViT-B/14 split into thirds of its 12 blocks (our choice; the paper does not say).

    The image is resized to (S/8)·14 pixels so the patch grid is S/8, like the dilated ResNets.
    mid = output of block 6 ⊕ block 9 (1536 ch), last = block 9, high = blocks 10–12 + final norm
    (768 ch) run on the patch tokens only (the masked reference map carries no class token).
    """

    def __init__(self, *, vit: nn.Module) -> None:
        super().__init__()
        self.name = "dinov2_vitb14"
        self.vit = vit
        self.mid_channels = 2 * vit.embed_dim
        self.high_channels = vit.embed_dim

    def _grid(self, tokens: Tensor, h: int, w: int) -> Tensor:
        patches = tokens[:, tokens.shape[1] - h * w:]  # drop class and register tokens
        return patches.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)

    def mid_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        h, w = images.shape[-2] // 8, images.shape[-1] // 8
        patch = self.vit.patch_size
        x = F.interpolate(images, size=(h * patch, w * patch), mode="bilinear", align_corners=False)
        tokens = self.vit.prepare_tokens_with_masks(x)
        for block in self.vit.blocks[:6]:
            tokens = block(tokens)
        block6 = self._grid(tokens, h, w)
        for block in self.vit.blocks[6:9]:
            tokens = block(tokens)
        block9 = self._grid(tokens, h, w)
        return torch.cat([block6, block9], dim=1), block9

    def high_features(self, last: Tensor) -> Tensor:
        b, c, h, w = last.shape
        tokens = last.flatten(2).transpose(1, 2)
        for block in self.vit.blocks[9:]:
            tokens = block(tokens)
        return self.vit.norm(tokens).transpose(1, 2).reshape(b, c, h, w)


def _tiny_blocks() -> list[nn.Module]:
    """A small CNN with ResNet's layout: OS 4 stem, OS 8 block 3, dilated blocks 4–5."""
    return [
        nn.Sequential(Conv2dNormActivation(3, 16, 3, stride=2), nn.MaxPool2d(3, stride=2, padding=1)),
        Conv2dNormActivation(16, 32, 3), Conv2dNormActivation(32, 64, 3, stride=2),
        Conv2dNormActivation(64, 96, 3, dilation=2), Conv2dNormActivation(96, 128, 3, dilation=4),
    ]


def _read_state_dict(path: Path, what: str, flag: str) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} not found: pass an existing state_dict file with {flag}")
    state = _load_file(path, f"{what} (a state_dict file)", fix="download or write it again",
                       instead=f"pass a file written by torch.save(model.state_dict(), path) with {flag}")
    for key in ("state_dict", "model"):  # common wrappers around a bare state_dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state_dict (a dict of tensors); pass one with {flag}")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _imagenet_state_dict(weights: torchvision.models.WeightsEnum, name: str) -> dict[str, Tensor]:
    filename = os.path.basename(weights.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    try:
        # Reads the cached file when present, downloads it otherwise.
        return torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", progress=False, weights_only=True)
    except (urllib.error.URLError, OSError) as e:
        raise FileNotFoundError(
            f"ImageNet weights for {name} are not cached at {cached} and could not be downloaded ({e}); "
            f"copy {filename} there, or pass a local state_dict file with --backbone-weights PATH") from e


# The published weights `--backbone-weights imagenet` loads (torchvision's, DINOv2's own).
IMAGENET_WEIGHTS = {
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
    "vgg16": torchvision.models.VGG16_BN_Weights.IMAGENET1K_V1,
}
DINOV2_WEIGHTS_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth"


def imagenet_weights_file(name: str) -> Path | None:
    """Where torch.hub keeps backbone `name`'s published weights once downloaded (None: it has none)."""
    url = (
        IMAGENET_WEIGHTS[name].url
        if name in IMAGENET_WEIGHTS
        else DINOV2_WEIGHTS_URL if name == "dinov2_vitb14" else None
    )
    return None if url is None else Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def build_backbone(name: str, *, weights: str | Path | None = None) -> Backbone:
    """Build the frozen backbone `name` (one of BACKBONES), in eval mode with requires_grad False.

    weights: None or "random" = random initialisation from a fixed seed (identical on every build;
    tests, and the tiny backbone before pretrain_tiny_backbone.py); "imagenet" = torchvision's
    ImageNet weights (or DINOv2's published weights), read from the torch hub cache or downloaded;
    a path = a local state_dict (the synthetic benchmark: checkpoints/tiny_backbone_synthetic.pth).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}: choose one of {BACKBONES} (--backbone)")
    if weights == "random":
        weights = None
    if name == "tiny" and weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(
            f"tiny backbone weights {weights} not found: the synthetic benchmark's tiny backbone is "
            "made by `python pretrain_tiny_backbone.py` (docs/synthetic.md) as "
            "checkpoints/tiny_backbone_synthetic.pth; "
            "pass its path with --backbone-weights, or --backbone-weights random for a random one"
        )
    if name == "dinov2_vitb14":
        return _build_dinov2(weights)
    if weights == "imagenet" and name == "tiny":
        raise ValueError(
            "the tiny backbone has no ImageNet weights: leave --backbone-weights unset or pass a state_dict file"
        )

    if weights == "imagenet" and name in DEEP_STEM_FILES:
        raise ValueError(
            f"{name} has no torchvision ImageNet weights: pass the authors' {DEEP_STEM_FILES[name]} (PSPNet's "
            "initmodel, hszhao/semseg) with --backbone-weights PATH, or use --backbone resnet50 (torchvision's stem)"
        )

    with _seeded(0):
        if name in DEEP_STEM_FILES:
            net = _deep_stem_resnet(50 if name == "resnet50_deepstem" else 101)
            del net.fc
            stem = nn.Sequential(net.conv1, net.bn1, nn.ReLU(inplace=True), net.conv2, net.bn2, nn.ReLU(inplace=True),
                                 net.conv3, net.bn3, nn.ReLU(inplace=True), net.maxpool)
            blocks = [stem, net.layer1, net.layer2, net.layer3, net.layer4]
            channels = (512, 1024, 2048)
            imagenet = None
        elif name in ("resnet50", "resnet101"):
            constructor = torchvision.models.resnet50 if name == "resnet50" else torchvision.models.resnet101
            # Output stride 8 (64×64 at 512²), as PSPNet-style few-shot backbones; torchvision's single-conv
            # stem has public weights (the authors' deep stem is resnet50_deepstem, with PSPNet's file).
            net = constructor(weights=None, replace_stride_with_dilation=[False, True, True])
            del net.fc
            blocks = [
                nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool), net.layer1, net.layer2, net.layer3,
                net.layer4,
            ]
            channels = (512, 1024, 2048)
            imagenet = IMAGENET_WEIGHTS[name]
        elif name == "vgg16":
            # VGG-16-BN's convolutional part only (its classifier is 120M parameters the paper never uses).
            net = nn.Module()
            net.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=True)
            f = net.features
            blocks = [
                f[0:7], f[7:14], f[14:24], f[24:34], f[34:43],
            ]  # the authors' five stages; the last pool is unused
            channels = (256, 512, 512)
            imagenet = IMAGENET_WEIGHTS[name]
        else:
            net = nn.Module()  # keys as in CNNBackbone.state_dict(), so a saved tiny backbone loads back
            net.blocks = nn.ModuleList(_tiny_blocks())
            blocks = list(net.blocks)
            channels = (64, 96, 128)
            imagenet = None

    if weights is not None:
        if weights == "imagenet":
            state, source = _imagenet_state_dict(imagenet, name), f"ImageNet weights {os.path.basename(imagenet.url)}"
        else:
            if name == "tiny":
                fix = TINY_BACKBONE_REMAKE
                state = _load_file(Path(weights), "tiny backbone weights (a state_dict file)", fix=fix,
                                   instead="pass checkpoints/tiny_backbone_synthetic.pth (made by "
                                           "`python pretrain_tiny_backbone.py`) with --backbone-weights")
                if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
                    raise ValueError(f"{weights} does not hold a state_dict (a dict of tensors): {fix}")
                state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
            else:
                state = _read_state_dict(Path(weights), f"{name} backbone weights", "--backbone-weights")
            source = str(weights)
        # Keys of the torchvision classifier head (fc / classifier) are not part of the backbone.
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
        _check_backbone_state_dict(net, state, name=name, source=source)
        net.load_state_dict(state, strict=False)  # strict in effect: keys and shapes were checked above

    backbone = CNNBackbone(name=name, blocks=blocks, block3_channels=channels[0],
                           block4_channels=channels[1], block5_channels=channels[2])
    return backbone.freeze()


def _deep_stem_resnet(depth: int) -> nn.Module:
    """The ResNet of PSPNet / PFENet that the authors' code builds (their model/base/resnet.py with
    deep_stem=True): torchvision's dilated Bottleneck ResNet (output stride 8) whose 7×7 stem conv is
    three 3×3 conv + BN + ReLU, 3→64 (stride 2) →64 →128, then the max pool; so layer1 starts from 128
    channels. Module names give their weight files' keys: conv1-3, bn1-3, layer1-4 (and fc)."""
    constructor = torchvision.models.resnet50 if depth == 50 else torchvision.models.resnet101
    net = constructor(weights=None, replace_stride_with_dilation=[False, True, True])
    for index, (cin, cout, stride) in enumerate(((3, 64, 2), (64, 64, 1), (64, 128, 1)), start=1):
        setattr(net, f"conv{index}", nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False))
        setattr(net, f"bn{index}", nn.BatchNorm2d(cout))
    downsample = nn.Sequential(nn.Conv2d(128, 256, 1, bias=False), nn.BatchNorm2d(256))
    net.layer1[0] = torchvision.models.resnet.Bottleneck(128, 64, downsample=downsample)
    del net.relu  # the stem's three ReLUs are built in build_backbone; this one held no weights
    return net


def _state_dict_differences(module: nn.Module, state: dict[str, Tensor], *,
                            optional: str | None = None) -> list[str]:
    """What keeps `state` from loading strictly into `module`, one short clause per kind of
    difference (keys missing, unexpected, of another shape; a few named); [] when it loads.
    Keys ending in `optional` may be missing."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in state and not (optional and k.endswith(optional))]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} {tuple(state[k].shape)} (model {expected[k]})" for k in expected
                if k in state and tuple(state[k].shape) != expected[k]]
    kinds = (("keys missing", missing), ("unexpected keys", unexpected), ("of another shape", reshaped))
    return [f"{len(found)} {what} (e.g. {', '.join(found[:3])})" for what, found in kinds if found]


def _check_backbone_state_dict(net: nn.Module, state: dict[str, Tensor], *, name: str, source: str) -> None:
    """Every key of `net` present with its shape, nothing else: one line naming what differs.

    Strict, unlike the authors' load_state_dict(strict=False), which silently keeps random weights
    for whatever a wrong file lacks. Tolerated: BatchNorm's num_batches_tracked counters (older
    files lack them; in eval mode they are never read)."""
    problems = _state_dict_differences(net, state, optional="num_batches_tracked")
    if not problems:
        return
    if name in DEEP_STEM_FILES:
        stem = state.get("conv1.weight")
        hint = (f"it looks like torchvision's ResNet (one 7×7 stem conv): load it with --backbone {name.split('_')[0]}"
                if stem is not None and tuple(stem.shape)[-2:] == (7, 7) else
                f"expected the authors' deep-stem {DEEP_STEM_FILES[name]} (PSPNet's initmodel, hszhao/semseg)")
    else:
        hint = f"is it a state_dict of torchvision's {name}? (--backbone-weights)"
    raise ValueError(f"{source} does not fit the {name} backbone: {'; '.join(problems)}; {hint}")


def _build_dinov2(weights: str | Path | None) -> Backbone:
    pretrained = weights == "imagenet"
    try:
        from dinov2.hub.backbones import dinov2_vitb14  # an installed copy of facebookresearch/dinov2
        vit = dinov2_vitb14(pretrained=pretrained)
    except ImportError:
        try:
            vit = torch.hub.load("facebookresearch/dinov2", "dinov2_vitb14", pretrained=pretrained,
                                 trust_repo=True, skip_validation=True)
        except Exception as e:
            raise ImportError(
                f"backbone dinov2_vitb14 needs the facebookresearch/dinov2 code: it is neither installed (`dinov2`) "
                f"nor in the torch hub cache {torch.hub.get_dir()} and could not be fetched ({e}); "
                "run once online, or choose another --backbone") from e
    if weights is not None and not pretrained:
        state = _read_state_dict(Path(weights), "dinov2_vitb14 weights", "--backbone-weights")
        try:
            vit.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{weights} does not fit dinov2_vitb14 (--backbone-weights): {e}") from e
    return DINOv2Backbone(vit=vit).freeze()


# ----------------------------------------------------------------------------------------------
# Frozen SAM (§3.1, §4)

# Any module build_sam returns: segment_anything's Sam, MobileSAM's Sam (the same interface with a
# TinyViT image encoder) or SAM 2's SAM2Base. Only the functions below ask which one it is.
FrozenSam = nn.Module

SAM_CHECKPOINTS_PAGE = "https://github.com/facebookresearch/segment-anything#model-checkpoints"
SAM2_CHECKPOINT_URLS = {"sam2": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/",
                        "sam2.1": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"}
SAM2_CHECKPOINTS_PAGE = "https://github.com/facebookresearch/sam2#model-description"
MOBILE_SAM_PAGE = "https://github.com/ChaoningZhang/MobileSAM"


@dataclass(frozen=True)
class SamSpec:
    """One frozen SAM that `--sam` names (an entry of SAM_SPECS).

    family: "sam" (segment_anything's interface: SAM, MobileSAM and the tiny SAMs; one (256, h, w)
        image embedding) or "sam2" (SAM 2 / 2.1: three feature levels, see sam2_backend.py).
    decoder: its decoder group. SAMs of one group have the same prompt encoder and mask decoder,
        weights included, so a VRP encoder trained on one may prompt another (check_sam_switch).
    checkpoint: the official file's name, looked for in CHECKPOINT_DIR (default_sam_checkpoint).
    source: how to get that file, as an instruction ("download URL").
    build: makes the module, randomly initialised (build_sam seeds it, then loads the weights).
    """

    family: str
    decoder: str
    checkpoint: str
    source: str
    build: Callable[[], nn.Module]


def _build_official_sam(sam_type: str) -> Sam:
    return sam_model_registry[sam_type](checkpoint=None)


def _build_mobile_sam() -> nn.Module:
    """MobileSAM (Zhang et al. 2023): a TinyViT image encoder distilled from SAM ViT-H's, in front of
    ViT-H's own prompt encoder and mask decoder; from the official `mobile_sam` package."""
    with warnings.catch_warnings():  # timm, which TinyViT imports, warns about its own deprecated paths
        warnings.simplefilter("ignore")
        try:
            from mobile_sam import sam_model_registry as mobile_sam_registry
        except ImportError as error:
            raise ImportError(f"MobileSAM (--sam vit_t) needs the `mobile_sam` package and timm ({error}): "
                              "pip install -r requirements.txt") from error
    return mobile_sam_registry["vit_t"](checkpoint=None)


def _tiny_prompt_encoder_and_decoder() -> tuple[PromptEncoder, MaskDecoder]:
    """The tiny SAMs' prompt encoder and mask decoder: 128² input, 16×16 embedding, 64² low-res masks."""
    return (
        PromptEncoder(embed_dim=PROMPT_DIM, image_embedding_size=(16, 16), input_image_size=(128, 128),
                      mask_in_chans=16),
        MaskDecoder(num_multimask_outputs=3,
                    transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=512, num_heads=8),
                    transformer_dim=PROMPT_DIM, iou_head_depth=3, iou_head_hidden_dim=256),
    )


def _build_tiny_sam() -> Sam:
    """SAM's classes at toy size: 128² input, 8-pixel patches -> 16×16×256 embedding, 64² low-res masks."""
    image_encoder = ImageEncoderViT(
        img_size=128, patch_size=8, embed_dim=96, depth=2, num_heads=4, mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True,
        window_size=0, global_attn_indexes=(), out_chans=PROMPT_DIM,
    )
    return Sam(image_encoder, *_tiny_prompt_encoder_and_decoder())


def _build_tiny_distilled_sam() -> Sam:
    """The tiny SAM's prompt encoder and mask decoder behind a smaller image encoder (one block of
    width 48): the synthetic benchmark's counterpart of MobileSAM, whose encoder is distilled from
    SAM ViT-H's while the decoder is kept."""
    image_encoder = ImageEncoderViT(
        img_size=128, patch_size=8, embed_dim=48, depth=1, num_heads=2, mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True,
        window_size=0, global_attn_indexes=(), out_chans=PROMPT_DIM,
    )
    return Sam(image_encoder, *_tiny_prompt_encoder_and_decoder())


def _sam2_spec(name: str, config: str, checkpoint: str) -> SamSpec:
    url = SAM2_CHECKPOINT_URLS[name.split("_")[0]]
    return SamSpec("sam2", decoder=name, checkpoint=checkpoint,
                   source=f"download {url}{checkpoint} (listed at {SAM2_CHECKPOINTS_PAGE})",
                   build=partial(sam2_backend.build_sam2_model, config))


def _sam1_spec(sam_type: str, checkpoint: str) -> SamSpec:
    return SamSpec("sam", decoder=sam_type, checkpoint=checkpoint,
                   source=f"download {SAM_CHECKPOINT_URL}{checkpoint} (listed at {SAM_CHECKPOINTS_PAGE})",
                   build=partial(_build_official_sam, sam_type))


# Every SAM `--sam` names. Decoder groups: MobileSAM keeps SAM ViT-H's prompt encoder and mask
# decoder, weights included (its authors' README), so vit_t shares vit_h's; the distilled tiny SAM
# keeps the tiny SAM's; every other SAM, each SAM 2 checkpoint included, has its own.
SAM_SPECS: dict[str, SamSpec] = {
    "vit_h": _sam1_spec("vit_h", "sam_vit_h_4b8939.pth"),
    "vit_l": _sam1_spec("vit_l", "sam_vit_l_0b3195.pth"),
    "vit_b": _sam1_spec("vit_b", "sam_vit_b_01ec64.pth"),
    "vit_t": SamSpec("sam", decoder="vit_h", checkpoint="mobile_sam.pt",
                     source=f"download weights/mobile_sam.pt from {MOBILE_SAM_PAGE}", build=_build_mobile_sam),
    **{name: _sam2_spec(name, config, checkpoint) for name, (config, checkpoint) in sam2_backend.SAM2_MODELS.items()},
    "tiny": SamSpec("sam", decoder="tiny", checkpoint="sam_tiny_synthetic.pth",
                    source="make it with `python pretrain_tiny_sam.py` (about 8 min on 2 CPU cores, "
                           "see docs/synthetic.md)",
                    build=_build_tiny_sam),
    "tiny_distilled": SamSpec("sam", decoder="tiny", checkpoint="sam_tiny_distilled.pth",
                              source="make it with `python distill_tiny_sam.py` (the tiny SAM's image encoder "
                                     "distilled into a smaller one, about 9 min on 2 CPU cores; see docs/synthetic.md)",
                              build=_build_tiny_distilled_sam),
    sam2_backend.TINY_SAM2_NAME: SamSpec("sam2", decoder=sam2_backend.TINY_SAM2_NAME,
                                         checkpoint="sam2_tiny_synthetic.pth",
                                         source="make it with `python pretrain_tiny_sam2.py` (the tiny SAM 2, "
                                                "pre-trained on synthetic scenes; see docs/synthetic.md)",
                                         build=partial(sam2_backend.build_sam2_model, *sam2_backend.TINY_SAM2)),
}
SAM_TYPES = tuple(SAM_SPECS)

# (image encoder embed_dim, depth) of each SAM 1 type, to name the type a checkpoint holds.
_SAM_ENCODER_SHAPES = {(1280, 32): "vit_h", (1024, 24): "vit_l", (768, 12): "vit_b", (96, 2): "tiny",
                       (48, 1): "tiny_distilled"}


def sam_type_of_state_dict(state: dict[str, Tensor]) -> str | None:
    """Name the SAM type (a key of SAM_SPECS) whose weights a state_dict holds, from its image
    encoder's shape (None when it matches none): a checkpoint file's or a built model's."""
    sam2 = sam2_backend.name_of_state_dict(state)
    if sam2 is not None:
        return sam2
    if "image_encoder.patch_embed.seq.0.c.weight" in state:  # TinyViT's convolutional stem: MobileSAM
        return "vit_t"
    patch = state.get("image_encoder.patch_embed.proj.weight")
    if patch is None:
        return None
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    return _SAM_ENCODER_SHAPES.get((patch.shape[0], len(blocks)))


def sam_type_of_model(sam: FrozenSam) -> str | None:
    """The SAM type (a key of SAM_SPECS) of a built SAM, from its weights' shapes."""
    return sam_type_of_state_dict(sam.state_dict())


def is_sam(module: object) -> bool:
    """Whether `module` is a SAM of either family (build_sam's result), not e.g. a whole VRPSAM."""
    if not isinstance(module, nn.Module):
        return False
    return hasattr(module, "sam_mask_decoder") or all(
        hasattr(module, part) for part in ("image_encoder", "prompt_encoder", "mask_decoder"))


def sam_family(sam: FrozenSam) -> str:
    """"sam2" for SAM 2 / 2.1 (SAM2Base), "sam" for segment_anything's interface (SAM, MobileSAM, tiny)."""
    return "sam2" if hasattr(sam, "sam_mask_decoder") else "sam"


def sam_input_size(sam: FrozenSam) -> int:
    """The side of the square image SAM's encoder reads: 1024 for the official SAMs, 128 for the
    tiny ones, 256 for the tiny SAM 2. SAM's own point and box prompts are in this frame."""
    return sam2_backend.input_size(sam) if sam_family(sam) == "sam2" else sam.image_encoder.img_size


def sam_embedding_shape(sam: FrozenSam) -> tuple[int, int, int]:
    """(C, h, w) of one image's sam_image_embeddings: (256, 64, 64) for SAM and MobileSAM, (1024, 64,
    64) for SAM 2 (its three feature levels packed, sam2_backend.image_features), (256, 16, 16) tiny."""
    if sam_family(sam) == "sam2":
        return sam2_backend.embedding_shape(sam)
    return (sam.prompt_encoder.embed_dim, *sam.prompt_encoder.image_embedding_size)


def read_sam_checkpoint(path: str | Path, sam_type: str) -> dict[str, Tensor]:
    """The state_dict of SAM `sam_type` in file `path` (weights_only, fp32), refused in one line
    when the file is missing (saying where to get it), unreadable, or holds another SAM (naming it).
    SAM 2's official files wrap the state_dict as {"model": state_dict}; the others hold it bare."""
    path, spec = Path(path), SAM_SPECS[sam_type]
    if not path.exists():  # a folder is said by _load_file
        raise FileNotFoundError(f"SAM checkpoint {path} not found: {spec.source}, and pass its path with "
                                "--sam-checkpoint")
    state = _load_file(path, f"a SAM {sam_type} checkpoint", instead=f"pass {spec.checkpoint} ({spec.source}) "
                       "with --sam-checkpoint", fix=f"{spec.source} again")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"{path} is not a SAM state_dict (a dict of tensors): pass a SAM checkpoint with --sam-checkpoint"
        )
    found = sam_type_of_state_dict(state)
    if found != sam_type:
        looks = f"looks like {found} (--sam {found})" if found else "matches no known SAM type"
        raise ValueError(f"SAM checkpoint {path} was requested as {sam_type} but {looks}: "
                         "pass the matching --sam type or the right --sam-checkpoint file")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def build_sam(sam_type: str, checkpoint: str | Path | None = None) -> FrozenSam:
    """The frozen SAM of type `sam_type` (one of SAM_TYPES), in eval mode with requires_grad False.

    checkpoint None gives a random initialisation from a fixed seed (tests, benchmarks, and the
    start of the tiny SAMs' own pre-training). Checkpoints may be fp16; they are cast to fp32 and
    loaded strictly (read_sam_checkpoint checks first that they hold this SAM type).
    """
    if sam_type not in SAM_SPECS:
        raise ValueError(f"unknown SAM type {sam_type!r}: choose one of {SAM_TYPES} (--sam)")
    state = None if checkpoint is None else read_sam_checkpoint(checkpoint, sam_type)
    with _seeded(0):
        sam = SAM_SPECS[sam_type].build()
    if state is not None:
        problems = _state_dict_differences(sam, state)
        if problems:  # one line, not load_state_dict's list of every key
            raise ValueError(f"SAM checkpoint {checkpoint} does not fit SAM {sam_type}: {'; '.join(problems)}; pass "
                             f"the official {SAM_SPECS[sam_type].checkpoint} or a file saved from this SAM type")
        sam.load_state_dict(state)
    sam.requires_grad_(False)
    return sam.eval()


def sam_image_embeddings(sam: FrozenSam, images: Tensor) -> Tensor:
    """SAM's image embedding of ImageNet-normalised images.

    images (B, 3, S, S) -> (B, C, h, w) = sam_embedding_shape: for SAM 1 (and MobileSAM) the
    (B, 256, h, w) embedding, h = w = image_encoder.img_size / patch size; for SAM 2 its three
    decoder inputs packed into one tensor (sam2_backend.image_features). ImageNet's mean/std in
    [0, 1] scale are SAM's pixel mean/std / 255, so resizing the normalised tensor is SAM's own
    preprocessing; bilinear with align_corners=True as the authors do.
    """
    if sam_family(sam) == "sam2":
        return sam2_backend.image_features(sam, images)
    size = sam.image_encoder.img_size
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=True)
    return sam.image_encoder(images)


def upsample_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize mask logits (B, C, h, w) -> (B, C, *size): bilinear with align_corners=True, as the
    authors (and HSNet) resize SAM's low-res logits. The one resize used for training, evaluation
    at network or original size, segment.py, and the tiny SAM's own pre-training."""
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)


def decode_masks(sam: FrozenSam, image_embeddings: Tensor, sparse_prompt_embeddings: Tensor,
                 dense_prompt_embeddings: Tensor | None = None) -> Tensor:
    """SAM's mask decoder for B images, each with its own N prompt tokens; single-mask output.

    image_embeddings (B, C, h, w) from sam_image_embeddings, sparse_prompt_embeddings (B, N, 256),
    dense (B, 256, h, w) or None for SAM's no-mask embedding -> low-res logits (B, 1, 4h, 4w).
    SAM 1's `MaskDecoder.forward` repeats each image once per prompt set (one image, many prompts),
    so the batch is decoded by composing its submodules; this equals `MaskDecoder.forward(...,
    multimask_output=False)` run per image. SAM 2: sam2_backend.decode_masks.
    """
    if sam_family(sam) == "sam2":
        return sam2_backend.decode_masks(sam, image_embeddings, sparse_prompt_embeddings, dense_prompt_embeddings)
    decoder, prompt_encoder = sam.mask_decoder, sam.prompt_encoder
    b, c, h, w = image_embeddings.shape
    if (c, h, w) != sam_embedding_shape(sam):
        raise ValueError(f"image embeddings are {c}×{h}×{w} but this SAM expects {sam_embedding_shape(sam)}: "
                         "were they computed (or cached) with another SAM type?")
    if dense_prompt_embeddings is None:
        dense_prompt_embeddings = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, h, w)
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)  # (1 + M, 256)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1),
                        sparse_prompt_embeddings.to(output_tokens.dtype)], dim=1)  # (B, 1 + M + N, 256)
    src = image_embeddings + dense_prompt_embeddings
    pos = prompt_encoder.get_dense_pe().expand(b, -1, -1, -1)
    hs, src = decoder.transformer(src, pos, tokens)  # hs (B, 1 + M + N, 256), src (B, hw, 256)
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))  # (B, 32, 4h, 4w)
    # Single-mask output is mask token 0 and its hypernetwork (SAM's multimask_output=False).
    hyper = decoder.output_hypernetworks_mlps[0](hs[:, 1])  # (B, 32)
    return torch.einsum("bc,bchw->bhw", hyper, upscaled).unsqueeze(1)


def decode_prompts(sam: FrozenSam, image_embeddings: Tensor, *, points: Tensor | None = None,
                   labels: Tensor | None = None, boxes: Tensor | None = None) -> Tensor:
    """SAM's own geometric prompts, through its prompt encoder and decode_masks: points (B, N, 2) as
    (x, y) in SAM's input frame (sam_input_size) with `labels` (B, N; 1 positive, 0 negative;
    default all positive), and/or one box (B, 4) per image -> low-res single-mask logits
    (B, 1, 4h, 4w). GP-SAM (Table 3) and the tiny SAMs' pre-training prompt SAM this way; VRP-SAM
    hands it its own tokens instead. Each family embeds them as its own predictor does (SAM 2:
    sam2_backend.prompt_embeddings)."""
    if points is not None and points.shape[1] == 0:
        points = None
    if points is not None and labels is None:
        labels = torch.ones(points.shape[:2], dtype=torch.int64, device=points.device)
    if sam_family(sam) == "sam2":
        sparse, dense = sam2_backend.prompt_embeddings(sam, points=points, labels=labels, boxes=boxes)
    else:
        sparse, dense = sam.prompt_encoder(points=None if points is None else (points, labels), boxes=boxes,
                                           masks=None)
    return decode_masks(sam, image_embeddings, sparse, dense)


# ----------------------------------------------------------------------------------------------
# The Visual Reference Prompt encoder (§4.1, §4.2)


def downsample_label(labels: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """Shrink annotations (B, S, S) in {0, 1} to the feature grid -> (B, 1, h, w) in [0, 1].

    "area" averages each cell, so a single labelled pixel still marks its cell (with weight 1/64 at
    OS 8); "max" marks it fully; "nearest" (authors' code) samples one pixel in 64 and loses most
    points and thin scribbles (docs/differences.md).
    """
    labels = labels.unsqueeze(1).float()
    if mode == "area":
        return F.adaptive_avg_pool2d(labels, size)
    if mode == "max":
        return F.adaptive_max_pool2d(labels, size)
    if mode == "nearest":
        return F.interpolate(labels, size=size, mode="nearest")
    raise ValueError(f"unknown label downsampling {mode!r}: choose one of {LABEL_DOWNSAMPLING}")


def pseudo_mask(target_high: Tensor, reference_high: Tensor, reference_mask: Tensor, *, norm: str = "none") -> Tensor:
    """Appendix A: where in the target the annotated reference object probably is.

    target_high (B, C, h, w), reference_high (B, C, h', w'), reference_mask (B, 1, h', w') ->
    (B, 1, h, w): for each target pixel, the highest cosine similarity to any annotated reference
    pixel. norm "minmax" rescales each map to [0, 1] (paper); "none" keeps it (authors' code).
    """
    b, c, h, w = target_high.shape
    reference = (reference_high * reference_mask).flatten(2)  # (B, C, h'w')
    target = target_high.flatten(2)  # (B, C, hw)
    norms = reference.norm(dim=1).unsqueeze(2) * target.norm(dim=1).unsqueeze(1)  # (B, h'w', hw)
    similarity = reference.transpose(1, 2) @ target / (norms + 1e-7)
    mask = similarity.amax(dim=1).view(b, 1, h, w)
    if norm == "minmax":
        low = mask.amin(dim=(2, 3), keepdim=True)
        high = mask.amax(dim=(2, 3), keepdim=True)
        mask = (mask - low) / (high - low + 1e-7)
    return mask


def masked_average_pool(features: Tensor, mask: Tensor) -> Tensor:
    """Eq. 1's MAP: features (B, C, h, w), mask (B, 1, h, w) in [0, 1] -> Σ F·M / (Σ M + 5e-4), (B, C)."""
    return (features * mask).sum(dim=(2, 3)) / (mask.sum(dim=(2, 3)) + 5e-4)


def sine_position_encoding(height: int, width: int, *, num_features: int = 128, temperature: float = 10000.0,
                           device: torch.device | None = None) -> Tensor:
    """DETR's normalised sine encoding of a height×width grid -> (height·width, 2·num_features).

    Coordinates 1..n are scaled to (0, 2π]; feature i uses frequency temperature^(2⌊i/2⌋/F), sine
    for even i and cosine for odd i; y features come first, then x.
    """
    index = torch.arange(num_features, device=device)
    frequency = temperature ** (2 * torch.div(index, 2, rounding_mode="floor") / num_features)
    even = index % 2 == 0

    def encode(n: int) -> Tensor:  # (n, F)
        angle = torch.arange(1, n + 1, dtype=torch.float32, device=device) / (n + 1e-6) * (2 * math.pi)
        angle = angle[:, None] / frequency
        return torch.where(even, angle.sin(), angle.cos())

    y = encode(height)[:, None, :].expand(height, width, num_features)
    x = encode(width)[None, :, :].expand(height, width, num_features)
    return torch.cat([y, x], dim=-1).reshape(height * width, 2 * num_features)


class FeatureAugmenter(nn.Module):
    """§4.1, Eqs. 1–3: mix the reference annotation into reference and target features.

    A 1×1 projection (shared by reference and target) brings the backbone's mid-level features to
    `embed_dim`; the reference prototype (Eq. 1) and a mask channel (the annotation for the
    reference, the pseudo mask for the target) are concatenated and merged by a shared 1×1 conv.
    """

    def __init__(self, *, mid_channels: int, embed_dim: int = PROMPT_DIM, dropout: float = 0.5,
                 mask_scale: float = 10.0) -> None:
        super().__init__()
        self.mask_scale = mask_scale
        self.projection = nn.Sequential(
            nn.Conv2d(mid_channels, embed_dim, kernel_size=1, bias=False), nn.ReLU(inplace=True), nn.Dropout2d(dropout))
        self.merge = nn.Sequential(
            nn.Conv2d(2 * embed_dim + 1, embed_dim, kernel_size=1, bias=False), nn.ReLU(inplace=True))

    def forward(self, target_mid: Tensor, reference_mid: Tensor, reference_mask: Tensor,
                target_pseudo_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """target_mid, reference_mid (B, C_mid, h, w); reference_mask, target_pseudo_mask (B, 1, h, w)
        -> augmented reference F'_r and target F'_t, each (B, embed_dim, h, w), and the reference's
        foreground prototype P_r (Eq. 1) and background prototype, (B, 2, embed_dim), for Table 6."""
        target = self.projection(target_mid)
        reference = self.projection(reference_mid)
        # Eq. 1: P_r = MAP(F_r, M_r) = Σ F_r·M_r / (Σ M_r + ε), ε = 5e-4 as the authors.
        foreground = masked_average_pool(reference, reference_mask)  # (B, C)
        background = masked_average_pool(reference, 1 - reference_mask)  # the same pooling outside the label
        prototype = foreground[:, :, None, None].expand_as(reference)
        # Eq. 2: F'_r = Conv(Concat(F_r, P_r, M_r))
        reference = self.merge(torch.cat([reference, prototype, self.mask_scale * reference_mask], dim=1))
        # Eq. 3: F'_t = Conv(Concat(F_t, P_r, M_t^pseudo))
        target = self.merge(torch.cat([target, prototype, self.mask_scale * target_pseudo_mask], dim=1))
        return reference, target, torch.stack([foreground, background], dim=1)


class PromptGenerator(nn.Module):
    """§4.2, Eqs. 4–5: N learnable queries read the reference, then the target -> N prompt tokens.

    One layer of each attention: cross (reference) -> self -> cross (target) -> self. Post-norm
    residuals, no dropout, no feed-forward block (authors' code). Keys get a sine positional
    encoding; queries and values get none. query_init (Table 6): see initial_queries.
    """

    def __init__(self, *, embed_dim: int = PROMPT_DIM, num_queries: int = 50, num_heads: int = 4,
                 query_init: str = "random") -> None:
        super().__init__()
        if query_init not in QUERY_INITS:
            raise ValueError(f"unknown query initialisation {query_init!r}: choose one of {QUERY_INITS} (--query-init)")
        self.query_init = query_init
        self.queries = nn.Embedding(num_queries, embed_dim)  # the same learnable queries for every query_init
        self.reference_cross_attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.reference_cross_norm = nn.LayerNorm(embed_dim)
        self.reference_self_attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.reference_self_norm = nn.LayerNorm(embed_dim)
        self.target_cross_attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.target_cross_norm = nn.LayerNorm(embed_dim)
        self.target_self_attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.target_self_norm = nn.LayerNorm(embed_dim)
        for attn in (
            self.reference_cross_attn, self.reference_self_attn, self.target_cross_attn, self.target_self_attn,
        ):
            nn.init.xavier_uniform_(attn.in_proj_weight)
            nn.init.xavier_uniform_(attn.out_proj.weight)

    def initial_queries(self, prototypes: Tensor) -> Tensor:
        """Table 6: the queries Q that Eq. 4 starts from, (B, N, C), given prototypes (B, 2, C) =
        the reference's foreground prototype P_r (Eq. 1) and its background prototype.

        The paper names the variants (random, FP, BP, half) but does not define them. Ours: every
        variant keeps the N learnable queries q_i (so the learnable parameters are the same) and
        "random" uses them alone (the default: the authors' nn.Embedding); "fp" starts from
        q_i + P_r, "bp" from q_i + P_bg, "half" gives the first ceil(N/2) queries P_r and the rest
        P_bg. The prototypes carry gradient into the shared projection, as P_r in Eqs. 2-3 does.
        """
        queries = self.queries.weight.unsqueeze(0).expand(prototypes.shape[0], -1, -1)  # (B, N, C)
        if self.query_init == "random":
            return queries
        foreground, background = prototypes[:, :1], prototypes[:, 1:]  # (B, 1, C) each
        if self.query_init == "fp":
            return queries + foreground
        if self.query_init == "bp":
            return queries + background
        half = -(-queries.shape[1] // 2)
        return torch.cat([queries[:, :half] + foreground, queries[:, half:] + background], dim=1)

    def forward(self, reference: Tensor, target: Tensor, prototypes: Tensor) -> Tensor:
        """reference F'_r, target F'_t (B, C, h, w), prototypes (B, 2, C) (foreground P_r,
        background; used by query_init other than "random") -> prompt embeddings Q'_t (B, N, C)."""
        b, c = reference.shape[:2]
        reference_pos = sine_position_encoding(*reference.shape[-2:], num_features=c // 2, device=reference.device)
        target_pos = sine_position_encoding(*target.shape[-2:], num_features=c // 2, device=target.device)
        reference = reference.flatten(2).transpose(1, 2)  # (B, hw, C)
        target = target.flatten(2).transpose(1, 2)
        reference_keys = reference + reference_pos.to(reference.dtype)
        target_keys = target + target_pos.to(target.dtype)
        q = self.initial_queries(prototypes.to(reference.dtype))  # (B, N, C)

        # Eq. 4: Q'_r = SelfAttn(CrossAttn(Q, F'_r))
        q = self.reference_cross_norm(
            q + self.reference_cross_attn(q, reference_keys, reference, need_weights=False)[0]
        )
        q = self.reference_self_norm(q + self.reference_self_attn(q, q, q, need_weights=False)[0])
        # Eq. 5: Q'_t = SelfAttn(CrossAttn(Q'_r, F'_t))
        q = self.target_cross_norm(q + self.target_cross_attn(q, target_keys, target, need_weights=False)[0])
        q = self.target_self_norm(q + self.target_self_attn(q, q, q, need_weights=False)[0])
        return q


class VRPEncoder(nn.Module):
    """The learnable Visual Reference Prompt encoder: FeatureAugmenter (§4.1) + PromptGenerator (§4.2).

    Works on frozen backbone features, so its parameters are exactly what is trained and saved.
    """

    def __init__(
        self, *, mid_channels: int, embed_dim: int = PROMPT_DIM, num_queries: int = 50, num_heads: int = 4,
        dropout: float = 0.5, mask_scale: float = 10.0, query_init: str = "random",
    ) -> None:
        super().__init__()
        self.feature_augmenter = FeatureAugmenter(mid_channels=mid_channels, embed_dim=embed_dim,
                                                  dropout=dropout, mask_scale=mask_scale)
        self.prompt_generator = PromptGenerator(embed_dim=embed_dim, num_queries=num_queries, num_heads=num_heads,
                                                query_init=query_init)

    def forward(self, target_mid: Tensor, reference_mid: Tensor, reference_mask: Tensor,
                target_pseudo_mask: Tensor) -> Tensor:
        """(B, C_mid, h, w) ×2, (B, 1, h, w) ×2 -> prompt embeddings (B, N, embed_dim)."""
        reference, target, prototypes = self.feature_augmenter(
            target_mid, reference_mid, reference_mask, target_pseudo_mask
        )
        return self.prompt_generator(reference, target, prototypes)


@dataclass(frozen=True)
class ReferenceFeatures:
    """What VRPSAM.encode_references keeps of k annotated references, each (B, k, ...):
    mid (B, k, C_mid, h, w) features, mask (B, k, 1, h, w) the annotation at feature resolution,
    high (B, k, C_high, h', w') 5th-block features of the annotated region, high_mask its mask."""

    mid: Tensor
    mask: Tensor
    high: Tensor
    high_mask: Tensor

    @property
    def shots(self) -> int:
        return self.mid.shape[1]

    def cat(self, other: "ReferenceFeatures") -> "ReferenceFeatures":
        """More references for the same targets (Table 7's k-shot): concatenated along k."""
        return ReferenceFeatures(
            *(torch.cat([getattr(self, f.name), getattr(other, f.name)], dim=1) for f in fields(self))
        )


class VRPSAM(nn.Module):
    """VRP-SAM (Fig. 3): frozen backbone + learnable VRPEncoder -> prompts for a frozen SAM.

    seed: the VRP encoder's initialisation; None draws it from torch's global generator like any
    nn.Module (seed it with torch.manual_seed), an int fixes it without touching that generator.
    """

    def __init__(self, *, config: VRPConfig, backbone: Backbone, sam: FrozenSam, seed: int | None = None) -> None:
        super().__init__()
        if getattr(backbone, "name", None) != config.backbone:
            raise ValueError(
                f"config.backbone is {config.backbone!r} but the backbone given is {getattr(backbone, 'name', None)!r}"
            )
        if sam_type_of_model(sam) != config.sam:
            raise ValueError(f"config.sam is {config.sam!r} but the SAM given looks like {sam_type_of_model(sam)!r}")
        self.config = config
        self.backbone = backbone
        self.sam = sam
        self.encoder = self._new_encoder(seed)

    def _new_encoder(self, seed: int | None) -> VRPEncoder:
        with _seeded(seed) if seed is not None else nullcontext():
            return VRPEncoder(mid_channels=self.backbone.mid_channels, embed_dim=PROMPT_DIM,
                              num_queries=self.config.num_queries, num_heads=self.config.num_heads,
                              dropout=self.config.dropout, mask_scale=self.config.mask_scale,
                              query_init=self.config.query_init)

    def reset_learnable_parameters(self, *, seed: int | None = None) -> None:
        """A fresh VRP encoder, initialised as the constructor does with the same seed (or global
        random state). It replaces the module: build optimisers afterwards."""
        device = next(self.encoder.parameters()).device
        self.encoder = self._new_encoder(seed).to(device).train(self.training)

    def train(self, mode: bool = True) -> "VRPSAM":
        super().train(mode)
        # Only the VRP encoder trains; frozen BatchNorm / SAM stay in inference mode.
        self.backbone.eval()
        self.sam.eval()
        return self

    def learnable_parameters(self) -> Iterator[nn.Parameter]:
        """The VRP encoder's parameters, the only ones trained (like nn.Module.parameters, an iterator)."""
        return self.encoder.parameters()

    def num_learnable_parameters(self) -> int:
        return sum(p.numel() for p in self.learnable_parameters())

    def learnable_state_dict(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()}

    def load_learnable_state_dict(self, state: dict[str, Tensor], *, source: str = "the checkpoint") -> None:
        """Load a learnable_state_dict; a state of other keys or shapes (an encoder trained on another
        backbone, or with another --num-queries) is refused in one line naming `source`, the
        parameter, both shapes and the likely cause (encoder_state_problem), before anything is copied."""
        expected = {k: tuple(v.shape) for k, v in self.encoder.state_dict().items()}
        problem = encoder_state_problem(expected, state, self.config, built="the model is built with")
        if problem:
            raise ValueError(f"{source} does not fit this model: {problem}; build the model with the checkpoint's "
                             "own configuration (model.build_from_checkpoint does)")
        self.encoder.load_state_dict(state)

    def prompt_embeddings(self, target_images: Tensor, reference_images: Tensor, reference_labels: Tensor) -> Tensor:
        """target_images (B, 3, S, S), reference_images (B, k, 3, S, S), reference_labels (B, k, S, S)
        in {0, 1} -> prompt embeddings (B, k·N, 256): each reference yields N prompts (Table 7)."""
        if reference_images.dim() != 5 or reference_labels.dim() != 4:
            raise ValueError(
                f"reference_images must be (B, k, 3, S, S) and reference_labels (B, k, S, S), got "
                f"{tuple(reference_images.shape)} and {tuple(reference_labels.shape)}: add the shot axis (x[:, None])"
            )
        b, k = reference_images.shape[:2]
        if (reference_labels.shape != (b, k, *reference_images.shape[-2:]) or target_images.shape[0] != b
                or target_images.shape[-2:] != reference_images.shape[-2:]):
            raise ValueError(f"sizes do not match: target_images {tuple(target_images.shape)}, reference_images "
                             f"{tuple(reference_images.shape)}, reference_labels {tuple(reference_labels.shape)}; "
                             "images and annotations must share B, k and S x S (resize them as data.py does)")
        return self.target_prompt_embeddings(target_images, self.encode_references(reference_images, reference_labels))

    def encode_references(self, reference_images: Tensor, reference_labels: Tensor) -> ReferenceFeatures:
        """The half of prompt_embeddings that does not depend on the target: the references'
        frozen features and annotation at feature resolution, computed once for any number of
        targets (segment.py). reference_images (B, k, 3, S, S), reference_labels (B, k, S, S)."""
        b, k = reference_images.shape[:2]
        # All k references in one backbone pass.
        # (B·k, C_mid, h, w)
        reference_mid, reference_last = self.backbone.mid_features(reference_images.flatten(0, 1))
        reference_mask = downsample_label(
            reference_labels.flatten(0, 1), reference_mid.shape[-2:], self.config.label_downsample
        )
        # The reference's 5th block sees only the annotated region (authors' code).
        reference_high = self.backbone.high_features(reference_last * reference_mask)
        high_mask = reference_mask
        if reference_high.shape[-2:] != reference_mask.shape[-2:]:
            high_mask = F.interpolate(
                reference_mask, size=reference_high.shape[-2:], mode="bilinear", align_corners=True
            )
        unflatten = lambda x: x.reshape(b, k, *x.shape[1:])  # noqa: E731
        return ReferenceFeatures(mid=unflatten(reference_mid), mask=unflatten(reference_mask),
                                 high=unflatten(reference_high), high_mask=unflatten(high_mask))

    def target_prompt_embeddings(self, target_images: Tensor, references: ReferenceFeatures) -> Tensor:
        """The target's half of prompt_embeddings: target_images (B, 3, S, S) and encode_references'
        output for B or for 1 set of k references (then shared by all B targets) -> (B, k·N, 256)."""
        b, k = target_images.shape[0], references.shots
        if references.mid.shape[0] not in (1, b):
            raise ValueError(
                f"{references.mid.shape[0]} reference sets for {b} targets: pass one set or one per target"
            )
        target_mid, target_last = self.backbone.mid_features(target_images)  # (B, C_mid, h, w)
        target_high = self.backbone.high_features(target_last)  # (B, C_high, h, w)
        # The target's features are shared by its k references.
        flat = lambda x: x.expand(b, *x.shape[1:]).flatten(0, 1)  # (B·k, ...)  # noqa: E731
        target_high = target_high.repeat_interleave(k, dim=0)
        target_pseudo_mask = pseudo_mask(target_high, flat(references.high), flat(references.high_mask),
                                         norm=self.config.pseudo_mask_norm)
        prompts = self.encoder(target_mid.repeat_interleave(k, dim=0), flat(references.mid), flat(references.mask),
                               target_pseudo_mask)
        return prompts.reshape(b, k * prompts.shape[1], prompts.shape[2])  # (B, k·N, 256), reference-major

    def forward(self, target_images: Tensor, reference_images: Tensor, reference_labels: Tensor,
                image_embeddings: Tensor | None = None) -> Tensor:
        """Target logits (B, S, S) (prediction = logits > 0).

        image_embeddings (B, C, h, w): the target's SAM embeddings (sam_image_embeddings), computed
        here when None (callers usually pass cached ones, see EmbeddingCache).
        """
        if image_embeddings is None:
            image_embeddings = sam_image_embeddings(self.sam, target_images)
        prompts = self.prompt_embeddings(target_images, reference_images, reference_labels)
        low_res = decode_masks(self.sam, image_embeddings, prompts)  # (B, 1, 4h, 4w)
        return upsample_logits(low_res, target_images.shape[-2:])[:, 0]


def build_vrp_sam(config: VRPConfig, *, sam_checkpoint: str | Path | None = None,
                  backbone_weights: str | Path | None = None, seed: int | None = None) -> VRPSAM:
    """VRP-SAM for `config`: frozen backbone and SAM (random from a fixed seed when no weights are
    given) and a freshly initialised VRP encoder (seed: see VRPSAM)."""
    backbone = build_backbone(config.backbone, weights=backbone_weights)
    sam = build_sam(config.sam, sam_checkpoint)
    return VRPSAM(config=config, backbone=backbone, sam=sam, seed=seed)


# ----------------------------------------------------------------------------------------------
# Loss (§4.3, Eq. 6)


def vrp_loss(logits: Tensor, target: Tensor, *, ignore_index: int = IGNORE, loss: str = "bce+dice",
             global_sum: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Eq. 6: L = BCE + Dice, on logits (B, S, S) and target (B, S, S) in {0, 1, ignore_index}.

    BCE-with-logits is averaged over the batch's valid pixels; Dice is the authors'
    1 − (2Σpy + 1) / (Σp + Σy + 1) per image, averaged over the batch. Pixels equal to
    ignore_index (PASCAL boundaries) count in neither term (the authors train them as background).
    loss: one of LOSSES; "bce" or "dice" keeps one term alone (Table 5's ablation).

    global_sum: when this batch is one process's share of a global batch (torchrun), the sum of
    a count over all shares (distributed.World.sum); both terms are then normalised over the
    global batch, so the shares' losses add up to the global batch's loss.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: choose one of {LOSSES} (--loss)")
    if logits.shape != target.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same (B, S, S) shape"
        )
    logits = logits.float()  # the loss in fp32 also under autocast
    valid = (target != ignore_index).float()
    y = (target == 1).float()
    # Under torchrun, both terms are normalised over the global batch (global_sum adds a count over
    # the ranks), so the ranks' losses add up to the global batch's loss.
    valid_count = valid.sum() if global_sum is None else global_sum(valid.sum())
    total = logits.new_zeros(())
    if loss in ("bce+dice", "bce"):
        total = total + F.binary_cross_entropy_with_logits(
            logits, y, weight=valid, reduction="sum"
        ) / valid_count.clamp_min(1.0)
    if loss in ("bce+dice", "dice"):
        p = torch.sigmoid(logits) * valid
        intersection = (p * y).flatten(1).sum(1)
        dice = 1 - (2 * intersection + 1) / (p.flatten(1).sum(1) + (y * valid).flatten(1).sum(1) + 1)
        total = total + (dice.mean() if global_sum is None else dice.sum() / global_sum(valid.new_tensor(len(dice))))
    return total


# ----------------------------------------------------------------------------------------------
# Checkpoints and the SAM embedding cache


def save_checkpoint(path: str | Path, model: VRPSAM, **extra: object) -> None:
    """Write {"config": asdict(config), "model": learnable state_dict, **extra} atomically.

    Only the VRP encoder is saved: the backbone and SAM are frozen and rebuilt from their own
    weights (or the fixed seed for random/tiny ones). extra: epoch, optimizer state, best metric...
    """
    clash = {"config", "model"} & extra.keys()
    if clash:
        raise ValueError(f"save_checkpoint: {sorted(clash)} are reserved keys")
    state = {"config": asdict(model.config), "model": model.learnable_state_dict(), **extra}
    cli.write_atomic(path, partial(torch.save, state), durable=True)


def load_checkpoint(path: str | Path, *, config: VRPConfig | None = None) -> dict:
    """Read a checkpoint written by save_checkpoint (weights_only, on CPU).

    With config, refuse a checkpoint built with a different configuration, naming each field.
    The returned dict is as saved: VRPConfig(**ckpt["config"]) rebuilds the configuration and
    VRPSAM.load_learnable_state_dict(ckpt["model"]) the weights.
    """
    path = Path(path)
    if not path.exists():  # a folder is said to be one by _load_file
        raise FileNotFoundError(f"checkpoint {path} not found: pass a file written by train.py (--checkpoint)")
    ckpt = _load_file(path, "a VRP-SAM checkpoint written by train.py", fix="train the run again, or copy it again",
                      instead="pass the best.pt (or last.pt) of a train.py run; SAM or backbone weights go to "
                              "--sam-checkpoint / --backbone-weights")
    if (
        not isinstance(ckpt, dict)
        or not isinstance(ckpt.get("config"), dict)
        or not isinstance(ckpt.get("model"), dict)
    ):
        raise ValueError(f"{path} is not a VRP-SAM checkpoint (a dict with 'config' and 'model'); "
                         "SAM or backbone weights go to --sam-checkpoint / --backbone-weights")
    known = {f.name for f in fields(VRPConfig)}
    unknown = sorted(set(ckpt["config"]) - known)
    if unknown:
        raise ValueError(
            f"{path} has config fields {unknown} this model.py does not know: was it written by a newer version?"
        )
    stored = VRPConfig(**ckpt["config"])
    if config is not None and stored != config:
        differences = [f"{f.name}: checkpoint {getattr(stored, f.name)}, requested {getattr(config, f.name)}"
                       for f in fields(VRPConfig) if getattr(stored, f.name) != getattr(config, f.name)]
        raise ValueError(f"{path} was built with another configuration: " + "; ".join(differences))
    problem = encoder_state_problem(encoder_shapes(stored), ckpt["model"], stored, built="its config says")
    if problem:  # weights and config disagree: found here, before any script builds a model
        raise ValueError(f"checkpoint {path} does not fit its own config: {problem}; was its config edited, or the "
                         "file written by another version of model.py?")
    return ckpt


# Backbone.mid_channels of each backbone: what the VRP encoder's first layer reads, so that a
# checkpoint's weights alone name the backbone(s) its encoder can have been trained on.
BACKBONE_MID_CHANNELS = {"resnet50": 1536, "resnet101": 1536, "resnet50_deepstem": 1536, "resnet101_deepstem": 1536,
                         "vgg16": 768, "dinov2_vitb14": 1536, "tiny": 160}


def encoder_shapes(config: VRPConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of the VRP encoder `config` builds, without building a backbone or
    SAM (the encoder is made on the meta device: no memory, no initialisation)."""
    with torch.device("meta"):
        encoder = VRPEncoder(mid_channels=BACKBONE_MID_CHANNELS[config.backbone], embed_dim=PROMPT_DIM,
                             num_queries=config.num_queries, num_heads=config.num_heads, dropout=config.dropout,
                             mask_scale=config.mask_scale, query_init=config.query_init)
    return {k: tuple(v.shape) for k, v in encoder.state_dict().items()}


def encoder_state_problem(expected: dict[str, tuple[int, ...]], state: dict, config: VRPConfig, *,
                          built: str) -> str | None:
    """None when `state` (a learnable_state_dict) has exactly the keys and shapes of `expected`;
    else one clause naming the first parameter that differs, both shapes and the likely cause.
    config: the configuration `expected` was made for; built: how to name it ("the model is built")."""
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        return "its 'model' entry is not a state_dict (a dict of tensors)"
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        found = [f"{len(keys)} {what} (e.g. {', '.join(keys[:2])})"
                 for what, keys in (("keys missing", missing), ("unexpected keys", unexpected)) if keys]
        return f"{'; '.join(found)}: not the VRP encoder of this model.py"
    for key, shape in expected.items():
        found = tuple(state[key].shape)
        if found == shape:
            continue
        difference = f"{key} is {found} in the checkpoint but {shape} in the model"
        if key == "feature_augmenter.projection.0.weight":  # (256, C_mid, 1, 1): the backbone's feature channels
            trained = [name for name, c in BACKBONE_MID_CHANNELS.items() if c == found[1]] or ["an unknown backbone"]
            return (f"{difference}: its encoder was trained on {' / '.join(trained)} features ({found[1]} channels) "
                    f"but {built} backbone {config.backbone} ({shape[1]})")
        if key == "prompt_generator.queries.weight":  # (N, 256)
            return (f"{difference}: it was trained with {found[0]} queries (--num-queries {found[0]}) but {built} "
                    f"{shape[0]}")
        return difference
    return None


def default_sam_checkpoint(sam_type: str) -> Path:
    """Where the scripts look for SAM's weights when --sam-checkpoint is not given: the official
    file name (SAM_SPECS) in CHECKPOINT_DIR."""
    return CHECKPOINT_DIR / SAM_SPECS[sam_type].checkpoint


def sam_switch_problem(trained: str, chosen: str, *, source: str = "the checkpoint") -> str | None:
    """Why a VRP encoder trained on SAM `trained` cannot prompt SAM `chosen` (--sam), in one line;
    None when it can: both are one SAM, or of one decoder group (SamSpec.decoder: the same prompt
    encoder and mask decoder, e.g. a ViT-H run on MobileSAM's vit_t). source: the checkpoint's name."""
    group = SAM_SPECS[trained].decoder
    if SAM_SPECS[chosen].decoder == group:
        return None
    alike = [name for name, spec in SAM_SPECS.items() if spec.decoder == group]
    return (f"{source} was trained on SAM {trained}, and SAM {chosen} has another prompt encoder and mask decoder, to "
            f"which its prompts mean nothing: use --sam {' or '.join(alike)}, or train on {chosen} "
            f"(train.py --sam {chosen})")


def check_sam_switch(trained: str, chosen: str, *, source: str = "the checkpoint") -> None:
    """Refuse (ValueError, sam_switch_problem's line) a SAM the encoder of `source` cannot prompt;
    say in one logged line when it runs on another SAM of its decoder group."""
    problem = sam_switch_problem(trained, chosen, source=source)
    if problem:
        raise ValueError(problem)
    if chosen != trained:
        log.warning("%s was trained on SAM %s; running it on SAM %s, which has the same prompt encoder and mask "
                    "decoder (%s's)", source, trained, chosen, SAM_SPECS[trained].decoder)


def run_sam_checkpoint(state: dict, override: str | Path | None = None, *, sam: str | None = None) -> Path:
    """The SAM weights for a train.py checkpoint: `override` if given (--sam-checkpoint); else, for
    another SAM than the run's (`sam`, --sam), that SAM's default file; else the file its run used
    (found again in CHECKPOINT_DIR if it moved: find_moved_file), else (a run saved without that
    argument) the default file for its SAM type."""
    if override:
        return Path(override)
    run, sam_type = state.get("args", {}), state["config"]["sam"]
    if sam is not None and sam != sam_type:
        return default_sam_checkpoint(sam)
    recorded = run.get("sam_checkpoint")
    if not recorded:
        return default_sam_checkpoint(sam_type)
    return find_moved_file(recorded, run.get("sam_fingerprint"), lambda path: build_sam(sam_type, path),
                           what="SAM checkpoint", flag="--sam-checkpoint")


def run_backbone_weights(state: dict, override: str | Path | None = None) -> str | None:
    """The backbone weights for a train.py checkpoint: `override` if given (--backbone-weights: a
    state_dict file, 'imagenet' or 'random'), else what its run used (a file found again in
    CHECKPOINT_DIR if it moved: find_moved_file)."""
    if override is not None:
        return str(override)
    run, backbone = state.get("args", {}), state["config"]["backbone"]
    recorded = run.get("backbone_weights")
    if recorded in (None, "imagenet", "random"):
        return recorded
    return str(find_moved_file(recorded, run.get("backbone_fingerprint"),
                               lambda path: build_backbone(backbone, weights=path),
                               what="backbone weights", flag="--backbone-weights"))


def find_moved_file(recorded: str | Path, fingerprint: str | None, build: Callable[[Path], nn.Module], *,
                    what: str, flag: str) -> Path:
    """A frozen file a run recorded (train.py stores absolute paths): `recorded` where it exists;
    else, for a run folder moved to another machine, the file of the same name in this repository's
    CHECKPOINT_DIR when the weights `build` makes of it have the run's module_fingerprint (said in
    one logged line). A candidate that cannot be confirmed is refused in one line naming `flag`;
    with no candidate, `recorded` comes back and the loader says it is missing and which flag to pass.
    Confirming costs one extra build of the candidate (seconds for ViT-H), only when the file moved."""
    path = Path(recorded)
    candidate = CHECKPOINT_DIR / path.name
    if path.is_file() or not candidate.is_file() or candidate.resolve() == path.resolve():
        return path
    missing = f"{what} {path} (recorded by the run) not found"
    if fingerprint is None:
        raise FileNotFoundError(f"{missing}; {candidate} has its name, but the run recorded no fingerprint to confirm "
                                f"it holds the same weights: if it does, pass it with {flag} {candidate}")
    try:
        found = module_fingerprint(build(candidate))
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"{missing}; {candidate} has its name but cannot be used ({error}); "
                                f"pass the run's file with {flag}") from error
    if found != fingerprint:
        raise FileNotFoundError(f"{missing}; {candidate} has its name but other weights (fingerprint {found}, the "
                                f"run's {fingerprint}): pass the run's file with {flag}")
    log.warning("%s %s (recorded by the run) not found: using %s, which holds the same weights (fingerprint %s)",
                what, path, candidate, fingerprint)
    return candidate


def build_from_checkpoint(state: dict, *, sam: str | None = None, sam_checkpoint: str | Path | None = None,
                          backbone_weights: str | Path | None = None, source: str = "the checkpoint") -> VRPSAM:
    """The model a train.py checkpoint (load_checkpoint's dict) describes, on the CPU: the frozen
    backbone and SAM rebuilt from the run's saved arguments (run_backbone_weights and
    run_sam_checkpoint choose the files; the arguments override them, as the scripts'
    --backbone-weights and --sam-checkpoint), the trained VRP encoder loaded. sam: another SAM
    type than the run's (--sam), one that shares its decoder (check_sam_switch). source: the
    checkpoint's name in messages (its path)."""
    trained = state["config"]["sam"]
    if sam is not None:
        check_sam_switch(trained, sam, source=source)
    other_sam = sam is not None and sam != trained
    sam_file = run_sam_checkpoint(state, sam_checkpoint, sam=sam)
    backbone_file = run_backbone_weights(state, backbone_weights)
    for given, chosen, what, flag in ((sam_checkpoint, sam_file, "SAM checkpoint", "--sam-checkpoint"),
                                      (backbone_weights, backbone_file, "backbone weights", "--backbone-weights")):
        if (given is None and not (other_sam and what == "SAM checkpoint")
                and chosen not in (None, "imagenet", "random") and not Path(chosen).is_file()):
            # the run's own file is gone (its folder moved to another machine?): the flag that replaces it
            raise FileNotFoundError(f"{what} {chosen} (recorded by the run of {source}) not found: pass the run's file "
                                    f"with {flag} PATH")
    config = VRPConfig(**{**state["config"], "sam": sam or trained})
    model = build_vrp_sam(config, sam_checkpoint=sam_file, backbone_weights=backbone_file)
    model.load_learnable_state_dict(state["model"], source=source)
    if backbone_weights is not None:
        warn_if_other_backbone(model, state, backbone_file, source=source)
    return model


def warn_if_other_backbone(model: VRPSAM, state: dict, weights: str | Path, *, source: str = "the checkpoint") -> None:
    """--backbone-weights points a run at a file: say in one logged line when its weights are not
    the ones the run was trained on (module_fingerprint), since the encoder learned those features."""
    recorded = state.get("args", {}).get("backbone_fingerprint")
    found = None if recorded is None else module_fingerprint(model.backbone)
    if found is not None and found != recorded:
        log.warning("--backbone-weights %s holds other weights than the run of %s was trained with (fingerprint %s, "
                    "the run's %s): its encoder learned other features; expect lower accuracy", weights, source,
                    found, recorded)


# What sam_image_embeddings does to an image before SAM's encoder sees it (SAM 1's family; SAM 2's
# is sam2_backend.PREPROCESSING). Part of the embedding cache's key: change it whenever that
# preprocessing changes, so no old embedding is served.
SAM_PREPROCESSING = "imagenet-normalised; bilinear align_corners=True to image_encoder.img_size"


def module_fingerprint(module: nn.Module) -> str:
    """sha1 (16 hex digits) of a module's state: every tensor's name, dtype, shape and bytes.

    Identifies frozen weights whatever file (or seed) they came from; ViT-H's 2.5 GB take a few
    seconds, once per run.
    """
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tensor.numel()};".encode())
        digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def sam_features_fingerprint(sam: FrozenSam) -> str:
    """sha1 (16 hex digits) of everything sam_image_embeddings computes with: the weights it reads
    (SAM 1: the image encoder; SAM 2: sam2_backend.feature_modules) and its preprocessing. The key
    of EmbeddingCache's folder, so features are never served to another SAM or preprocessing."""
    if sam_family(sam) == "sam2":
        modules, preprocessing = sam2_backend.feature_modules(sam), sam2_backend.PREPROCESSING
    else:
        modules, preprocessing = sam.image_encoder, SAM_PREPROCESSING
    return hashlib.sha1(f"{module_fingerprint(modules)}|{preprocessing}".encode()).hexdigest()[:16]


class EmbeddingCache:
    """On-disk cache of frozen SAM image embeddings, one fp16 .pt file per image.

    Files live under root/sam_type/image_size/<fingerprint>/, the fingerprint being that of the
    weights and preprocessing SAM's image features come from (sam_features_fingerprint): another
    checkpoint of the same SAM type (or a random one), or another SAM family, never reads these
    embeddings. Writes go through a temp file + os.replace, so several DataLoader workers or
    processes can share the cache. embed() keys each image by its id and a digest of its exact
    input pixels (`key`), so an image that changed under the same id (a dataset extracted again, an
    edited synthetic renderer) is a miss, never a stale hit. A file that cannot be read, or holds
    anything but a (C, h, w) fp16 tensor of this SAM's sam_embedding_shape, is a miss and is rewritten.
    """

    def __init__(self, root: str | Path, sam: FrozenSam, image_size: int) -> None:
        if not is_sam(sam):
            raise TypeError(
                f"EmbeddingCache needs the SAM model itself (its weights key the cache), got {type(sam).__name__}"
            )
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        self.image_size = image_size
        self.sam_type = sam_type_of_model(sam)
        self.embedding_shape = sam_embedding_shape(sam)
        self.fingerprint = sam_features_fingerprint(sam)
        self.directory = Path(root) / str(self.sam_type) / str(image_size) / self.fingerprint
        self._sam = weakref.ref(sam)

    @staticmethod
    def key(image_id: str, image: Tensor) -> str:
        """The key of one input image (3, S, S): its id and a sha1 of its exact pixels (on the CPU:
        about 0.2 ms at 128², 3 ms at 512²)."""
        pixels = image.detach().to("cpu").contiguous().view(torch.uint8).numpy()
        return f"{image_id}#{hashlib.sha1(pixels).hexdigest()[:16]}"

    def path(self, key: str) -> Path:
        # Readable prefix + hash of the full key: distinct keys never share a file.
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(key))[:80]
        digest = hashlib.sha1(str(key).encode()).hexdigest()[:12]
        return self.directory / f"{safe}-{digest}.pt"

    def get(self, key: str) -> Tensor | None:
        """The stored embedding (C, h, w) in fp16, or None."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            embedding = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return None
        valid = (isinstance(embedding, Tensor) and tuple(embedding.shape) == self.embedding_shape
                 and embedding.dtype == torch.float16)
        return embedding if valid else None

    def put(self, key: str, embedding: Tensor) -> None:
        """Store embedding (C, h, w) as fp16 (a copy, so no larger storage is pickled with it)."""
        cli.write_atomic(
            self.path(key), partial(torch.save, embedding.detach().to("cpu", torch.float16).clone()), durable=True
        )

    @torch.no_grad()
    def embed(self, sam: FrozenSam, images: Tensor, image_ids: Sequence[str]) -> Tensor:
        """Embeddings (B, C, h, w) float32 on images' device for images (B, 3, S, S).

        Cached rows are read; only the missing ones go through SAM, then are stored. Every row is
        returned at fp16 precision, so results do not depend on whether the cache was warm.
        """
        if sam is not self._sam():
            raise ValueError("EmbeddingCache.embed: this cache was made for another SAM model; make one per SAM")
        if len(image_ids) != images.shape[0]:
            raise ValueError(f"{len(image_ids)} image ids for {images.shape[0]} images")
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(f"images are {tuple(images.shape[-2:])} but this cache holds {self.image_size}² images")
        pixels = images.detach().to("cpu")
        keys = [self.key(i, image) for i, image in zip(image_ids, pixels)]
        rows: list[Tensor | None] = [self.get(k) for k in keys]
        missing = [n for n, row in enumerate(rows) if row is None]
        if missing:
            computed = sam_image_embeddings(sam, images[missing])
            for n, embedding in zip(missing, computed):
                self.put(keys[n], embedding)
                rows[n] = embedding.to("cpu", torch.float16)
        return torch.stack(rows).to(images.device, torch.float32)


def embed_targets(sam: FrozenSam, images: Tensor, image_ids: Sequence[str], cache: EmbeddingCache | None) -> Tensor:
    """SAM image embeddings (B, C, h, w) float32 of targets (B, 3, S, S), on the images' device.

    The one way every script embeds targets: through the on-disk cache when there is one, else
    computed here; either way at the fp16 precision the cache stores, so --no-cache never moves a
    number. image_ids name the images in the cache (which also keys them by their pixels).
    """
    if cache is not None:
        return cache.embed(sam, images, image_ids).to(images.device)
    return sam_image_embeddings(sam, images).to(torch.float16).float()
