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

``--propagate`` is not in the paper: the previous frame with the object's predicted mask becomes a
second reference (k-shot concatenation, Table 7's mechanism), as Matcher and SegGPT do for video.

Exposes the metric (``region_similarity``, ``boundary_map``, ``boundary_f_measure``,
``jf_statistics``, ``score_sequence``, ``JFMeter``), the loop (``segment_sequence``,
``evaluate_videos``), ``write_palette_png`` and ``main``.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

import data
import prompts
from model import EmbeddingCache, VRPConfig, build_vrp_sam, load_checkpoint, sam_image_embeddings, upsample_logits

log = logging.getLogger(__name__)

VIDEO_DATASETS = ("davis2017", "synthetic-video")
BOUNDARY_TOLERANCE = 0.008  # of the image diagonal: the DAVIS toolkit's default for F
MEASURES = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
PAPER_TABLE16 = "paper (Table 16, DAVIS 2017 val): J&F 64.8, J 62.1, F 67.4; PerSAM 60.3"
RESULTS_FILE = "results.json"


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


def score_sequence(truth: np.ndarray, prediction: np.ndarray, *, exclude_void: bool = False) -> tuple[np.ndarray, np.ndarray]:
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
    first = truth[0]
    num_objects = int(first[first != data.IGNORE].max(initial=0))
    if prediction.max(initial=0) > num_objects:
        raise ValueError(f"the prediction holds object id {int(prediction.max())} but the first frame has only "
                         f"{num_objects} object(s); the toolkit refuses such results")
    truth, prediction = truth[1:-1], prediction[1:-1]
    void = (truth == data.IGNORE) if exclude_void else None
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
    data.write_atomic(Path(path), buffer.getvalue())
