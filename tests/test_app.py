"""app.py, the local web page's server, without a browser.

A tiny VRP-SAM checkpoint (untrained encoder, tiny backbone and SAM, trained label "mask"), served
on 127.0.0.1 at an ephemeral port by a thread. The properties: the page's masks are
VRPPredictor's, pixel for pixel, and the zip holds segment.py's bytes; a reference set is encoded
once and a target sent again is not recomputed; 20 concurrent requests are all answered with the
masks of one-by-one prediction, and so are two pages with different references at once; a set
dropped for newer ones is a 409 until it is sent again; every bad request gets a 4xx with one
line of JSON and the server keeps serving; the command line refuses bad input before the model
is loaded.
"""

import base64
import http.client
import io
import json
import socket
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

import app
import model
import cli
import segment
from prompts import png_bytes
from conftest import app_server
from synthetic import synthetic_scene

S = 96  # network size of the test checkpoint; the scenes are 128 px
UPLOAD_MB = 1.0
MAX_PIXELS = 400 * 400


def png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(array) -> str:
    return "data:image/png;base64," + base64.b64encode(png(array)).decode()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A train.py-style checkpoint of a tiny, untrained VRP-SAM, as tests/test_segment.py's."""
    root = tmp_path_factory.mktemp("app")
    sam = model.default_sam_checkpoint("tiny")
    vrp = model.build_vrp_sam(model.VRPConfig(backbone="tiny", sam="tiny"), sam_checkpoint=sam, seed=0)
    args = {"dataset": "synthetic", "fold": 0, "label": "mask", "image_size": S, "sam_checkpoint": str(sam),
            "backbone_weights": None}
    model.save_checkpoint(root / "best.pt", vrp, args=args)
    return root / "best.pt"


@pytest.fixture(scope="module")
def server(checkpoint):
    """The server as `python app.py` builds it, on 127.0.0.1 and a free port, in a thread."""
    with app_server("--checkpoint", str(checkpoint), "--device", "cpu", "--max-upload-mb", str(UPLOAD_MB),
                    "--max-pixels", str(MAX_PIXELS)) as server:
        yield server


@pytest.fixture(scope="module")
def predictor(checkpoint):
    """The API the page must agree with: its own VRPPredictor of the same checkpoint."""
    return segment.VRPPredictor.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(0)
    references = [synthetic_scene(rng, classes=[1, 6], num_distractors=2) for _ in range(2)]
    targets = [synthetic_scene(rng, classes=[1, 3]).image for _ in range(20)]
    return references, targets


def call(server, method, path, body=None, headers=None):
    """(status, content type, body bytes) of one request."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def call_json(server, method, path, payload=None, body=None):
    if payload is not None:
        body = json.dumps(payload).encode()
    status, _, answer = call(server, method, path, body)
    return status, json.loads(answer)


def raw(server, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (requests http.client will not make); the status and the body."""
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=60) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def upload(server, image) -> str:
    status, answer = call_json(server, "POST", "/api/images", body=png(image))
    assert status == 200, answer
    return answer["id"]


def set_references(server, references) -> dict:
    status, answer = call_json(server, "POST", "/api/references", {"references": references})
    assert status == 200, answer
    return answer


def predict(server, image, references_id) -> dict:
    status, answer = call_json(server, "POST", f"/api/predict?references={references_id}", body=png(image))
    assert status == 200, answer
    return answer


def decoded_mask(answer) -> np.ndarray:
    png_data = base64.b64decode(answer["mask"].split(",", 1)[1])
    return np.array(Image.open(io.BytesIO(png_data))) > 0


def two_shot(server, scenes):
    """A 2-shot set: reference 1 marked with a mask of class 1, reference 2 with two clicks on it."""
    (first, second), _ = scenes
    ys, xs = np.nonzero(second.label == 1)
    clicks = [(int(xs[0]), int(ys[0])), (int(xs[-1]), int(ys[-1]))]
    payload = [{"image": upload(server, first.image),
                "annotation": {"mask": data_url((first.label == 1).astype(np.uint8) * 255)}},
               {"image": upload(server, second.image), "annotation": {"points": [list(p) for p in clicks]}}]
    api = [(first.image, {"mask": first.label == 1}), (second.image, {"points": clicks})]
    return payload, api


# --- the page's masks are the API's -----------------------------------------------------------------------

def test_masks_equal_the_predictors_and_the_zip_holds_segment_pys_bytes(server, predictor, scenes):
    payload, api = two_shot(server, scenes)
    answer = set_references(server, payload)
    assert answer["shots"] == 2 and answer["kinds"] == ["mask", "points"]
    # The checkpoint was trained with masks: the API's own warning reaches the page, for reference 2 only.
    assert len(answer["warnings"]) == 1 and answer["warnings"][0].startswith("reference 2 is annotated with points")

    with pytest.warns(UserWarning, match="reference 2 is annotated with points") as caught:
        predictor.set_references(api)
    assert [str(w.message) for w in caught] == answer["warnings"]  # the page shows the API's words
    _, targets = scenes
    results = [predict(server, image, answer["id"]) for image in targets[:3]]
    for image, result in zip(targets[:3], results):
        expected = predictor.predict(image)
        assert (result["width"], result["height"]) == (128, 128)
        assert np.array_equal(decoded_mask(result), expected.mask)
        assert result["area"] == pytest.approx(expected.area, abs=1e-6)

    names = [f"frame{i:02d}.jpg" for i in range(3)]
    request = {"references": answer["id"], "targets": [{"id": r["target"], "name": n} for r, n in zip(results, names)]}
    status, content_type, body = call(server, "POST", "/api/masks.zip", json.dumps(request).encode())
    assert status == 200 and content_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.namelist() == ["masks/frame00.png", "masks/frame01.png", "masks/frame02.png"]
        for name, image in zip(archive.namelist(), targets[:3]):
            # exactly what segment.py writes to masks/<stem>.png: 0 / 255, the target's own size
            assert archive.read(name) == png_bytes(predictor.predict(image).mask.astype(np.uint8) * 255)


def test_references_are_encoded_once_per_change_and_a_target_sent_again_is_not_recomputed(server, scenes):
    payload, _ = two_shot(server, scenes)
    _, targets = scenes
    the_app = server.app
    first = set_references(server, payload)
    encodings, predictions = the_app.encodings, the_app.predictions
    assert set_references(server, payload)["id"] == first["id"]  # the same marks: nothing encoded
    assert the_app.encodings == encodings
    answer = predict(server, targets[5], first["id"])
    assert the_app.predictions == predictions + 1
    again = predict(server, targets[5], first["id"])
    assert again["cached"] and not answer["cached"] and the_app.predictions == predictions + 1
    assert again["mask"] == answer["mask"]

    one_shot = set_references(server, payload[:1])  # a change: encoded once, another id
    assert one_shot["id"] != first["id"] and the_app.encodings == encodings + 1
    predict(server, targets[5], one_shot["id"])
    assert the_app.predictions == predictions + 2  # same target, other references: computed
    assert predict(server, targets[5], first["id"])["cached"]  # the first set is still held: nothing to send
    assert set_references(server, payload)["id"] == first["id"] and the_app.encodings == encodings + 1
    assert the_app.predictions == predictions + 2


def test_twenty_concurrent_requests_are_all_answered_with_the_masks_of_one_by_one(server, predictor, scenes):
    payload, api = two_shot(server, scenes)
    references_id = set_references(server, payload[1:])["id"]  # reference 2 alone: results no other test made
    with pytest.warns(UserWarning, match="annotated with points"):
        predictor.set_references(api[1:])
    _, targets = scenes
    one_by_one = [predictor.predict(image).mask for image in targets]

    bodies = [png(image) for image in targets]
    start = threading.Barrier(len(bodies))

    def send(body):
        start.wait()
        status, answer = call_json(server, "POST", f"/api/predict?references={references_id}", body=body)
        return status, answer

    predictions = server.app.predictions
    began = time.perf_counter()
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(send, bodies))
    seconds = time.perf_counter() - began
    assert [status for status, _ in answers] == [200] * 20
    for (_, answer), expected in zip(answers, one_by_one):
        assert np.array_equal(decoded_mask(answer), expected)
    assert server.app.predictions == predictions + 20  # each target once

    # The same 20 again, at once: all from the results kept, none recomputed.
    began_again = time.perf_counter()
    with ThreadPoolExecutor(len(bodies)) as pool:
        again = list(pool.map(send, bodies))
    seconds_again = time.perf_counter() - began_again
    assert all(status == 200 and answer["cached"] for status, answer in again)
    assert [a["mask"] for _, a in again] == [a["mask"] for _, a in answers]
    assert server.app.predictions == predictions + 20
    print(f"\n20 concurrent predict requests: all answered in {seconds:.2f} s; "
          f"sent again (cached) {seconds_again:.2f} s")


def test_two_pages_with_different_references_both_get_their_masks(server, predictor, scenes):
    """Two tabs, each with its own references, segmenting at the same time: every request names
    its own set, so none is refused and each mask is that page's own (one-by-one prediction)."""
    payload, api = two_shot(server, scenes)
    _, targets = scenes
    pages = [(payload[:1], api[:1]), (payload, api)]  # page 1: the mask reference; page 2: both references
    mine = targets[10:16]  # targets no other test segments with these sets
    expected = []
    for _, references in pages:
        predictor.set_references(references, warn=False)
        expected.append([predictor.predict(image).mask for image in mine])
    both_set = threading.Barrier(len(pages))
    predictions = server.app.predictions

    def page(n):
        references_id = set_references(server, pages[n][0])["id"]
        both_set.wait()  # each page's references set before either predicts: one held set would refuse a page
        return references_id, [call_json(server, "POST", f"/api/predict?references={references_id}", body=png(image))
                               for image in mine]

    with ThreadPoolExecutor(len(pages)) as pool:
        answers = list(pool.map(page, range(len(pages))))
    assert answers[0][0] != answers[1][0]
    for (references_id, page_answers), page_expected in zip(answers, expected):
        assert [status for status, _ in page_answers] == [200] * len(mine), page_answers
        for (_, answer), mask in zip(page_answers, page_expected):
            assert answer["references"] == references_id and np.array_equal(decoded_mask(answer), mask)
    assert server.app.predictions == predictions + 2 * len(mine)  # each target once per page


def test_a_dropped_reference_set_is_a_409_until_it_is_sent_again(server, scenes):
    (reference, _), targets = scenes
    image_id = upload(server, reference.image)
    limit = server.app.limits.max_reference_sets
    sets = [[{"image": image_id, "annotation": {"points": [[10 + 5 * n, 20]]}}] for n in range(limit + 1)]
    first = set_references(server, sets[0])["id"]
    predict(server, targets[7], first)
    for references in sets[1:]:  # the least recently used, the first, is dropped
        set_references(server, references)
    assert len(server.app.reference_sets) == limit and first not in server.app.reference_sets
    status, answer = call_json(server, "POST", f"/api/predict?references={first}", body=png(targets[8]))
    assert status == 409 and "send them again to /api/references" in answer["error"]
    assert predict(server, targets[7], first)["cached"]  # a mask made with it is still kept
    encodings = server.app.encodings
    assert set_references(server, sets[0])["id"] == first and server.app.encodings == encodings + 1
    assert predict(server, targets[8], first)["width"] == 128


# --- bad requests: a 4xx with one line of JSON, and the server keeps serving ------------------------------

def _bad_requests(scenes):
    (reference, _), targets = scenes
    target_png = png(targets[0])
    big = np.zeros((400, 401, 3), np.uint8)  # one column over --max-pixels
    header = b"Host: 127.0.0.1\r\n"

    def zip_of(name):
        return json.dumps({"references": "x", "targets": [{"id": "y", "name": name}]}).encode()
    return {
        "non-image upload": ("POST", "/api/images", b"GIF89a? not really an image", 415),
        "text as a target": ("POST", "/api/predict?references=0", b"hello", 415),
        "truncated image": ("POST", "/api/images", target_png[: len(target_png) // 2], 400),
        "empty body": ("POST", "/api/images", b"", 400),
        "too many pixels": ("POST", "/api/images", png(big), 413),
        "oversized body": ("POST", "/api/images", b"\0" * int(1.5 * UPLOAD_MB * 2**20), 413),
        "huge Content-Length, no body": ("RAW", b"POST /api/images HTTP/1.1\r\n" + header +
                                         b"Content-Length: 1000000000000\r\n\r\n", 413),
        "no Content-Length": ("RAW", b"POST /api/images HTTP/1.0\r\n" + header + b"\r\n", 411),
        "chunked body": ("RAW", b"POST /api/images HTTP/1.1\r\n" + header +
                         b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
        "negative Content-Length": ("RAW", b"POST /api/images HTTP/1.0\r\n" + header +
                                    b"Content-Length: -5\r\n\r\n", 400),
        "malformed request line": ("RAW", b"GARBAGE\r\n\r\n", 400),
        "unknown method": ("PUT", "/api/images", b"x", 405),
        "GET of a POST route": ("GET", "/api/predict", None, 405),
        "bad JSON": ("POST", "/api/references", b"{'references': [", 400),
        "JSON nested too deeply": ("POST", "/api/references", b"[" * 200_000, 400),
        "JSON of the wrong shape": ("POST", "/api/references", b'{"references": "ref.png"}', 400),
        "an unknown reference image": ("POST", "/api/references", json.dumps(
            {"references": [{"image": "/etc/passwd", "annotation": {"points": [[1, 2]]}}]}).encode(), 409),
        "unknown route": ("GET", "/api/nothing", None, 404),
        "a path to a file": ("GET", "/../app.py", None, 404),
        "an encoded path to a file": ("GET", "/%2e%2e/app.py", None, 404),
        "the page folder": ("GET", "/web/app.js", None, 404),
        "an absolute path": ("GET", "//etc/passwd", None, 404),
        "predict without references": ("POST", "/api/predict", target_png, 400),
        "predict with unknown references": ("POST", "/api/predict?references=feed", target_png, 409),
        "path-like zip name": ("POST", "/api/masks.zip", zip_of("../../etc/passwd"), 400),
        "backslash zip name": ("POST", "/api/masks.zip", zip_of("..\\a.png"), 400),
        "zip of an unknown target": ("POST", "/api/masks.zip", zip_of("a.png"), 409),
        "demo class that is not novel": ("GET", "/api/demo?class=9", None, 400),
        "demo seed that is not a number": ("GET", "/api/demo?seed=one", None, 400),
        "another site's page": ("RAW", b"POST /api/images HTTP/1.0\r\n" + header + b"Origin: http://evil.example\r\n"
                                b"Content-Length: 1\r\n\r\nx", 403),
        "a Host that is not a host": ("RAW", b"GET /api/info HTTP/1.0\r\nHost: [::1\r\n\r\n", 400),
        "too many query parameters": ("GET", "/api/demo?" + "&".join(f"p{i}=1" for i in range(30)), None, 400),
        "a DNS-rebound host name": ("RAW", b"GET /api/info HTTP/1.0\r\nHost: evil.example:80\r\n\r\n", 403),
    }


def _annotation_cases(server, scenes):
    (reference, _), _ = scenes
    image_id = upload(server, reference.image)

    def refs(annotation):
        return json.dumps({"references": [{"image": image_id, "annotation": annotation}]}).encode()
    return {
        "a point outside the image": (refs({"points": [[500, 3]]}), 400),
        "a box that is no box": (refs({"box": [50, 50, 10, 10]}), 400),
        "a point that is not a number": (refs({"points": [["1", 2]]}), 400),
        "two kinds at once": (refs({"points": [[1, 2]], "box": [0, 0, 5, 5]}), 400),
        "a mask of another size": (refs({"mask": data_url(np.full((64, 64), 255, np.uint8))}), 400),
        "an empty mask": (refs({"mask": data_url(np.zeros((128, 128), np.uint8))}), 400),
        "a scribble that is not base64": (refs({"scribble": "not base64!"}), 400),
        "a scribble that is text": (refs({"scribble": base64.b64encode(b"hello").decode()}), 415),
        "no reference": (json.dumps({"references": []}).encode(), 400),
    }


def _assert_one_line_error(status, body, expected, case):
    assert status == expected, (case, status, body[:300])
    message = json.loads(body)["error"]
    assert message and "\n" not in message and "Traceback" not in message, (case, message)


def test_bad_requests_get_a_4xx_with_one_line_of_json_and_the_server_keeps_serving(server, scenes):
    payload, _ = two_shot(server, scenes)
    references_id = set_references(server, payload)["id"]
    _, targets = scenes
    cases = {name: case for name, case in _bad_requests(scenes).items()}
    cases.update({name: ("POST", "/api/references", body, status)
                  for name, (body, status) in _annotation_cases(server, scenes).items()})
    for name, case in cases.items():
        if case[0] == "RAW":
            status, body = raw(server, case[1])
            expected = case[2]
        else:
            method, path, request_body, expected = case
            status, _, body = call(server, method, path, request_body)
        _assert_one_line_error(status, body, expected, name)
        assert call(server, "GET", "/api/info")[0] == 200, f"the server stopped serving after: {name}"
    # The failed requests changed nothing: the references set before them are still held.
    assert references_id in server.app.reference_sets
    assert predict(server, targets[0], references_id)["width"] == 128


def test_a_failing_model_fails_one_request_and_the_server_keeps_serving(server, scenes, monkeypatch, capsys):
    payload, _ = two_shot(server, scenes)
    references_id = set_references(server, payload)["id"]

    def broken(images, **kwargs):
        raise RuntimeError("CUDA out of memory\nwith a second line")

    monkeypatch.setattr(server.app.reference_sets[references_id].predictor, "predict_batch", broken)
    fresh = np.full((40, 50, 3), 7, np.uint8)  # not in the results kept
    status, _, body = call(server, "POST", f"/api/predict?references={references_id}", png(fresh))
    assert status == 500
    assert json.loads(body) == {"error": "internal error: RuntimeError: CUDA out of memory with a second line"}
    assert "Traceback" in capsys.readouterr().err  # for the person running the server, not for the client
    monkeypatch.undo()
    assert predict(server, fresh, references_id)["width"] == 50


# --- the page, the demo ---------------------------------------------------------------------------------

def test_the_page_is_served_from_its_own_origin_only(server):
    for path, (name, content_type) in app.PAGE_FILES.items():
        status, served_type, body = call(server, "GET", path)
        assert status == 200 and served_type == content_type and body == (app.WEB_DIR / name).read_bytes()
        # Nothing on the page comes from the internet: no URL of another host in its files.
        assert b"http://" not in body and b"https://" not in body and b"//cdn" not in body
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
    connection.request("GET", "/")
    policy = connection.getresponse().getheader("Content-Security-Policy")
    connection.close()
    assert "default-src 'none'" in policy and "script-src 'self'" in policy


def test_demo_serves_the_demo_scenes_of_the_checkpoints_novel_classes(server):
    status, info = call_json(server, "GET", "/api/info")
    assert status == 200 and info["trained_label"] == "mask"
    assert [c["id"] for c in info["demo_classes"]] == [1, 2, 3, 4, 5]
    status, demo = call_json(server, "GET", "/api/demo?class=3&seed=1")
    assert status == 200 and demo["name"] == "blue triangle" and len(demo["targets"]) == segment.DEMO_TARGETS
    reference, targets = segment.demo_scenes(3, 1, size=S)
    shown = [np.array(Image.open(io.BytesIO(base64.b64decode(d["data"].split(",")[1]))))
             for d in [demo["reference"], *demo["targets"]]]
    assert all(np.array_equal(a, b.image) for a, b in zip(shown, [reference, *targets]))
    assert all((t.label == 3).any() for t in targets)  # the class is in every target


# --- the command line: checked before the model is loaded ----------------------------------------------

def test_command_line_errors_are_one_line_and_come_before_the_model(checkpoint, tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(app.App, "from_args", no_model)
    monkeypatch.chdir(tmp_path)  # the main job's checkpoint is not here
    with pytest.raises(SystemExit) as exit_:
        app.main([])
    message = str(exit_.value.code)
    assert "\n" not in message and "python train.py --dataset synthetic" in message
    assert str(cli.MAIN_JOB_CHECKPOINT) in message

    with pytest.raises(SystemExit) as exit_:
        app.main(["--checkpoint", str(tmp_path / "missing.pt")])
    assert "missing.pt not found" in str(exit_.value.code)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SystemExit) as exit_:
            app.main(["--checkpoint", str(checkpoint), "--port", str(taken.getsockname()[1])])
    assert str(exit_.value.code).startswith("app.py: error: cannot listen on 127.0.0.1:")

    for argv in (["--port", "70000"], ["--max-upload-mb", "0"], ["--device", "tpu"]):
        with pytest.raises(SystemExit) as exit_:
            app.main(argv)
        assert exit_.value.code == 2, argv  # argparse's one-line usage error
    capsys.readouterr()


def test_only_a_loopback_host_goes_without_a_warning():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert app.host_warning(host) is None
    for host in ("0.0.0.0", "192.168.1.20", "::", "my-laptop.local"):
        assert "open to every machine" in app.host_warning(host)
