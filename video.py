"""Video object segmentation with VRP-SAM (paper Appendix, Table 16: DAVIS 2017 val, J&F 64.8).

    python video.py --dataset davis2017 --checkpoint runs/coco-fold0-mask-resnet50/best.pt --data-root data
    python video.py                                    # the embedded synthetic videos, no download
    python video.py --propagate                        # + the previous frame's prediction as a reference
    python evaluate.py --dataset davis2017 ...         # the same: evaluate.py hands video datasets here

The semi-supervised protocol: each object's first-frame mask (or a point, scribble or box simulated
from it, ``--label``) is the reference, every later frame a target. Each object is segmented on
its own; the objects are merged per pixel (the object with the highest logit above 0, else
background). Predictions are written as palette PNGs at each frame's own resolution in DAVIS's
results layout (``<out>/<sequence>/<frame>.png``), so the official toolkit
(davisvideochallenge/davis2017-evaluation) can score them, and are scored here with the same
J&F, reimplemented in numpy/scipy and checked against the toolkit's own values in
tests/test_video.py.

A rerun into the same folder writes beside it (``.<out>.partial-<pid>``) and takes its place only
when finished, so a failed or killed run leaves the earlier result whole (and the next run tidies
up after it); a folder holding anything video.py did not write is refused, never replaced.

``--propagate`` is not in the paper: the previous frame with the object's predicted mask becomes a
second reference (k-shot concatenation, Table 7's mechanism), as Matcher and SegGPT do for video.

Exposes the metric (``region_similarity``, ``boundary_map``, ``boundary_f_measure``,
``jf_statistics``, ``score_sequence``, ``JFMeter``), the loop (``segment_sequence``,
``evaluate_videos``), ``write_palette_png`` and ``main``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import io
import json
import logging
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

import cli
import data
import prompts
from prompts import IGNORE
from model import (SAM_SPECS, SAM_TYPES, EmbeddingCache, autocast, build_from_checkpoint, embed_targets,
                   load_checkpoint, sam_family, sam_switch_problem, upsample_logits)
from sam2_backend import MemoryTracker, frame_features
from synthetic import SyntheticVideos

log = logging.getLogger(__name__)

VIDEO_DATASETS = ("davis2017", "synthetic-video")
# --memory (SAM 2 runs): what seeds SAM 2's memory in frame 0, and whether VRP prompts every frame.
MEMORY_MODES = ("first", "every", "gt")
BOUNDARY_TOLERANCE = 0.008  # of the image diagonal: the DAVIS toolkit's default for F
MEASURES = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
PAPER_TABLE16 = "paper (Table 16, DAVIS 2017 val): J&F 64.8, J 62.1, F 67.4; PerSAM 60.3"
RESULTS_FILE = "results.json"
PARTIAL_MARKER = ".video-partial"  # in a results folder still being written (its writer's pid)
TOOLKIT_CSVS = ("global_results-*.csv", "per-sequence_results-*.csv")  # the toolkit's cache of its scores


# ---------------------------------------------------------------------------------------------
# The DAVIS metric (Pont-Tuset et al. 2017), as the official toolkit computes it.
# J: region similarity (Jaccard). F: boundary F-measure of 1-pixel boundary maps matched within
# a disk of ceil(0.008 x image diagonal) pixels. Per object over all frames but the first (the
# given one) and the last; then Mean, Recall (share of frames above 0.5) and Decay (first
# quarter minus last quarter) per object, averaged over all objects of all sequences.
# ---------------------------------------------------------------------------------------------

def region_similarity(truth: np.ndarray, prediction: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """J of binary masks (..., H, W) -> (...): |truth ∩ prediction| / |truth ∪ prediction| over the
    pixels that are not void; 1 where both are empty (nothing to find, nothing found)."""
    truth, prediction = truth.astype(bool), prediction.astype(bool)
    valid = np.ones_like(truth) if void is None else ~void.astype(bool)
    intersection = (truth & prediction & valid).sum(axis=(-2, -1))
    union = ((truth | prediction) & valid).sum(axis=(-2, -1))
    return np.where(union == 0, 1.0, intersection / np.maximum(union, 1))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) bool, 1-pixel-wide boundaries (Martin et al.'s seg2bmap, as DAVIS uses it).

    A pixel is on the boundary where the mask differs from its right, lower or lower-right
    neighbour (outside the image counts as background), so boundaries sit half a pixel towards the
    origin. In the last row only the right neighbour counts, in the last column only the lower
    one, and the bottom-right pixel never does: the toolkit's convention, kept for equal numbers.
    """
    mask = mask.astype(bool)
    right, below, diagonal = (np.zeros_like(mask) for _ in range(3))
    right[:, :-1] = mask[:, 1:]
    below[:-1, :] = mask[1:, :]
    diagonal[:-1, :-1] = mask[1:, 1:]
    boundary = (mask ^ right) | (mask ^ below) | (mask ^ diagonal)
    boundary[-1, :] = mask[-1, :] ^ right[-1, :]
    boundary[:, -1] = mask[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def _within(points: np.ndarray, reference: np.ndarray, radius: float) -> int:
    """How many True pixels of `points` lie within `radius` (Euclidean) of a True pixel of
    `reference`: the toolkit's dilation of `reference` by a disk of that radius, counted on
    `points`. The distance transform gives the same set as the dilation (a pixel at squared
    distance d² is inside the disk iff d² <= r²), on the boxes where both maps have pixels."""
    rows = np.flatnonzero((points | reference).any(axis=1))
    cols = np.flatnonzero((points | reference).any(axis=0))
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    distance = ndimage.distance_transform_edt(~reference[window])  # to the nearest reference pixel
    return int((distance[points[window]] <= radius).sum())


def boundary_f_measure(truth: np.ndarray, prediction: np.ndarray, void: np.ndarray | None = None,
                       tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """F of one frame's binary masks (H, W): the harmonic mean of boundary precision (predicted
    boundary pixels within `tolerance` of a true one) and recall (the converse).

    tolerance: a fraction of the image diagonal (rounded up to whole pixels) when < 1, else pixels.
    void: pixels removed from both masks before their boundaries are taken.
    Both boundaries empty: F = 1; exactly one empty: F = 0.
    """
    truth, prediction = truth.astype(bool), prediction.astype(bool)
    if void is not None:
        truth, prediction = truth & ~void.astype(bool), prediction & ~void.astype(bool)
    radius = tolerance if tolerance >= 1 else math.ceil(tolerance * np.linalg.norm(truth.shape))
    truth_boundary, predicted_boundary = boundary_map(truth), boundary_map(prediction)
    n_truth, n_predicted = int(truth_boundary.sum()), int(predicted_boundary.sum())
    if n_truth == 0 or n_predicted == 0:
        return 1.0 if n_truth == n_predicted else 0.0  # precision or recall is 0 when one is empty
    precision = _within(predicted_boundary, truth_boundary, radius) / n_predicted
    recall = _within(truth_boundary, predicted_boundary, radius) / n_truth
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def jf_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame J or F, as the toolkit reports them.

    recall: the share of frames scoring above 0.5. decay: the mean over the first quarter of the
    frames minus the mean over the last quarter (quarters cut at round(linspace(1, N, 5)), each
    holding its end frame, like the toolkit's bins).
    """
    per_frame = np.asarray(per_frame, dtype=np.float64)
    with warnings.catch_warnings():  # a sequence of 2 frames has no scored frame: NaN, as the toolkit
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = float(np.nanmean(per_frame))
        recall = float(np.nanmean(per_frame > 0.5))
        cuts = (np.round(np.linspace(1, len(per_frame), 5) + 1e-10) - 1).astype(int)
        first, last = per_frame[cuts[0]:cuts[1] + 1], per_frame[cuts[3]:cuts[4] + 1]
        decay = float(np.nanmean(first) - np.nanmean(last))
    return mean, recall, decay


def count_objects(first: np.ndarray) -> int:
    """n, a sequence's objects being 1..n: the largest id of its first-frame annotation (H, W), void
    aside, as the toolkit counts them; 0 when that frame holds no object."""
    return int(first[first != IGNORE].max(initial=0))


def score_sequence(
    truth: np.ndarray, prediction: np.ndarray, *, exclude_void: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per-object, per-frame J and F of one sequence -> two (n_objects, T - 2) arrays.

    truth, prediction: (T, H, W) integer id maps (0 background, 1..n objects; truth may hold 255
    void). The objects are 1..n with n the largest id of the first frame, as in the toolkit (an id
    missing from the first frame is an object never seen). The first and last frames are not scored.
    exclude_void: leave 255 pixels out of J and F. The toolkit's semi-supervised evaluation does
    not (it reads void as background), so the default keeps numbers equal to its numbers.
    """
    truth, prediction = np.asarray(truth), np.asarray(prediction)
    if truth.shape != prediction.shape or truth.ndim != 3:
        raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} must both be (T, H, W)")
    num_objects = count_objects(truth[0])
    if prediction.max(initial=0) > num_objects:
        raise ValueError(f"the prediction holds object id {int(prediction.max())} but the first frame has only "
                         f"{num_objects} object(s); the toolkit refuses such results")
    truth, prediction = truth[1:-1], prediction[1:-1]
    void = (truth == IGNORE) if exclude_void else None
    j = np.zeros((num_objects, len(truth)))
    f = np.zeros((num_objects, len(truth)))
    for k, object_id in enumerate(range(1, num_objects + 1)):
        j[k] = region_similarity(truth == object_id, prediction == object_id, void)
        for t in range(len(truth)):
            f[k, t] = boundary_f_measure(truth[t] == object_id, prediction[t] == object_id,
                                         None if void is None else void[t])
    return j, f


class JFMeter:
    """Per-object J and F over sequences; `summary` gives the toolkit's global table.

    Objects are named like the toolkit's per-object rows, "<sequence>_<id>".
    """

    def __init__(self, *, exclude_void: bool = False):
        self.exclude_void = exclude_void
        self.per_object: dict[str, dict[str, tuple[float, float, float]]] = {}

    def update(self, sequence: str, truth: np.ndarray, prediction: np.ndarray) -> None:
        j, f = score_sequence(truth, prediction, exclude_void=self.exclude_void)
        for k in range(len(j)):
            self.per_object[f"{sequence}_{k + 1}"] = {"J": jf_statistics(j[k]), "F": jf_statistics(f[k])}

    def summary(self) -> dict[str, float]:
        """{measure: value in [0, 1]} for MEASURES: means over all objects; J&F-Mean = (J-Mean + F-Mean) / 2."""
        if not self.per_object:
            return {name: math.nan for name in MEASURES}
        stats = {m: np.array([o[m] for o in self.per_object.values()]) for m in ("J", "F")}  # (objects, 3)
        out = {}
        for m in ("J", "F"):
            mean, recall, decay = stats[m].mean(axis=0)
            out.update({f"{m}-Mean": float(mean), f"{m}-Recall": float(recall), f"{m}-Decay": float(decay)})
        out["J&F-Mean"] = (out["J-Mean"] + out["F-Mean"]) / 2
        return {name: out[name] for name in MEASURES}


def write_palette_png(path: Path, ids: np.ndarray) -> None:
    """Write an (H, W) id map as a palette PNG with DAVIS's colours (the results format), atomically."""
    if ids.min(initial=0) < 0 or ids.max(initial=0) > 255:
        raise ValueError(f"object ids must be 0..255 to fit a palette PNG, got {ids.min()}..{ids.max()}")
    image = Image.fromarray(np.asarray(ids, np.uint8), mode="P")
    image.putpalette(data.davis_palette().ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    cli.write_atomic(Path(path), buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# The protocol: first-frame references, every later frame a target, objects merged per pixel.
# ---------------------------------------------------------------------------------------------

def _reference_mask(annotation: np.ndarray, object_id: int, size: int) -> np.ndarray:
    """(S, S) uint8 {0, 1, 255}: the object at the network's size, as data.py sizes references
    (nearest neighbour; an object that resizing would erase keeps every cell it touches)."""
    mask = data.resize_mask(data.object_mask(annotation, object_id), size)
    if not (mask == 1).any():
        mask[data.resize_soft(annotation == object_id, size) > 0] = 1
    return mask


def sequence_key(sequence: str) -> int:
    """A number for a sequence name, to key its random draws (stable across runs and subsets)."""
    return int(hashlib.sha256(sequence.encode()).hexdigest()[:12], 16)


def merge_objects(logits: torch.Tensor, object_ids) -> np.ndarray:
    """Logits (n, H, W) of n objects -> (H, W) uint8 ids: per pixel the object with the highest
    logit if that logit is above 0, else background (0)."""
    if len(object_ids) == 0:
        return np.zeros(tuple(logits.shape[-2:]), np.uint8)
    best, which = logits.float().max(dim=0)
    ids = torch.as_tensor(list(object_ids), dtype=torch.uint8, device=logits.device)[which]
    return torch.where(best > 0, ids, torch.zeros_like(ids)).cpu().numpy()


class MemorySegmenter:
    """VRP-SAM's prompts and SAM 2's memory over one video, a frame at a time (--memory):

        follower = MemorySegmenter(model, num_frames=T, references=None)   # or encode_references(...)
        follower.start(frame0, masks)      # (3, S, S) network image, (n, h, w) bool: each object in frame 0
        follower.step(frame)               # each later frame -> low-res logits (n, 1, s, s)

    The frame's SAM 2 features are computed once and shared by its n objects
    (sam2_backend.frame_features); the memory is sam2_backend.MemoryTracker's, bounded whatever the
    video's length. references: ReferenceFeatures of n reference sets (one per object) to add VRP's
    prompt tokens on every frame (--memory every); None follows with the memory alone.
    SAM 2 runs in float32, as SAM2VideoPredictor, so that its masks are the official predictor's.
    """

    def __init__(self, model, *, num_frames: int, references=None) -> None:
        if sam_family(model.sam) != "sam2":
            raise ValueError("SAM 2's memory needs a VRP-SAM on a SAM 2 (train.py --sam sam2_tiny or sam2.1_*)")
        self.model, self.references = model, references
        self.device = next(model.learnable_parameters()).device
        self.tracker = MemoryTracker(model.sam, num_frames=num_frames)
        self.num_objects = 0

    def _features(self, image: torch.Tensor):
        return frame_features(self.model.sam, image[None].to(self.device).float(), self.num_objects)

    @torch.no_grad()
    def start(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Frame 0 (3, S, S) with each object's mask (n, h, w) bool, any size -> (n, 1, s, s) logits."""
        self.num_objects = len(masks)
        return self.tracker.start(self._features(image), masks.to(self.device))

    @torch.no_grad()
    def step(self, image: torch.Tensor) -> torch.Tensor:
        """The next frame (3, S, S) -> (n, 1, s, s) low-res logits of its n objects."""
        tokens = None
        if self.references is not None:
            target = image[None].to(self.device).expand(self.num_objects, -1, -1, -1)
            with autocast(self.device):
                tokens = self.model.target_prompt_embeddings(target, self.references).float()  # (n, N, 256)
        return self.tracker.step(self._features(image), prompt_tokens=tokens)


def memory_logits(low_res: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """SAM 2's low-res logits (n, 1, s, s) -> (n, H, W) at a frame's size, resized as
    SAM2VideoPredictor resizes its masks to the video's (bilinear, align_corners=False)."""
    return F.interpolate(low_res.float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0].cpu()


@torch.no_grad()
def segment_sequence(model, source, sequence: str, *, label: str = "mask", propagate: bool = False,
                     memory: str | None = None, image_size: int, cache: EmbeddingCache | None = None,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Segment every object of a sequence from its first-frame annotation.

    Returns truth and prediction, (T, H, W) uint8 id maps (the prediction's frame 0 is the given
    annotation), and the ids of 1..n (n the first frame's largest id) absent from the first frame:
    they have no reference and are predicted nowhere.
    label: the first-frame reference is this simulated label of each object (prompts.py), drawn
        from episode_rng(seed, sequence_key(sequence), object_id): the same label whichever
        sequences run with it.
    propagate: from frame 2 on, frame t-1 with the object's predicted mask is a second reference
        (k = 2, the prompts concatenated as in Table 7); an object predicted nowhere in t-1 keeps
        only its first-frame reference. Not in the paper.
    memory (a SAM 2 model; MEMORY_MODES): later frames are segmented by SAM 2's memory of the frames
        before them (MemorySegmenter), seeded in frame 0 by VRP's prediction of each object from its
        reference ("first"; "every": VRP's prompts on every frame too) or by its true mask ("gt").
    The frame's SAM embedding is computed once (or read from `cache`) and shared by its objects.
    """
    device = next(model.learnable_parameters()).device
    model.eval()
    image, first = source.load_frame(sequence, 0)
    num_frames = len(source.frame_ids(sequence))
    num_objects = count_objects(first)
    present = [i for i in range(1, num_objects + 1) if (first == i).any()]
    missing = [i for i in range(1, num_objects + 1) if i not in present]
    first_image = torch.from_numpy(data.image_array(image, image_size))  # (3, S, S)
    first_labels = torch.from_numpy(np.stack([
        prompts.simulate_annotation(_reference_mask(first, i, image_size), label,
                                    prompts.episode_rng(seed, sequence_key(sequence), i)).mask
        for i in present]).astype(np.float32)) if present else None  # (n, S, S)
    follower = None
    if memory is not None and present:
        if memory == "gt":
            seeds = torch.from_numpy(np.stack([first == i for i in present]))  # (n, H, W): the truth
        else:  # VRP segments frame 0 from each object's reference, as it segments any target
            n, batch = len(present), first_image[None].to(device)
            with autocast(device):
                embedding = embed_targets(model.sam, batch, [source.image_id(sequence, 0)], cache)
                seeds = model(batch.expand(n, -1, -1, -1), first_image[None, None].expand(n, -1, -1, -1, -1).to(device),
                              first_labels[:, None].to(device), image_embeddings=embedding.expand(n, -1, -1, -1)) > 0
        references = None
        if memory == "every":
            with autocast(device):
                references = model.encode_references(first_image[None, None].expand(len(present), -1, -1, -1, -1)
                                                     .to(device), first_labels[:, None].to(device))
        follower = MemorySegmenter(model, num_frames=num_frames, references=references)
        follower.start(first_image, seeds)
    truths = [first]
    predictions = [np.where(np.isin(first, present), first, 0).astype(np.uint8)]
    previous_image = None
    for t in range(1, num_frames):
        image, annotation = source.load_frame(sequence, t)
        if annotation.shape != first.shape:
            raise ValueError(f"sequence {sequence}: frame {source.frame_ids(sequence)[t]} is {annotation.shape[1]}x"
                             f"{annotation.shape[0]} but its first frame is {first.shape[1]}x{first.shape[0]}; "
                             "all frames of a sequence must have one size")
        target = torch.from_numpy(data.image_array(image, image_size))
        logits = torch.full((len(present), *first.shape), -torch.inf)
        if follower is not None:
            logits = memory_logits(follower.step(target), first.shape)
        elif present:
            with autocast(device):
                batch = target[None].to(device)
                embedding = embed_targets(model.sam, batch, [source.image_id(sequence, t)], cache)
            # The references of each object: the first frame, plus (propagate) frame t-1 with its prediction.
            groups: dict[int, list[tuple[int, torch.Tensor, torch.Tensor]]] = {1: [], 2: []}
            for k, object_id in enumerate(present):
                images, labels = [first_image], [first_labels[k]]
                if propagate and previous_image is not None:
                    mask = _reference_mask(predictions[-1], object_id, image_size) == 1
                    if mask.any():
                        images.append(previous_image)
                        labels.append(torch.from_numpy(mask.astype(np.float32)))
                groups[len(images)].append((k, torch.stack(images), torch.stack(labels)))
            for members in groups.values():
                if not members:
                    continue
                rows = [k for k, _, _ in members]
                with autocast(device):
                    low = model(batch.expand(len(rows), -1, -1, -1),
                                torch.stack([m[1] for m in members]).to(device),
                                torch.stack([m[2] for m in members]).to(device),
                                image_embeddings=embedding.expand(len(rows), -1, -1, -1))  # (m, S, S)
                logits[rows] = upsample_logits(low.float()[:, None], first.shape)[:, 0].cpu()
        truths.append(annotation)
        predictions.append(merge_objects(logits, present))
        previous_image = target
    return np.stack(truths), np.stack(predictions), missing


def foreign_entries(folder: Path) -> list[Path]:
    """What in `folder` video.py did not write: anything but its results.json, the sequence folders
    of PNGs that results.json names, the toolkit's CSVs (its cache of an earlier scoring) and the
    marker of a partial result. Without a readable results.json, everything in it is foreign."""
    try:
        sequences = set(json.loads((folder / RESULTS_FILE).read_text())["sequence_names"])
    except (OSError, ValueError, KeyError, TypeError):
        return sorted(folder.iterdir())
    foreign = []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            foreign.append(entry)
        elif entry.is_file() and (entry.name in (RESULTS_FILE, PARTIAL_MARKER)
                                  or any(entry.match(pattern) for pattern in TOOLKIT_CSVS)):
            continue
        elif entry.is_dir() and entry.name in sequences:
            foreign += [f for f in sorted(entry.iterdir()) if f.suffix != ".png" or not f.is_file() or f.is_symlink()]
        else:
            foreign.append(entry)
    return foreign


def check_output_folder(out: Path, foreign_entries: Callable[[Path], list[Path]] = foreign_entries,
                        writer: str = "video.py") -> None:
    """Refuse an --out that is not new, empty or an earlier result of `writer` (whose files are all
    but `foreign_entries`): a rerun replaces the whole folder, so it must hold nothing the user made."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; pass a folder for the results")
    foreign = foreign_entries(out) if out.is_dir() else []
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise FileExistsError(f"--out {out} already holds files that are not results of {writer} ({foreign[0]}{more}); "
                              "pass an empty or new folder")


def _beside(out: Path, kind: str) -> Path:
    """The hidden sibling of `out` where this run writes its results ("partial") or sets the
    earlier ones aside ("replaced"), named by its pid so that the next run knows when it ended."""
    return out.parent / f".{out.name}.{kind}-{os.getpid()}"


def _run_ended(folder: Path) -> bool:
    """Whether the run that named `folder` (.<out>.<kind>-<pid>) has ended: its process is gone, or it
    is this process, whose runs follow one another. Unsure (another user's process): False."""
    pid = folder.name.rpartition("-")[2]
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False
    return False


def tidy_interrupted_runs(out: Path, foreign_entries: Callable[[Path], list[Path]] = foreign_entries,
                          results_file: str = RESULTS_FILE) -> list[str]:
    """Undo what a killed run left beside `out` (see `replace_atomically`), leaving runs still going
    alone: its partial results are removed, and an earlier result it had set aside is put back if it
    died before moving its own in, else removed. Returns a note for each result put back.
    foreign_entries, results_file: the writer's rule for what is not its own, and the file it
    writes last (video.py's by default; segment.py --video passes its own)."""
    notes = []
    for aside in sorted(out.parent.glob(f".{glob.escape(out.name)}.replaced-*")):
        if not aside.is_dir() or not _run_ended(aside) or foreign_entries(aside):
            continue  # not ours to touch
        if out.exists():
            shutil.rmtree(aside)  # killed after its result took the place of this one
        else:
            os.rename(aside, out)
            notes.append(f"{out}: put back the earlier result, which a run killed while replacing it had set aside")
    for partial in sorted(out.parent.glob(f".{glob.escape(out.name)}.partial-*")):
        if not partial.is_dir() or not _run_ended(partial):
            continue
        if (partial / PARTIAL_MARKER).is_file() or not any(partial.iterdir()):  # empty: killed before marking it
            shutil.rmtree(partial)
    if (out / results_file).is_file():
        (out / PARTIAL_MARKER).unlink(missing_ok=True)  # killed right after moving its finished result in
    return notes


@contextlib.contextmanager
def replace_atomically(out: Path, foreign_entries: Callable[[Path], list[Path]] = foreign_entries,
                       writer: str = "video.py"):
    """Yield a new folder beside `out` (.<out>.partial-<pid>, marked as ours) to write the results
    into. When the block ends, it takes the place of `out`: the earlier result is renamed aside, the
    new one renamed in, the earlier one deleted; a reader never sees a mix of two runs. When the
    block fails or is interrupted, the new folder is removed and `out` is as it was; a kill leaves
    what `tidy_interrupted_runs` cleans up. foreign_entries, writer: as check_output_folder."""
    partial, aside = _beside(out, "partial"), _beside(out, "replaced")
    try:
        partial.mkdir(parents=True)
        (partial / PARTIAL_MARKER).write_text(f"{os.getpid()}\n")
    except OSError as error:
        raise cli.write_error(partial, error) from error
    try:
        yield partial
        check_output_folder(out, foreign_entries, writer)  # a file added to `out` during the run is not ours to delete
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    try:
        if out.exists():
            os.rename(out, aside)
        os.rename(partial, out)
    except OSError as error:
        if aside.exists() and not out.exists():
            os.rename(aside, out)
        shutil.rmtree(partial, ignore_errors=True)
        raise cli.write_error(out, error) from error
    shutil.rmtree(aside, ignore_errors=True)
    (out / PARTIAL_MARKER).unlink()


def check_first_frames(source) -> list[str]:
    """The sequences whose first-frame annotation holds no object (background or void only): they are
    skipped, since the semi-supervised protocol, like the DAVIS toolkit, takes every object from frame
    0. Raises when that is every sequence: there would be nothing to score."""
    empty = [sequence for sequence in source.sequences if count_objects(source.load_frame(sequence, 0)[1]) == 0]
    if empty and len(empty) == len(source.sequences):
        raise ValueError(f"no object to follow: the first-frame annotation of every sequence ({name_list(empty)}) "
                         "holds no object, and the semi-supervised protocol, like the DAVIS toolkit, takes each "
                         "object from frame 0; check the annotations, or choose other --sequences")
    return empty


def evaluate_videos(model, source, *, out: Path, label: str = "mask", propagate: bool = False,
                    memory: str | None = None, image_size: int, cache: EmbeddingCache | None = None, seed: int = 0,
                    desc: str = "video") -> dict:
    """Segment every sequence of `source`, write its palette PNGs under out/<sequence>/<frame>.png
    and score it; returns the toolkit's global table (fractions), per-object rows, timing, notes.

    A sequence whose first frame holds no object is skipped (named in "skipped" and the notes): it has
    no reference and no object to score, as in the toolkit. Its PNGs, all background, are still
    written, so the folder holds every sequence the toolkit will look for.
    """
    meter, notes, skipped = JFMeter(), [], []
    seconds, target_frames = 0.0, 0
    for sequence in tqdm(source.sequences, desc=desc, leave=False, dynamic_ncols=True):
        start = time.perf_counter()
        truth, prediction, missing = segment_sequence(model, source, sequence, label=label, propagate=propagate,
                                                      memory=memory, image_size=image_size, cache=cache, seed=seed)
        seconds += time.perf_counter() - start
        target_frames += len(truth) - 1
        if count_objects(truth[0]) == 0:
            skipped.append(sequence)
            notes.append(f"{sequence}: skipped: the annotation of its first frame ({source.frame_ids(sequence)[0]}) "
                         "holds no object, and the protocol, like the DAVIS toolkit, takes every object from it")
        elif missing:
            notes.append(f"{sequence}: object id(s) {', '.join(map(str, missing))} absent from the first frame have no "
                         "reference and are predicted nowhere (the toolkit still scores them)")
        for frame, ids in zip(source.frame_ids(sequence), prediction):
            write_palette_png(out / sequence / f"{frame}.png", ids)
        meter.update(sequence, truth, prediction)
    return {"summary": meter.summary(), "per_object": meter.per_object, "sequences": len(source.sequences),
            "sequence_names": list(source.sequences), "skipped": skipped,
            "objects": len(meter.per_object), "target_frames": target_frames,
            "seconds_per_frame": seconds / max(target_frames, 1), "notes": notes}


# ---------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------



def build_parser() -> argparse.ArgumentParser:
    """Every value is checked here, at parse time (cli.py's types), before anything is built or written."""
    parser = cli.ArgumentParser(prog="video.py", formatter_class=cli.HelpFormatter,
                                description="Video object segmentation with VRP-SAM (Table 16): DAVIS 2017 J&F.")
    group = parser.add_argument_group("what to evaluate")
    group.add_argument("--dataset", choices=VIDEO_DATASETS, default="synthetic-video",
                       help="davis2017 (Table 16) or the embedded synthetic videos")
    group.add_argument("--checkpoint", type=Path, default=None,
                       help=f"a train.py checkpoint (default for synthetic-video: {cli.MAIN_JOB_CHECKPOINT}; "
                            "required for davis2017, e.g. a COCO-20i model)")
    group.add_argument(
        "--label", choices=prompts.LABEL_KINDS, default="mask",
        help="what the first frame gives of each object: its mask, or a point / scribble / box simulated from it",
    )
    group.add_argument("--propagate", action="store_true",
                       help="not in the paper: also use the previous frame and its prediction as a second reference")
    group.add_argument("--memory", choices=MEMORY_MODES, default=None,
                       help="SAM 2 runs, not in the paper: later frames read SAM 2's memory of the earlier ones, "
                            "seeded in frame 0 by VRP's prediction (first), plus VRP's prompts on every frame (every), "
                            "or by the true first-frame mask (gt, SAM 2 alone: the upper bound)")
    group = parser.add_argument_group("data")
    group.add_argument("--data-root", type=Path, default=Path("data"), help="davis2017: the folder holding DAVIS/")
    group.add_argument("--split", default="val", help="davis2017: the ImageSets/2017 list (Table 16: val)")
    group.add_argument(
        "--sequences", default=None, help="davis2017: a comma list of sequences (default: the whole list)"
    )
    group.add_argument("--videos", type=cli.positive_int, default=30, help="synthetic-video: number of videos")
    group.add_argument(
        "--frames", type=frame_range, default=(10, 20),
        help="synthetic-video: frames per video, LOW-HIGH (default: 10-20)",
    )
    group.add_argument(
        "--fold",
        type=cli.int_range(0, data.NUM_FOLDS - 1),
        default=None,
        help="synthetic-video: objects of this fold's test classes (default: the checkpoint's fold, unseen in "
        "its training)",
    )
    group.add_argument(
        "--seed", type=cli.nonnegative_int, default=0, help="the simulated labels (and the synthetic videos)"
    )
    group = parser.add_argument_group("model")
    cli.add_run_sam_args(group, SAM_TYPES)
    group.add_argument(
        "--image-size", type=cli.positive_int, default=None, help="network input size S (default: the run's)"
    )
    cli.add_runtime_args(group, workers=False)
    group = parser.add_argument_group("output")
    group.add_argument("--out", type=Path, default=None,
                       help="folder of the result PNGs (<out>/<sequence>/<frame>.png) and results.json "
                            "(default: beside the checkpoint, video-<dataset>-<label>[-propagate])")
    return parser


def frame_range(text: str) -> tuple[int, int]:
    """An argparse type: "LOW-HIGH" frames per synthetic video, 3 <= LOW <= HIGH."""
    low, _, high = text.partition("-")
    if not (low.isdigit() and high.isdigit() and 3 <= int(low) <= int(high)):
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH with 3 <= LOW <= HIGH, e.g. 10-20, got {text!r}")
    return int(low), int(high)


def main(argv=None) -> dict:
    return cli.run_main("video.py", run, build_parser().parse_args(argv))


def build_source(args: argparse.Namespace, run_args: dict):
    if args.dataset == "davis2017":
        sequences = None if args.sequences is None else [s.strip() for s in args.sequences.split(",") if s.strip()]
        if sequences == []:
            raise ValueError(f"--sequences {args.sequences!r} names no sequence: pass a comma list such as "
                             f"bear,blackswan, or leave it out for the whole --split {args.split} list")
        source = data.DavisVideos(args.data_root, split=args.split, sequences=sequences)
        if not source.sequences:
            raise ValueError(f"{Path(source.location) / 'ImageSets' / '2017' / f'{args.split}.txt'} lists no sequence: "
                             "write one name per line, or choose another --split")
        return source
    fold = run_args.get("fold", 0) if args.fold is None else args.fold
    return SyntheticVideos(classes=data.fold_classes("synthetic", fold, "test"), seed=args.seed, num_videos=args.videos,
                           num_frames=args.frames)


def run(args: argparse.Namespace) -> dict:
    if args.checkpoint is None:
        if args.dataset == "davis2017":
            raise ValueError("--dataset davis2017 needs --checkpoint PATH: a model trained by train.py "
                             "(e.g. python train.py --dataset coco --fold 0)")
        args.checkpoint = cli.MAIN_JOB_CHECKPOINT
        if not args.checkpoint.is_file():
            raise FileNotFoundError(f"{args.checkpoint} not found: train it with `python train.py --dataset synthetic` "
                                    "or pass --checkpoint PATH")
    state = load_checkpoint(args.checkpoint)
    run_args = state.get("args", {})
    other_sam = args.sam is not None and args.sam != state["config"]["sam"]
    if other_sam and (problem := sam_switch_problem(state["config"]["sam"], args.sam, source=str(args.checkpoint))):
        raise ValueError(problem)
    check_memory_args(args, args.sam or state["config"]["sam"])
    source = build_source(args, run_args)  # checks the data before the model is built
    check_first_frames(source)
    tag = (f"video-{args.dataset}-{args.label}{'-propagate' if args.propagate else ''}"
           + (f"-sam-{args.sam}" if other_sam else "") + (f"-memory-{args.memory}" if args.memory else ""))
    out = args.out or args.checkpoint.parent / tag
    if out.is_symlink():
        out = out.resolve()  # replaced as a folder: the link's target, never the link
    for note in tidy_interrupted_runs(out):
        print(note)
    check_output_folder(out)
    image_size = args.image_size or run_args.get("image_size") or 512
    device = torch.device(args.device)
    model = build_from_checkpoint(state, sam=args.sam, sam_checkpoint=args.sam_checkpoint,
                                  backbone_weights=args.backbone_weights, source=str(args.checkpoint)).to(device)
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir, model.sam, image_size)

    with replace_atomically(out) as partial:  # an earlier result in `out` stays whole until this one is
        result = evaluate_videos(model, source, out=partial, label=args.label, propagate=args.propagate,
                                 memory=args.memory, image_size=image_size, cache=cache, seed=args.seed,
                                 desc=f"{args.dataset} {args.label}")
        result.update(dataset=args.dataset, split=args.split if args.dataset == "davis2017" else None,
                      label=args.label, propagate=args.propagate, memory=args.memory, checkpoint=str(args.checkpoint),
                      seed=args.seed, sam=model.config.sam, image_size=image_size, device=str(device))
        cli.write_json(partial / RESULTS_FILE, result)
    for note in result["notes"]:
        print(note)
    print(format_table(result, out))
    return result


MEMORY_NOTES = {"first": ", which VRP segments in frame 0; then SAM 2's memory (--memory first)",
                "every": ", which VRP segments in frame 0; then SAM 2's memory + VRP's prompts (--memory every)",
                "gt": "; SAM 2's memory seeded with it (--memory gt, no VRP: the upper bound)"}


def is_sam2(sam: str) -> bool:
    """Whether the SAM type `sam` (a key of model.SAM_SPECS) is a SAM 2 / 2.1, whose memory --memory reads."""
    return SAM_SPECS[sam].family == "sam2"


def check_memory_args(args: argparse.Namespace, sam: str) -> None:
    """--memory's flags, against the run's SAM type `sam`: one line naming the flag, before anything is built."""
    if args.memory is None:
        return
    if args.propagate:
        raise ValueError(f"--memory {args.memory} and --propagate both carry earlier frames forward; choose one: "
                         "--propagate adds the previous frame as a second VRP reference, --memory follows each "
                         "object with SAM 2's memory of the earlier frames")
    if args.memory == "gt" and args.label != "mask":
        raise ValueError(f"--memory gt seeds SAM 2 with the true first-frame mask, so --label {args.label} would not "
                         f"be used: leave --label out, or use --memory first / every (VRP reads the {args.label})")
    if not is_sam2(sam):
        raise ValueError(f"--memory {args.memory}: {args.checkpoint} was trained on --sam {sam}, which has no memory "
                         "(SAM 1 / MobileSAM); use a run on a SAM 2: python train.py --dataset synthetic --sam "
                         "sam2_tiny, or --sam sam2.1_hiera_t (and the others) on real data")


def format_table(result: dict, out: Path) -> str:
    name = f"{result['dataset']} {result['split']}" if result["split"] else result["dataset"]
    reference = f"{result['label']} of the first frame" + (
        " + previous frame's prediction (--propagate)" if result["propagate"] else ""
    ) + MEMORY_NOTES.get(result.get("memory"), "")
    lines = [f"VRP-SAM video object segmentation on {name} (Table 16's protocol), reference: {reference}",
             "".join(f"{m:>10}" for m in MEASURES),
             "".join(f"{100 * result['summary'][m]:10.1f}" for m in MEASURES),
             f"{result['sequences']} sequences{skipped_note(result['skipped'])}, {result['objects']} objects, "
             f"{result['target_frames']} target frames, "
             f"{result['seconds_per_frame']:.3f} s per frame ({result['device']}); PNGs and {RESULTS_FILE} in {out}"]
    if result["dataset"] == "davis2017":
        lines.append(PAPER_TABLE16)
    return "\n".join(lines)


def skipped_note(skipped: list[str]) -> str:
    return f" ({len(skipped)} skipped, no object in the first frame: {name_list(skipped)})" if skipped else ""


def name_list(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


if __name__ == "__main__":
    main()
