"""A local web page for VRP-SAM: mark an object in a reference, see every target segmented.

The paper's use (Figs. 1 and 5) made visual: a person marks an object once in a reference image,
with points, a box, a scribble or a mask (the four kinds of §3.2), possibly in several references
(k-shot, Table 7), and the same class is segmented in any number of target images.

    python app.py                                   # the main job's checkpoint (cli.MAIN_JOB_CHECKPOINT)
    python app.py --checkpoint runs/pascal-fold0-mask-resnet50/best.pt --port 0

A separate use from segment.py (which stays the command-line stage), with flags of its own, so
a file of its own. One standard-library ThreadingHTTPServer serves the page (web/, read once at
start) and a small JSON API, and holds the model behind one lock. It keeps a few reference sets
encoded (--max-reference-sets, least recently used dropped first), each under a digest of its
images and annotations, so several pages (browser tabs) with references of their own are served
side by side; a set is encoded once, and target results are kept by (references, sha256 of the
target's bytes), so a target sent again is not recomputed. The masks are segment.py's, byte for byte.

    GET  /  /app.js  /style.css        the page
    GET  /api/info                     the checkpoint (trained label kind, image size), the limits, the demo's classes
    GET  /api/demo?class=C&seed=S      synthetic scenes of class C: a reference and 4 targets (PNG data URLs)
    POST /api/images                   body: an image file -> {"id": sha256, "width", "height"} (a reference image)
    POST /api/references               {"references": [{"image": id, "annotation": {...}}, ...]} -> {"id", "warnings"}
    POST /api/predict?references=ID    body: an image file -> {"target": sha256, "area", "mask": PNG data URL, ...};
                                       409 when set ID is not held (dropped for newer sets): POST it again
    POST /api/masks.zip                {"references": ID, "targets": [{"id", "name"}, ...]} -> masks/<stem>.png each

An annotation is {"points": [[x, y], ...]}, {"box": [x0, y0, x1, y1]} (pixels of the reference,
inclusive), {"scribble": PNG} or {"mask": PNG} (a base64 PNG or data URL of the reference's size:
grey value > 127 = marked). Every error is {"error": "<one line>"} with a 4xx status (a 500 only
when the model itself fails); the server keeps serving.

Exposes `App` (the state behind the page, its `ReferenceSet`s), `Server`, `decode_image`, `build_parser` and `main`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import ipaddress
import json
import math
import socket
import sys
import threading
import time
import traceback
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image, UnidentifiedImageError

import cli
import data
from model import SAM_TYPES, load_checkpoint
from prompts import png_bytes
from segment import ANNOTATION_KINDS, Reference, VRPPredictor, demo_scenes, make_reference, read_image
from synthetic import SYNTHETIC_CLASS_NAMES

WEB_DIR = Path(__file__).resolve().parent / "web"
# The only files the server ever sends: read once at start, never a path the client names.
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
              "/app.js": ("app.js", "text/javascript; charset=utf-8"),
              "/style.css": ("style.css", "text/css; charset=utf-8")}
# Decoders PIL may use on an upload: the common photo formats, nothing that runs a program (EPS).
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
DECODE_SLOTS = 4  # images decoded at once, whatever the number of requests: bounds the memory they take
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# Nothing but this origin's files: no script, style or image from the internet, no inline script.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class RequestError(Exception):
    """A request the server refuses: HTTP status (4xx) and a one-line message for the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = " ".join(str(message).split())  # one line, whatever the exception said


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""

    max_upload_bytes: int  # a request body
    max_pixels: int  # an image's width x height, checked from its header before it is decoded
    max_references: int  # references in one set (k-shot)
    max_results: int  # target results kept (least recently used dropped first)
    max_reference_sets: int  # reference sets kept encoded, one per page in use (least recently used dropped first)


@dataclass(frozen=True)
class TargetResult:
    """One target's segmentation as the page and the zip get it: mask_png is what segment.py
    writes to masks/<name>.png (0 / 255, the target's own size)."""

    mask_png: bytes
    width: int
    height: int
    area: float  # fraction of the target's pixels in the mask (Prediction.area)
    seconds: float  # model time, when it was computed


@dataclass(frozen=True)
class ReferenceSet:
    """One page's references, encoded: predictor shares the App's model and holds this set's
    encoding (VRPPredictor.set_references); warnings: its kind mismatches; kinds: each reference's."""

    predictor: VRPPredictor
    warnings: list[str]
    kinds: list[str]


# ---------------------------------------------------------------------------------------------
# Reading what a client sends: images, annotations, names. Nothing here opens a file.
# ---------------------------------------------------------------------------------------------

def decode_image(body: bytes, *, max_pixels: int, what: str = "the upload") -> np.ndarray:
    """(H, W, 3) uint8 RGB of an uploaded image file (segment.read_image: EXIF orientation applied).

    Only IMAGE_FORMATS are decoded, and only when width x height <= max_pixels (read from the
    header first). Raises RequestError: 415 not an image, 413 too many pixels, 400 truncated.
    """
    if not body:
        raise RequestError(400, f"{what} is empty: send the bytes of an image file")
    try:
        with Image.open(io.BytesIO(body), formats=IMAGE_FORMATS) as pil:
            width, height = pil.size
            if width * height > max_pixels:
                raise RequestError(413, f"{what} is {width}x{height} = {width * height} pixels, over this server's "
                                        f"limit of {max_pixels} (--max-pixels)")
            pil.load()
            return read_image(pil)
    except UnidentifiedImageError:
        raise RequestError(415, f"{what} is not an image this server reads ({', '.join(IMAGE_FORMATS)})") from None
    except Image.DecompressionBombError as error:
        raise RequestError(413, f"{what} has too many pixels ({error})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:  # PIL's ways to say "truncated / corrupt"
        raise RequestError(400, f"{what} could not be decoded ({error}); is it a complete image file?") from None


def _data_bytes(text: object, what: str) -> bytes:
    """The bytes of a base64 string or a data URL ("data:image/png;base64,...")."""
    if not isinstance(text, str):
        raise RequestError(400, f"{what} must be a base64 PNG (or a data: URL), got {type(text).__name__}")
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise RequestError(400, f"{what}: only base64 data: URLs are read")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{what} is not valid base64") from None


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(400, f"{what} must be a finite number, got {json.dumps(value)[:40]}")
    return float(value)


def _parse_annotation(annotation: object, n: int, decode) -> dict:
    """The annotation dict of reference n as make_reference takes it, from its JSON;
    decode(bytes, what) reads a mask or scribble PNG (App.decode)."""
    kinds = ", ".join(ANNOTATION_KINDS)
    if not isinstance(annotation, dict) or len(annotation) != 1 or next(iter(annotation)) not in ANNOTATION_KINDS:
        shown = sorted(annotation) if isinstance(annotation, dict) else type(annotation).__name__
        raise RequestError(400, f"reference {n}: the annotation is an object with one key of {kinds}, got {shown}")
    kind, value = next(iter(annotation.items()))
    if kind == "points":
        if not isinstance(value, list) or not value or not all(isinstance(p, list) and len(p) == 2 for p in value):
            raise RequestError(400, f"reference {n}: points are a non-empty list of [x, y] pairs")
        return {"points": [(_number(x, f"reference {n}: x"), _number(y, f"reference {n}: y")) for x, y in value]}
    if kind == "box":
        if not isinstance(value, list) or len(value) != 4:
            raise RequestError(400, f"reference {n}: a box is [x0, y0, x1, y1]")
        return {"box": tuple(_number(v, f"reference {n}: box") for v in value)}
    pixels = decode(_data_bytes(value, f"reference {n}'s {kind}"), f"reference {n}'s {kind}")
    return {kind: pixels.max(axis=2) > 127}  # (H, W) bool: the marked pixels


def _zip_name(name: object) -> str:
    """masks/<stem>.png for a target's file name, as segment.py names its masks; a name that
    looks like a path (or is not a plain file name) is refused, never opened or joined."""
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        raise RequestError(400, "a target name is a file name of 1 to 255 characters")
    if any(c in name for c in "/\\:") or name in (".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise RequestError(400, f"target name {json.dumps(name)[:80]} looks like a path: send the file's name only")
    return f"masks/{Path(name).stem or name}.png"


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _references_id(references: list[tuple[str, Reference]]) -> str:
    """A digest of what the encoder sees: each reference's image (id), kind and marked pixels."""
    digest = hashlib.sha256()
    for image_id, reference in references:
        digest.update(f"{image_id}|{reference.kind}|{reference.mask.shape}|".encode())
        digest.update(np.packbits(reference.mask).tobytes())
    return digest.hexdigest()


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ---------------------------------------------------------------------------------------------
# The state behind the page: one model, the reference sets of the pages, the results.
# ---------------------------------------------------------------------------------------------

class App:
    """What the server does, without HTTP: each method takes what a request carries and returns
    what its response holds, or raises RequestError.

    model_lock is the one lock around the model (encoding references, predicting a target);
    store_lock guards the three LRUs (reference images by sha256 of their bytes, reference sets by
    their id, target results by (references id, sha256 of the target's bytes)), so a cached answer
    never waits on the model. Each page names its own reference set in every predict, so pages with
    different references never disturb each other.
    """

    def __init__(self, predictor: VRPPredictor, *, run: dict, checkpoint: Path | str, limits: Limits) -> None:
        """predictor: the VRPPredictor of the checkpoint, whose model every reference set shares;
        run: the checkpoint's train.py arguments (its "args")."""
        self.predictor = predictor
        self.run = run
        self.checkpoint = str(checkpoint)
        self.limits = limits
        self.model_lock = threading.Lock()
        self.store_lock = threading.Lock()
        self.decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)
        self.images: OrderedDict[str, np.ndarray] = OrderedDict()
        self.results: OrderedDict[tuple[str, str], TargetResult] = OrderedDict()
        self.reference_sets: OrderedDict[str, ReferenceSet] = OrderedDict()
        self.encodings = 0  # reference sets encoded (once per set held)
        self.predictions = 0  # targets run through the model (cache misses)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "App":
        state = load_checkpoint(args.checkpoint)
        predictor = VRPPredictor.from_state(state, device=args.device, sam=args.sam, sam_checkpoint=args.sam_checkpoint,
                                            cache_dir=args.cache_dir, source=str(args.checkpoint))
        limits = Limits(max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels,
                        max_references=args.max_references, max_results=args.max_results,
                        max_reference_sets=args.max_reference_sets)
        return cls(predictor, run=state.get("args", {}), checkpoint=args.checkpoint, limits=limits)

    def decode(self, body: bytes, what: str) -> np.ndarray:
        """decode_image within this server's limits, at most DECODE_SLOTS at a time."""
        with self.decode_slots:
            return decode_image(body, max_pixels=self.limits.max_pixels, what=what)

    @property
    def demo_classes(self) -> list[int]:
        """The novel classes of the checkpoint's fold when it was trained on synthetic scenes."""
        if self.run.get("dataset") != "synthetic":
            return []
        return data.fold_classes("synthetic", int(self.run.get("fold", 0)), "test")

    def info(self) -> dict:
        return {"checkpoint": self.checkpoint, "dataset": self.run.get("dataset"),
                "trained_label": self.predictor.trained_label, "image_size": self.predictor.image_size,
                "device": str(self.predictor.device), "annotation_kinds": ANNOTATION_KINDS,
                "max_upload_bytes": self.limits.max_upload_bytes, "max_pixels": self.limits.max_pixels,
                "max_references": self.limits.max_references, "max_reference_sets": self.limits.max_reference_sets,
                "demo_classes": [{"id": c, "name": SYNTHETIC_CLASS_NAMES[c - 1]} for c in self.demo_classes]}

    def add_image(self, body: bytes) -> dict:
        """Keep an uploaded reference image (decoded) under the sha256 of its bytes."""
        image_id = _sha256(body)
        with self.store_lock:
            pixels = self.images.get(image_id)
        if pixels is None:
            pixels = self.decode(body, "the reference image")
            with self.store_lock:
                self.images[image_id] = pixels
                while len(self.images) > 2 * self.limits.max_references:
                    self.images.popitem(last=False)
        with self.store_lock:
            self.images.move_to_end(image_id)
        return {"id": image_id, "width": pixels.shape[1], "height": pixels.shape[0]}

    def set_references(self, payload: object) -> dict:
        """Hold {"references": [...]} as a reference set, under the id it answers (a digest of the
        images and marks): encoded unless the same set is held already."""
        items = payload.get("references") if isinstance(payload, dict) and set(payload) == {"references"} else None
        if not isinstance(items, list):
            raise RequestError(400, 'expected {"references": [{"image": id, "annotation": {...}}, ...]}')
        if not 1 <= len(items) <= self.limits.max_references:
            raise RequestError(400, f"give 1 to {self.limits.max_references} references, got {len(items)}")
        references = []
        for n, item in enumerate(items, 1):
            if not isinstance(item, dict) or set(item) != {"image", "annotation"}:
                raise RequestError(400, f'reference {n}: expected {{"image": id, "annotation": {{...}}}}')
            with self.store_lock:
                pixels = self.images.get(item["image"]) if isinstance(item["image"], str) else None
                if pixels is not None:
                    self.images.move_to_end(item["image"])  # images in use are the last to be dropped
            if pixels is None:
                raise RequestError(409, f"reference {n}: image {str(item['image'])[:16]}... is not on the server: "
                                        "upload it to /api/images first")
            annotation = _parse_annotation(item["annotation"], n, self.decode)
            try:
                references.append((item["image"], make_reference(pixels, annotation, name=str(n))))
            except ValueError as error:  # a point outside the image, a mask of another size, nothing marked
                raise RequestError(400, str(error)) from None
        references_id = _references_id(references)
        with self.model_lock:  # one encoding of a set that two requests send at once
            reference_set = self._reference_set(references_id)
            if reference_set is None:
                made = [r for _, r in references]
                base = self.predictor
                predictor = VRPPredictor(base.model, image_size=base.image_size, trained_label=base.trained_label,
                                         cache=base.cache)
                predictor.set_references(made, warn=False)  # the page shows the mismatches instead
                reference_set = ReferenceSet(predictor, warnings=base.kind_mismatches(made),
                                             kinds=[r.kind for r in made])
                self.encodings += 1
                with self.store_lock:
                    self.reference_sets[references_id] = reference_set
                    while len(self.reference_sets) > self.limits.max_reference_sets:
                        self.reference_sets.popitem(last=False)
        return {"id": references_id, "shots": len(references), "warnings": reference_set.warnings,
                "kinds": reference_set.kinds, "trained_label": self.predictor.trained_label}

    def _reference_set(self, references_id: str) -> ReferenceSet | None:
        with self.store_lock:
            reference_set = self.reference_sets.get(references_id)
            if reference_set is not None:
                self.reference_sets.move_to_end(references_id)
            return reference_set

    def _cached(self, key: tuple[str, str]) -> TargetResult | None:
        with self.store_lock:
            result = self.results.get(key)
            if result is not None:
                self.results.move_to_end(key)
            return result

    def predict(self, body: bytes, references_id: str) -> dict:
        """Segment one target (the bytes of an image file) with the reference set `references_id`;
        a 409 when that set is not held (never set, or dropped for newer ones): the page sends it again."""
        key = (references_id, _sha256(body))
        result, cached = self._cached(key), True
        if result is None:
            pixels = self.decode(body, "the target")  # outside the model lock
            reference_set = self._reference_set(references_id)
            if reference_set is None:
                raise RequestError(409, f"references {json.dumps(references_id[:16])} are not on the server (never "
                                        f"set, or dropped: it keeps the {self.limits.max_reference_sets} sets used "
                                        "last): send them again to /api/references, then this target")
            with self.model_lock:  # a set dropped meanwhile still serves this request: it holds its encoding
                result = self._cached(key)  # the same target may have been computed while this one waited
                if result is None:
                    began = time.perf_counter()
                    prediction = reference_set.predictor.predict_batch([pixels])[0]
                    self.predictions += 1
                    result = TargetResult(mask_png=png_bytes(prediction.mask.astype(np.uint8) * 255),  # as segment.py
                                          width=pixels.shape[1], height=pixels.shape[0], area=prediction.area,
                                          seconds=time.perf_counter() - began)
                    cached = False
                    with self.store_lock:  # stored before the model is free: a twin request waiting finds it
                        self.results[key] = result
                        while len(self.results) > self.limits.max_results:
                            self.results.popitem(last=False)
        return {"target": key[1], "references": references_id, "width": result.width, "height": result.height,
                "area": round(result.area, 6), "seconds": round(result.seconds, 4), "cached": cached,
                "mask": _data_url(result.mask_png)}

    def masks_zip(self, payload: object) -> bytes:
        """A zip of masks/<stem>.png, one per target, each exactly the bytes segment.py writes."""
        if not (isinstance(payload, dict) and set(payload) == {"references", "targets"}
                and isinstance(payload["targets"], list)):
            raise RequestError(400, 'expected {"references": id, "targets": [{"id": sha256, "name": file name}, ...]}')
        if not payload["targets"]:
            raise RequestError(400, "no target to put in the zip: segment some targets first")
        entries: dict[str, bytes] = {}
        for item in payload["targets"]:
            if not isinstance(item, dict) or set(item) != {"id", "name"}:
                raise RequestError(400, 'each target is {"id": sha256, "name": file name}')
            name = _zip_name(item["name"])
            result = self._cached((str(payload["references"]), str(item["id"])))
            if result is None:
                raise RequestError(409, f"{item['name']} has no mask for these references on the server "
                                        "(not segmented yet, or dropped from the cache): segment it again")
            stem, n = name[:-len(".png")], 2
            while name in entries:  # two targets of one stem (a.jpg, a.png): a.png, a_2.png
                name, n = f"{stem}_{n}.png", n + 1
            entries[name] = result.mask_png
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
            for name, png in entries.items():
                archive.writestr(name, png)
        return buffer.getvalue()

    def demo(self, class_id: int | None, seed: int) -> dict:
        """The demo's synthetic scenes (demo_scenes) as PNG data URLs: a reference to annotate, targets."""
        classes = self.demo_classes
        if not classes:
            raise RequestError(409, f"the demo scenes are synthetic, but this checkpoint was trained on "
                                    f"{self.run.get('dataset')!r}: start the server with a synthetic run's checkpoint")
        class_id = classes[0] if class_id is None else class_id
        if class_id not in classes:
            raise RequestError(400, f"class {class_id} is not one of this checkpoint's novel classes {classes}")
        reference, targets = demo_scenes(class_id, seed, size=int(self.run.get("image_size", 128)))
        name = SYNTHETIC_CLASS_NAMES[class_id - 1]
        slug = name.replace(" ", "_")
        return {"class": class_id, "name": name,
                "reference": {"name": f"demo_{slug}_reference.png", "data": _data_url(png_bytes(reference.image))},
                "targets": [{"name": f"demo_{slug}_{i}.png", "data": _data_url(png_bytes(t.image))}
                            for i, t in enumerate(targets)]}


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    """One request: route it to the App; any refusal is a 4xx with {"error": one line}, a failure
    of the model a 500 with one line (its traceback goes to the server's log, never to the client)."""

    server: "Server"
    server_version = "VRP-SAM"
    default_request_version = "HTTP/1.0"  # a malformed request line still gets a status line (0.9 has none)
    timeout = 60  # seconds a client may stall mid-request before its thread gives up

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        try:
            url = _split(self.path, "the request's path")
            try:
                query = parse_qs(url.query, keep_blank_values=True, max_num_fields=20)
            except ValueError:
                raise RequestError(400, "too many query parameters") from None
            route = ROUTES.get((method, url.path))
            if route is None:
                allowed = sorted(m for m, path in ROUTES if path == url.path)
                if allowed:
                    raise RequestError(405, f"{method} {url.path}: use {' or '.join(allowed)}")
                raise RequestError(404, f"no page or API route {json.dumps(url.path[:80])}")
            self._check_origin()
            route(self, query)
        except RequestError as error:
            self.send_json(error.status, {"error": error.message})
        except Exception as error:  # the model or a bug: this request fails, the server keeps serving
            traceback.print_exc(file=sys.stderr)
            self.send_json(500, {"error": " ".join(f"internal error: {type(error).__name__}: {error}".split())[:500]})

    def _check_origin(self) -> None:
        """Refuse other sites' pages: a Host that is not this loopback server (DNS rebinding), or an
        Origin that is not the page's own (a cross-site request)."""
        host = self.headers.get("Host", "")
        hostname = _split(f"//{host}", "the Host header").hostname or ""
        if self.server.loopback and host and hostname not in LOOPBACK_NAMES:
            raise RequestError(403, f"Host {json.dumps(host[:80])} is not this local server: open http://127.0.0.1:"
                                    f"{self.server.server_port}/")
        origin = self.headers.get("Origin")
        if origin is not None and _split(origin, "the Origin header").netloc != host:
            raise RequestError(403, f"cross-origin request from {json.dumps(origin[:80])} refused")

    def body(self) -> bytes:
        """The request's body, at most the upload limit (413 above it, 411 without a length)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(411, "chunked bodies are not accepted: send a Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "a POST needs a Content-Length header")
        try:
            size = int(length)
            if size < 0:
                raise ValueError
        except ValueError:
            raise RequestError(400, f"Content-Length {json.dumps(length[:40])} is not a byte count") from None
        limit = self.server.app.limits.max_upload_bytes
        if size > limit:
            if size <= 4 * limit:  # read what was sent, so that the client sees the answer, not a reset
                while size > 0 and (chunk := self.rfile.read(min(size, 2**20))):
                    size -= len(chunk)
            self.close_connection = True
            raise RequestError(413, f"the body is {int(length)} bytes, over this server's limit of {limit} "
                                    f"(--max-upload-mb)")
        body = self.rfile.read(size)
        if len(body) < size:
            raise RequestError(400, f"the body ended after {len(body)} of {size} bytes")
        return body

    def json_body(self) -> object:
        try:
            return json.loads(self.body())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RequestError(400, f"the body is not JSON ({error})") from None
        except RecursionError:
            raise RequestError(400, "the body's JSON is nested too deeply") from None

    def send_bytes(self, status: int, content_type: str, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, payload: dict) -> None:
        self.send_bytes(status, "application/json", json.dumps(payload).encode() + b"\n")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, a header too long, an unknown
        method) as one-line JSON too; an unknown method is a 405, not a 501."""
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, message = 405, f"method {getattr(self, 'command', '?')} not allowed: use GET or POST"
        self.close_connection = True
        self.log_error("code %d, message %s", code, message)
        try:
            self.send_json(code, {"error": " ".join(str(message or HTTPStatus(code).phrase).split())})
        except OSError:
            pass  # the client is gone

    def log_message(self, format: str, *args) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)


def _split(url: str, what: str):
    try:
        return urlsplit(url)
    except ValueError:  # an unclosed "[" of an IPv6 address, say
        raise RequestError(400, f"{what} is not a valid URL") from None


def _page(name: str, content_type: str):
    def route(handler: Handler, query: dict) -> None:
        handler.send_bytes(200, content_type, handler.server.page[name])
    return route


def _one(query: dict, name: str, parse=str, default=None):
    values = query.get(name)
    if not values:
        return default
    try:
        return parse(values[-1])
    except ValueError:
        raise RequestError(400, f"?{name}={values[-1][:40]} is not valid") from None


def _info(handler: Handler, query: dict) -> None:
    handler.send_json(200, handler.server.app.info())


def _demo(handler: Handler, query: dict) -> None:
    seed = _one(query, "seed", int, 0)
    if not 0 <= seed < 2**32:
        raise RequestError(400, "?seed must be in 0..2^32-1")
    handler.send_json(200, handler.server.app.demo(_one(query, "class", int), seed))


def _images(handler: Handler, query: dict) -> None:
    handler.send_json(200, handler.server.app.add_image(handler.body()))


def _references(handler: Handler, query: dict) -> None:
    handler.send_json(200, handler.server.app.set_references(handler.json_body()))


def _predict(handler: Handler, query: dict) -> None:
    references_id = _one(query, "references")
    if not references_id:
        raise RequestError(400, "give ?references=<id>, the id /api/references answered")
    handler.send_json(200, handler.server.app.predict(handler.body(), references_id))


def _masks_zip(handler: Handler, query: dict) -> None:
    archive = handler.server.app.masks_zip(handler.json_body())
    handler.send_bytes(200, "application/zip", archive,
                       {"Content-Disposition": 'attachment; filename="vrp-sam-masks.zip"'})


ROUTES = {("GET", path): _page(name, content_type) for path, (name, content_type) in PAGE_FILES.items()}
ROUTES.update({("GET", "/api/info"): _info, ("GET", "/api/demo"): _demo, ("POST", "/api/images"): _images,
               ("POST", "/api/references"): _references, ("POST", "/api/predict"): _predict,
               ("POST", "/api/masks.zip"): _masks_zip})


class Server(ThreadingHTTPServer):
    """The page's HTTP server: a thread per request (daemon threads), the App set after binding
    (so a taken port is reported before the model is loaded)."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, host: str, port: int, *, app: App | None = None, quiet: bool = False) -> None:
        self.page = {name: (WEB_DIR / name).read_bytes() for name, _ in PAGE_FILES.values()}
        self.app = app
        self.quiet = quiet
        self.loopback = is_loopback(host)
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host = self.server_address[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.server_port}/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="app.py", formatter_class=cli.HelpFormatter,
                                description="A local web page: annotate a reference, see every target segmented.")
    group = parser.add_argument_group("model")
    group.add_argument("--checkpoint", type=Path, default=None,
                       help=f"best.pt of a train.py run (default: the main job's, {cli.MAIN_JOB_CHECKPOINT})")
    cli.add_run_sam_args(group, SAM_TYPES, backbone_weights=False)
    cli.add_runtime_args(group, workers=False, cache=None, no_cache=False)  # --device, --cache-dir, as segment.py
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1",
                       help="address to listen on; anything but a loopback address opens the page to the network")
    group.add_argument("--port", type=cli.int_range(0, 65535), default=8000, help="0 = any free port")
    group.add_argument("--quiet", action="store_true", help="do not log each request")
    group = parser.add_argument_group("limits")
    group.add_argument("--max-upload-mb", type=cli.positive_float, default=32.0, help="largest request body")
    group.add_argument("--max-pixels", type=cli.positive_int, default=50_000_000,
                       help="largest image (width x height) decoded")
    group.add_argument("--max-references", type=cli.positive_int, default=8, help="references in one set (k-shot)")
    group.add_argument("--max-results", type=cli.positive_int, default=2048,
                       help="target masks kept (for the zip and for targets sent again)")
    group.add_argument("--max-reference-sets", type=cli.positive_int, default=8,
                       help="reference sets kept encoded, one per page (browser tab) in use; the least recently "
                            "used is dropped first, and its page sends it again")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Every file the server needs, checked before the model is loaded; fills in args.checkpoint."""
    if args.checkpoint is None:
        args.checkpoint = cli.MAIN_JOB_CHECKPOINT
        if not args.checkpoint.is_file():
            raise FileNotFoundError(f"no checkpoint given and the main job's {args.checkpoint} is not there: "
                                    "make it with `python train.py --dataset synthetic`, or pass --checkpoint")
    if not args.checkpoint.exists():  # a folder or another kind of file: said by load_checkpoint
        raise FileNotFoundError(f"--checkpoint {args.checkpoint} not found: pass a best.pt written by train.py")
    if args.sam_checkpoint is not None and not args.sam_checkpoint.is_file():
        raise FileNotFoundError(f"--sam-checkpoint {args.sam_checkpoint} not found")
    if args.cache_dir is not None and args.cache_dir.exists() and not args.cache_dir.is_dir():
        raise NotADirectoryError(f"--cache-dir {args.cache_dir} is a file, not a folder")
    missing = [name for name, _ in PAGE_FILES.values() if not (WEB_DIR / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the page's files {', '.join(missing)} are missing from {WEB_DIR}")


def host_warning(host: str) -> str | None:
    if is_loopback(host):
        return None
    return (f"--host {host}: the page and its API are open to every machine that can reach this address, "
            "without a password; uploads are limited but anyone there can use this server")


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        warning = host_warning(args.host)
        if warning:
            print(f"app.py: warning: {warning}", file=sys.stderr)
        try:
            server = Server(args.host, args.port, quiet=args.quiet)
        except OSError as error:
            raise OSError(f"cannot listen on {args.host}:{args.port} ({error.strerror or error}): "
                          "choose another --port (0 = any free port)") from None
        print(f"loading {args.checkpoint} on {args.device} ...", flush=True)
        try:
            server.app = App.from_args(args)
        except BaseException:
            server.server_close()
            raise
    except cli.USER_ERRORS as error:
        sys.exit(f"app.py: error: {cli.error_message(error)}")
    print(f"VRP-SAM page: {server.url}  (Ctrl+C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
