"""fastmnist serve: the API against predict_image, bad input, load, the command, and the page in
a real Chromium driven by Playwright."""
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


def test_every_real_image_gets_predict_images_answer(client, net):
    for path in real_images():
        r = client.post("/api/predict", content=path.read_bytes(),
                        headers={"Content-Type": content_type(path)})
        assert r.status_code == 200, (path.name, r.text)
        expected = predict_image(path, net)
        got = r.json()
        assert got["digit"] == expected["digit"], path.name
        assert np.allclose(got["probabilities"], expected["probabilities"], atol=1e-6)
        assert got["image"].startswith("data:image/png;base64,")


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
    "truncated PNG": (None, "image/png", 400, "not an image"),
    "decompression bomb": (bomb_png(), "image/png", 400, "too large"),
    "blank canvas": (png_bytes(np.full((280, 280), 255, np.uint8)), "image/png", 422, "no digit"),
    "unknown content type": (b"\x00\x01", "application/x-unknown", 415, "unsupported content"),
    "no content type": (b"\x00\x01", "", 415, "unsupported content type"),
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


def test_a_body_over_the_limit_is_refused_before_it_is_read(server):
    import httpx

    big = b"\x89PNG" + bytes(11 * 1024 * 1024)
    r = httpx.post(f"{server}/api/predict", content=big, headers={"Content-Type": "image/png"})
    assert r.status_code == 413 and "10 MB" in r.json()["detail"]
    sent = []

    def chunks():  # no Content-Length: the server counts as it reads
        for _ in range(12):
            sent.append(1)
            yield bytes(1024 * 1024)

    r = httpx.post(f"{server}/api/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert r.status_code == 413
    assert httpx.get(f"{server}/healthz").status_code == 200


def test_sixteen_clients_at_once_get_no_errors(server):
    import httpx

    paths = real_images()[:20]
    bodies = [(p.read_bytes(), content_type(p)) for p in paths]

    def client_run(k):
        with httpx.Client(base_url=server, timeout=60) as c:
            return [c.post("/api/predict", content=b, headers={"Content-Type": t}).status_code
                    for b, t in bodies]

    with ThreadPoolExecutor(16) as pool:
        codes = [c for run in pool.map(client_run, range(16)) for c in run]
    assert len(codes) == 320 and set(codes) == {200}


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


def test_serve_command_starts_says_where_and_answers(net, tmp_path):
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "fastmnist.cli", "serve", "--model",
                             str(net.path), "--port", str(port)], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline()
        second = proc.stdout.readline()
        assert str(net.path) in first and "784-50-10" in first and "mnist" in first
        assert f"http://localhost:{port}/" in second
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/api/model").json()["sizes"] == [784, 50, 10]
    finally:
        proc.terminate()
        proc.wait(10)


def test_import_fastmnist_and_its_command_leave_the_web_stack_alone():
    code = ("import sys, fastmnist, fastmnist.cli; "
            "print(json.dumps(sorted(m for m in ('fastapi', 'starlette', 'uvicorn') "
            "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], env=ENV,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


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
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


def shown(page) -> dict:
    return page.evaluate("""() => ({
        digit: document.getElementById('digit').textContent,
        bars: [...document.querySelectorAll('#bars li .fill')].map(f => parseFloat(f.style.width)),
        best: [...document.querySelectorAll('#bars li')].findIndex(li => li.classList.contains('best')),
        seen: !document.getElementById('seen').hidden,
        status: document.getElementById('status').textContent,
    })""")


def test_the_page_reads_a_drawn_digit_and_an_uploaded_photo(browser, server, net, mnist_test,
                                                           tmp_path):
    images, labels = mnist_test
    errors = []
    page = browser.new_page(viewport={"width": 1000, "height": 760})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('784-50-10')")
    assert page.locator("#bars li").count() == 10

    canvas = page.locator("#canvas")
    box = canvas.bounding_box()
    index = readable_drawing(images, labels, net)
    for stroke in skeleton_strokes(images[index], box["width"] / 28):
        page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=2)
        page.mouse.up()
    page.wait_for_function("document.getElementById('status').textContent.includes('reads')")
    page.wait_for_timeout(600)  # the debounced request after the last stroke
    drawn = page.evaluate("document.getElementById('canvas').toDataURL('image/png')")
    png = __import__("base64").b64decode(drawn.split(",")[1])
    (tmp_path / "canvas.png").write_bytes(png)
    expected = predict_image(png, net)
    got = shown(page)
    assert got["digit"] == str(expected["digit"]) == str(labels[index]), got
    assert got["best"] == expected["digit"] and got["seen"]
    assert np.allclose(got["bars"], 100 * np.asarray(expected["probabilities"]), atol=0.06)
    page.screenshot(path=str(tmp_path / "drawn.png"))

    photo = real_images()[0]
    page.set_input_files("#file", str(photo))
    page.wait_for_function("!document.getElementById('photo').hidden")
    expected = predict_image(photo, net)
    page.wait_for_function(f"document.getElementById('digit').textContent === '{expected['digit']}'")
    assert shown(page)["best"] == expected["digit"]
    page.screenshot(path=str(tmp_path / "photo.png"))

    page.keyboard.press("Escape")
    page.wait_for_function("document.getElementById('digit').textContent === '?'")
    assert errors == []
    print("screenshots:", tmp_path / "drawn.png", tmp_path / "photo.png")
    page.close()


def test_the_page_fits_a_phone(browser, server):
    page = browser.new_page(viewport={"width": 390, "height": 844}, has_touch=True)
    page.goto(server + "/")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    pad = page.locator("#canvas").bounding_box()
    assert 250 <= pad["width"] <= 390
    page.close()


def test_load_benchmark_runs(net, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_serve

    real_images()
    results = bench_serve.main(["--model", str(net.path), "--clients", "1", "4", "--seconds",
                                "1.5", "--json", str(tmp_path / "serve.json")])
    assert [r["clients"] for r in results] == [1, 4]
    for r in results:
        assert r["errors"] == 0 and r["requests"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
        assert r["server_peak_rss_mb"] > 20
    assert json.loads((tmp_path / "serve.json").read_text()) == results
