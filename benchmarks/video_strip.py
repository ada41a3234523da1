"""docs/video_memory_strip.png: segment.py --video on a synthetic video, from a reference that is
another image, shown as a strip: the reference with its annotation, then every k-th frame with its mask.

    python benchmarks/video_strip.py --checkpoint runs/synthetic-fold0-mask-tiny-sam-sam2_tiny/best.pt --memory first
    python benchmarks/video_strip.py                         # the main job's checkpoint, VRP on each frame

The video (seed --seed) holds two objects of one class among others, so the strip shows whether the
instance found in the first frame is the one followed. It is written as an mp4 (PyAV) and read back
by segment.py --video, as a user's video would be; the masks are segment.py's own masks/*.png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cli  # noqa: E402
import data  # noqa: E402
import segment  # noqa: E402
from model import load_checkpoint  # noqa: E402
from prompts import ANNOTATION_COLOUR, PREDICTION_COLOUR, tint_mask  # noqa: E402
from synthetic import SyntheticVideos, synthetic_scene  # noqa: E402


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.bit_rate = 4_000_000  # nearly lossless at 128 px: the frames the model sees are the rendered ones
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def pick_video(source: SyntheticVideos) -> tuple[str, int]:
    """The first video whose objects 1 and 2 share a class (one instance to find, one to ignore)."""
    for sequence in source.sequences:
        objects = {o.object_id: o.class_id for o in source.layout(sequence).objects if o.object_id}
        if objects.get(1) == objects.get(2):
            return sequence, objects[1]
    sequence = source.sequences[0]
    return sequence, next(o.class_id for o in source.layout(sequence).objects if o.object_id == 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=cli.MAIN_JOB_CHECKPOINT)
    parser.add_argument("--memory", choices=segment.SEGMENT_MEMORY_MODES, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=24, help="frames of the video")
    parser.add_argument("--shown", type=int, default=6, help="frames shown in the strip")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/video_memory_strip.png")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    run = load_checkpoint(args.checkpoint).get("args", {})
    source = SyntheticVideos(classes=data.fold_classes("synthetic", int(run.get("fold", 0)), "test"), seed=args.seed,
                             num_videos=30, num_frames=(args.frames, args.frames))
    sequence, class_id = pick_video(source)
    frames = [source.load_frame(sequence, t)[0] for t in range(args.frames)]
    reference = synthetic_scene(np.random.default_rng([args.seed, 99]), classes=[class_id], num_distractors=1)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        write_mp4(folder / "clip.mp4", frames)
        Image.fromarray(reference.image).save(folder / "ref.png")
        Image.fromarray((reference.label == class_id).astype(np.uint8) * 255).save(folder / "ref_mask.png")
        extra = ["--memory", args.memory] if args.memory else []
        segment.main(["--checkpoint", str(args.checkpoint), "--reference", str(folder / "ref.png"),
                      "--mask", str(folder / "ref_mask.png"), "--video", str(folder / "clip.mp4"),
                      "--out", str(folder / "out"), *extra])
        shown = np.linspace(0, args.frames - 1, args.shown).round().astype(int)
        masks = [np.array(Image.open(folder / "out/masks" / f"{t:05d}.png")) > 0 for t in shown]
    size = frames[0].shape[0]
    panels = [tint_mask(reference.image, reference.label == class_id, ANNOTATION_COLOUR)]
    panels += [tint_mask(frames[t], mask, PREDICTION_COLOUR) for t, mask in zip(shown, masks)]
    gap = np.full((size, 6, 3), 255, np.uint8)
    strip = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
    how = f"--memory {args.memory}" if args.memory else "VRP on each frame"
    captions = ["reference"] + [f"frame {t}" for t in shown]
    caption = Image.new("RGB", (strip.shape[1], 14), (255, 255, 255))
    draw = ImageDraw.Draw(caption)
    for n, text in enumerate(captions):
        draw.text((2 + n * (size + 6), 1), text, fill=(0, 0, 0))
    title = Image.new("RGB", (strip.shape[1], 14), (255, 255, 255))
    text = f"segment.py --video, {how} ({args.checkpoint.parent.name}); the reference is another image"
    ImageDraw.Draw(title).text((2, 1), text, fill=(0, 0, 0))
    picture = np.concatenate([np.asarray(title), np.asarray(caption), strip], axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        args.out, optimize=True)
    print(f"{sequence} (class {class_id}), frames {shown.tolist()} -> {args.out}")


if __name__ == "__main__":
    main()
