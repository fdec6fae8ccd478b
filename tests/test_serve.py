"""fastmnist serve: the API against predict_image, bad input, load, the command, and the page in
a real Chromium driven by Playwright."""
import base64
import csv
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastmnist import TwoLayerNet, predict_image, train

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real-digits"
CHROMIUM = Path("/usr/bin/chromium")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def net(mnist_test, tmp_path_factory):
    """784-50-10 trained briefly on the real MNIST digits, saved as a digit model."""
    images, labels = mnist_test
    net = TwoLayerNet(seed=0, device="cpu")
    history = train(net, images.reshape(-1, 784).astype(np.float32) / 255, labels, iters=3000,
                    seed=0, quiet=True)
    path = net.save(tmp_path_factory.mktemp("model") / "digits.npz", dataset="mnist",
                    classes=[str(d) for d in range(10)], train_accuracy=history.train_acc[-1],
                    iters=3000)
    net = TwoLayerNet.load(path, device="cpu")  # as the server would, metadata and all
    net.path = path
    return net


@pytest.fixture(scope="module")
def client(net):
    from fastapi.testclient import TestClient

    from fastmnist.web import create_app

    with TestClient(create_app(net, net.path)) as c:
        yield c


@pytest.fixture(scope="module")
def server(net):
    """A real uvicorn server on a free 127.0.0.1 port: its base URL."""
    import uvicorn

    from fastmnist.web import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(net, net.path), log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv.should_exit = True
    thread.join(10)


def real_images() -> list[Path]:
    if not (REAL / "manifest.tsv").is_file():
        pytest.skip(f"the real-handwriting set is only on this project's machines ({REAL})")
    return sorted(p for p in REAL.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def content_type(path: Path) -> str:
    return {".png": "image/png"}.get(path.suffix.lower(), "image/jpeg")


def png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def bomb_png(side: int = 60_000) -> bytes:
    """A small PNG whose header claims ``side`` x ``side`` pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


def data_url_pixels(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def as_shown(image: np.ndarray) -> np.ndarray:
    """A float image in 0..1 as the 8-bit picture the API sends."""
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def read_all(model_path, paths) -> dict:
    """predict_image's answer for each of ``paths`` (run in another process)."""
    net = TwoLayerNet.load(model_path, device="cpu")
    return {path: predict_image(path, net) for path in paths}


@pytest.fixture(scope="module")
def answers(net):
    """predict_image's answer for every real image, worked out in another process (on another
    core) while the tests ask the server: ``answers.result()``."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        yield pool.submit(read_all, net.path, real_images())


def test_every_real_image_gets_predict_images_answer(client, answers):
    got = {path: client.post("/api/predict", content=path.read_bytes(),
                             headers={"Content-Type": content_type(path)})
           for path in real_images()}
    for path, expected in answers.result().items():
        r = got[path]
        assert r.status_code == 200, (path.name, r.text)
        r = r.json()
        assert r["digit"] == expected["digit"] and r["number"] == expected["number"], path.name
        assert np.allclose(r["probabilities"], expected["probabilities"], atol=1e-6)
        assert np.array_equal(data_url_pixels(r["image"]), as_shown(expected["image"]))


def test_form_upload_answers_as_the_raw_body(client):
    path = real_images()[0]
    raw = client.post("/api/predict", content=path.read_bytes(),
                      headers={"Content-Type": content_type(path)}).json()
    form = client.post("/api/predict", files={"image": (path.name, path.read_bytes(),
                                                        content_type(path))}).json()
    assert form == raw
    seen = Image.open(io.BytesIO(__import__("base64").b64decode(raw["image"].split(",")[1])))
    assert seen.size == (28, 28)
    assert [t["digit"] for t in raw["top"]][0] == raw["digit"] and len(raw["top"]) == 3


def test_a_written_number_answers_with_its_digits(client, net):
    numbers = REAL / "numbers"
    if not numbers.is_dir():
        pytest.skip("the written numbers are only on this project's machines")
    path = sorted(numbers.glob("*.png"))[0]
    r = client.post("/api/predict", content=path.read_bytes(), headers={"Content-Type": "image/png"})
    got, expected = r.json(), predict_image(path, net)
    assert r.status_code == 200 and got["number"] == expected["number"]
    assert got["digit"] is None and len(got["digits"]) == len(expected["number"])


def test_model_health_and_docs(client, net):
    model = client.get("/api/model").json()
    assert model["sizes"] == [784, 50, 10] and model["dataset"] == "mnist"
    assert model["file"] == str(net.path) and model["device"] == "cpu"
    assert model["iters"] == 3000 and 0.5 < model["train_accuracy"] <= 1
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # nothing from other hosts


BAD = {
    "empty body": (b"", "image/png", 400, "empty"),
    "random bytes": (np.random.default_rng(0).bytes(5000), "image/png", 400, "not an image"),
    "text": (b"seven", "text/plain", 415, "unsupported content type"),
    "text sent as a PNG": (b"seven, in words", "image/png", 400, "not an image"),
    "truncated PNG": (None, "image/png", 400, "not an image"),
    "decompression bomb": (bomb_png(), "image/png", 400, "too large"),
    "blank canvas": (png_bytes(np.full((280, 280), 255, np.uint8)), "image/png", 422, "no digit"),
    "unknown content type": (b"\x00\x01", "application/x-unknown", 415, "unsupported content"),
    "no content type": (b"\x00\x01", "", 415, "no Content-Type header"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_a_4xx_with_a_message_and_the_server_goes_on(client, case):
    body, kind, status, words = BAD[case]
    if body is None:  # the first half of a real photo as a PNG
        photo = Image.open(real_images()[0]).convert("L")
        body = png_bytes(np.asarray(photo))
        body = body[: len(body) // 2]
    r = client.post("/api/predict", content=body, headers={"Content-Type": kind} if kind else {})
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert words in detail and "Traceback" not in detail and "File \"" not in detail
    good = real_images()[0]
    assert client.post("/api/predict", content=good.read_bytes(),
                       headers={"Content-Type": content_type(good)}).status_code == 200


def raw_request(server: str, head: str, body_chunks=()) -> bytes:
    """Send ``head`` and then ``body_chunks`` on a bare socket, without ever finishing the
    body; what the server answers meanwhile."""
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(head.encode())
        for chunk in body_chunks:
            s.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = s.recv(65536)
            if not data:
                break
            answer += data
        return answer


def test_an_oversized_body_is_refused_while_the_client_still_sends_it(server):
    import httpx

    # a declared length over the limit: refused before a byte of the body is sent
    answer = raw_request(server, "POST /api/predict HTTP/1.1\r\nHost: test\r\nContent-Type: "
                                 "image/png\r\nContent-Length: 20000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer
    # no length: counted while it streams, refused after 11 of the 12 MB it would send
    mb = b"%x\r\n" % (1 << 20) + bytes(1 << 20) + b"\r\n"
    answer = raw_request(server, "POST /api/predict HTTP/1.1\r\nHost: test\r\nContent-Type: "
                                 "image/png\r\nTransfer-Encoding: chunked\r\n\r\n", [mb] * 11)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    r = httpx.post(f"{server}/api/predict", content=b"\x89PNG" + bytes(11 << 20),
                   headers={"Content-Type": "image/png"})  # as a client sees it
    assert r.status_code == 413 and "10 MB" in r.json()["detail"]
    assert httpx.get(f"{server}/healthz").status_code == 200


def test_the_server_answers_while_images_are_being_read(server, monkeypatch):
    """The network's work runs off the event loop: /healthz answers while a photo is still
    being read. The reader is held until /healthz has answered, so no timing is involved."""
    import httpx

    import fastmnist.web.app as app_module

    entered, release = threading.Event(), threading.Event()
    read = app_module.predict_image

    def held_read(*args, **kwargs):
        entered.set()
        release.wait(30)
        return read(*args, **kwargs)

    monkeypatch.setattr(app_module, "predict_image", held_read)
    photo = max(real_images(), key=lambda p: p.stat().st_size)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.post, f"{server}/api/predict", content=photo.read_bytes(),
                           headers={"Content-Type": content_type(photo)}, timeout=60)
        try:
            assert entered.wait(30), "the photo never reached the reader"
            health = httpx.get(f"{server}/healthz", timeout=10)
            still_reading = not slow.done()
        finally:
            release.set()
        assert health.status_code == 200
        assert still_reading, "/healthz answered only after the photo was read"
        assert slow.result().status_code == 200


def test_sixteen_clients_at_once_get_no_errors_and_their_own_answers(server, answers):
    import httpx

    with open(REAL / "manifest.tsv", newline="") as f:  # drawings: photos take longest
        drawings = sorted(REAL / r["file"] for r in csv.DictReader(f, delimiter="\t")
                          if r["kind"] != "photo")
    paths = drawings[::len(drawings) // 20][:20]  # every digit
    bodies = [(p.read_bytes(), content_type(p)) for p in paths]

    def client_run(k):
        with httpx.Client(base_url=server, timeout=60) as c:
            return [c.post("/api/predict", content=b, headers={"Content-Type": t})
                    for b, t in bodies[k:] + bodies[:k]]  # each client in its own order

    with ThreadPoolExecutor(16) as pool:
        runs = list(pool.map(client_run, range(16)))
    assert sum(len(run) for run in runs) == 320
    for k, run in enumerate(runs):
        for path, r in zip(paths[k:] + paths[:k], run):
            assert r.status_code == 200, r.text
            assert r.json()["number"] == answers.result()[path]["number"], path.name


def run_cli(*args, code="from fastmnist.cli import main; sys.exit(main(sys.argv[1:]))",
            env=None, cwd=None, timeout=60):
    return subprocess.run([sys.executable, "-c", f"import sys; {code}", "serve", *args],
                          capture_output=True, text=True, env=env or ENV, cwd=cwd,
                          timeout=timeout)


def test_serve_without_the_extra_names_it():
    proc = run_cli(code="sys.modules['fastapi'] = None; "
                        "from fastmnist.cli import main; sys.exit(main(sys.argv[1:]))")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "pip install 'fastmnist[serve]'" in proc.stderr


def test_serve_without_a_model_says_how_to_get_one(tmp_path):
    env = {**ENV, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = run_cli(env=env, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "fastmnist train --dataset mnist --augment" in proc.stderr
    assert "--train" in proc.stderr


def test_serve_without_the_extra_in_python_names_it(monkeypatch, net):
    import fastmnist

    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(ImportError, match=r"pip install 'fastmnist\[serve\]'"):
        fastmnist.serve(net.path)


def test_serve_command_starts_says_where_and_answers(net, tmp_path):
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "fastmnist.cli", "serve", "--model",
                             str(net.path), "--port", "0", "--device", "cpu"], env=ENV,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline()
        second = proc.stdout.readline()
        assert str(net.path) in first and "784-50-10" in first and "mnist" in first
        assert "on cpu" in first
        url = second.split()[1]  # "open http://127.0.0.1:PORT/ to draw a digit ..."
        assert url.startswith("http://127.0.0.1:") and url.endswith("/"), second
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(f"{url}api/model").json()["sizes"] == [784, 50, 10]
        port = url.rsplit(":", 1)[1].strip("/")
        taken = run_cli("--model", str(net.path), "--port", port)  # the same port again
        assert taken.returncode == 2 and "Traceback" not in taken.stderr
        assert f"port {port}: Address already in use; choose another with --port" in taken.stderr
        assert "open http" not in taken.stdout
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_train_stops_when_training_fails(tmp_path):
    env = {**ENV, "XDG_CACHE_HOME": str(tmp_path / "cache"), "FASTMNIST_OFFLINE": "1",
           "FASTMNIST_DATA": str(tmp_path / "no-data")}
    proc = run_cli("--train", "--device", "abacus", env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "fastmnist train --dataset mnist --augment" in proc.stdout
    assert "fastmnist train: error: unknown device 'abacus'" in proc.stderr  # train ran, and said
    assert "open http" not in proc.stdout  # ... and nothing was served


def test_the_page_and_the_extra_ship_with_the_package():
    """`pip install .` installs fastmnist.web and its static files; the extras name the stack."""
    from fnmatch import fnmatch

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setup = config["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "fastmnist").rglob("*.*") if "__pycache__" not in p.parts}
    assert folders <= set(setup["packages"]), folders - set(setup["packages"])
    static = sorted((ROOT / "fastmnist/web/static").iterdir())
    assert {"index.html", "app.js", "style.css"} <= {p.name for p in static}
    for path in static:
        assert any(fnmatch(path.name, g) for g in setup["package-data"]["fastmnist.web.static"])
    extras = config["project"]["optional-dependencies"]
    assert {d.split(">")[0] for d in extras["serve"]} >= {"fastapi", "uvicorn", "python-multipart"}
    assert "fastmnist[serve]" in extras["dev"] and any(d.startswith("playwright")
                                                       for d in extras["dev"])
    assert not any(d.startswith(("fastapi", "uvicorn")) for d in config["project"]["dependencies"])


# -- the page in a real browser -------------------------------------------------------------------
def skeleton_strokes(digit: np.ndarray, scale: float) -> list[list[tuple[float, float]]]:
    """Pen strokes (canvas pixels) that retrace a 28x28 digit: its skeleton walked pixel to
    neighbouring pixel, a new stroke wherever the walk has to jump."""
    from skimage.morphology import skeletonize

    left = {tuple(p) for p in np.argwhere(skeletonize(digit > 100))}
    strokes = []
    while left:
        # start at an end of the skeleton where there is one
        start = min(left, key=lambda p: sum((p[0] + dy, p[1] + dx) in left
                                            for dy in (-1, 0, 1) for dx in (-1, 0, 1)))
        stroke, p = [start], start
        left.discard(start)
        while True:
            near = [(p[0] + dy, p[1] + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                    if (p[0] + dy, p[1] + dx) in left]
            if not near:
                break
            p = min(near, key=lambda q: abs(q[0] - p[0]) + abs(q[1] - p[1]))
            left.discard(p)
            stroke.append(p)
        strokes.append([((x + 0.5) * scale, (y + 0.5) * scale) for y, x in stroke])
    return [s for s in strokes if len(s) > 2]


def readable_drawing(images, labels, net) -> int:
    """The first real MNIST digit that the net reads right when its skeleton is drawn with
    a marker on a 560-pixel canvas (drawn here with Pillow, as the page will draw it)."""
    from PIL import ImageDraw

    for i in range(200):
        canvas = Image.new("RGB", (560, 560), "white")
        pen = ImageDraw.Draw(canvas)
        for stroke in skeleton_strokes(images[i], 20):
            pen.line(stroke, fill="#111", width=42, joint="curve")
            for x, y in (stroke[0], stroke[-1]):
                pen.ellipse([x - 21, y - 21, x + 21, y + 21], fill="#111")
        if predict_image(canvas, net)["digit"] == labels[i]:
            return i
    raise AssertionError("no drawing of the first 200 digits is read right")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"the browser test needs Debian's Chromium at {CHROMIUM}: "
                    "apt-get install -y chromium (.ci/run does this)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs Playwright: pip install -e '.[dev]'")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


SHOWN = """() => ({
    digit: document.getElementById('digit').textContent,
    bars: [...document.querySelectorAll('#bars li')].map(li =>
        li.querySelector('.fill').getBoundingClientRect().width /
        li.querySelector('.track').getBoundingClientRect().width),
    percents: [...document.querySelectorAll('#bars .pct')].map(p => p.textContent),
    best: [...document.querySelectorAll('#bars li')].findIndex(li => li.classList.contains('best')),
    seen: document.getElementById('seen').hidden ? null : document.getElementById('seen').src,
    picks: [...document.querySelectorAll('#picks:not([hidden]) button')].map(b => b.textContent),
    status: document.getElementById('status').textContent,
})"""


def open_page(browser, server, script=None, **options):
    """The page, with every script error and console error collected in ``page.errors``;
    ``script`` replaces app.js (to prove that a broken page fails the checks)."""
    page = browser.new_page(reduced_motion="reduce", **options)  # bars drawn without easing
    page.set_default_timeout(2000 if script else 30000)  # a broken page fails soon
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    if script is not None:
        page.route("**/static/app.js", lambda route: route.fulfill(
            body=script, content_type="text/javascript"))
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('784-50-10')")
    assert page.locator("#bars li").count() == 10
    return page


def answered(page) -> dict:
    """What the page shows once every request it made is answered."""
    page.wait_for_function("document.getElementById('result-card').ariaBusy === 'false'")
    return page.evaluate(SHOWN)


def assert_shows(page, expected: dict):
    """The page shows ``expected`` (predict_image's answer): the digit, the ten bars drawn to
    their probabilities, the 28x28 picture, and the same for screen readers."""
    got = answered(page)
    assert got["digit"] == expected["label"] and got["best"] == expected["digit"], got
    assert np.allclose(got["bars"], expected["probabilities"], atol=0.01), got["bars"]
    assert got["percents"] == [f"{100 * p:.1f}%" for p in expected["probabilities"]]
    assert np.array_equal(data_url_pixels(got["seen"]), as_shown(expected["image"]))
    assert f"reads {expected['label']}" in got["status"]
    assert page.errors == []


def draw(page, strokes):
    """Draw ``strokes`` (lists of (x, y) in the pad's pixels) with the mouse."""
    box = page.locator("#canvas").bounding_box()
    for stroke in strokes:
        page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=2)
        page.mouse.up()


def drawn_png(page) -> bytes:
    url = page.evaluate("document.getElementById('canvas').toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


@pytest.fixture(scope="module")
def mnist_strokes(mnist_test, net):
    """A real MNIST digit's skeleton as pen strokes on a 28-unit square, and its label."""
    images, labels = mnist_test
    index = readable_drawing(images, labels, net)
    return skeleton_strokes(images[index], 1.0), int(labels[index])


def scaled(strokes, side: float):
    return [[(x * side / 28, y * side / 28) for x, y in s] for s in strokes]


def test_the_page_reads_a_drawn_digit_and_an_uploaded_photo(browser, server, net,
                                                           mnist_strokes, tmp_path):
    strokes, label = mnist_strokes
    page = open_page(browser, server, viewport={"width": 1000, "height": 760})
    assert page.evaluate(SHOWN)["digit"] == "?"
    side = page.locator("#canvas").bounding_box()["width"]
    draw(page, scaled(strokes, side))
    png = drawn_png(page)
    (tmp_path / "canvas.png").write_bytes(png)
    expected = predict_image(png, net)  # what the page sent, read by fastmnist itself
    assert expected["digit"] == label
    assert_shows(page, expected)
    page.screenshot(path=str(tmp_path / "drawn.png"))

    page.keyboard.press("Control+z")  # undo the last stroke: the answer follows the drawing
    if len(strokes) > 1:
        assert_shows(page, predict_image(drawn_png(page), net))
    else:
        assert answered(page)["digit"] == "?"
    draw(page, scaled(strokes[-1:], side))  # and back
    assert_shows(page, expected)

    photo = real_images()[0]
    page.set_input_files("#file", str(photo))
    assert not page.locator("#photo").is_hidden()
    assert_shows(page, predict_image(photo, net))
    page.screenshot(path=str(tmp_path / "photo.png"))

    number = REAL / "numbers" / "2026_dfak0.png"
    page.set_input_files("#file", str(number))
    expected = predict_image(number, net)
    got = answered(page)
    assert got["digit"] == expected["number"] and got["picks"] == list(expected["number"])
    assert np.allclose(got["bars"], expected["digits"][0]["probabilities"], atol=0.01)
    page.locator("#picks button").nth(3).click()  # the fourth digit's probabilities
    assert np.allclose(answered(page)["bars"], expected["digits"][3]["probabilities"], atol=0.01)
    assert np.array_equal(data_url_pixels(got["seen"]), as_shown(expected["image"]))
    page.screenshot(path=str(tmp_path / "number.png"))

    page.keyboard.press("Escape")
    assert answered(page)["digit"] == "?" and page.errors == []
    print("screenshots:", *(tmp_path / f"{n}.png" for n in ("drawn", "photo", "number")))
    page.close()


def test_the_page_works_with_the_keyboard(browser, server, net):
    page = open_page(browser, server)
    reached = []
    for _ in range(6):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id"))
        if reached[-1] == "file":
            ring = page.evaluate("getComputedStyle(document.getElementById('file')"
                                 ".closest('label')).outlineStyle")
            assert ring == "solid"  # the visible button shows where the focus is
    assert reached[:4] == ["canvas", "undo", "clear", "file"], reached
    photo = real_images()[1]
    page.locator("#file").set_input_files(str(photo))  # what Enter on the chooser leads to
    assert_shows(page, predict_image(photo, net))
    page.close()


BREAKAGES = {  # what breaks, and what the browser then reports
    "a syntax error": (lambda js: js + "\n}", "Unexpected token"),
    "an answer that is never shown": (lambda js: js.replace(
        "function showAnswer(r) {", "function showAnswer(r) {\n  r.nothing.here;"),
        "Cannot read properties of undefined"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_browser_checks_fail_when_the_page_script_breaks(browser, server, net,
                                                            mnist_strokes, breakage):
    from playwright.sync_api import Error as PlaywrightError

    broken, error = BREAKAGES[breakage]
    script = broken((ROOT / "fastmnist/web/static/app.js").read_text())
    strokes, _ = mnist_strokes
    pages = []
    with pytest.raises((AssertionError, PlaywrightError)):
        pages.append(open_page(browser, server, script=script))
        draw(pages[0], scaled(strokes, pages[0].locator("#canvas").bounding_box()["width"]))
        assert_shows(pages[0], predict_image(drawn_png(pages[0]), net))
    page = browser.contexts[-1].pages[-1]
    assert any(error in e for e in page.errors), page.errors  # failed for this breakage
    page.close()


def test_the_page_fits_a_phone(browser, server, net, mnist_strokes, tmp_path):
    page = open_page(browser, server, viewport={"width": 390, "height": 844}, has_touch=True,
                     is_mobile=True, device_scale_factor=2)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    pad = page.locator("#canvas").bounding_box()
    assert 250 <= pad["width"] <= 390
    strokes, _ = mnist_strokes
    draw(page, scaled(strokes, pad["width"]))
    assert_shows(page, predict_image(drawn_png(page), net))
    answer = page.locator("#digit").bounding_box()
    assert answer["y"] + answer["height"] <= 844  # the answer shows beside the pad, unscrolled
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    page.close()


def test_load_benchmark_runs(net, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_serve

    real_images()
    results = bench_serve.main(["--model", str(net.path), "--clients", "1", "4", "--seconds",
                                "1", "--json", str(tmp_path / "serve.json")])
    assert [r["clients"] for r in results] == [1, 4]
    for r in results:
        assert r["errors"] == 0 and r["requests"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
        assert r["server_peak_rss_mb"] > 20
    assert json.loads((tmp_path / "serve.json").read_text()) == results
