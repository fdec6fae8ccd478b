"""Real handwriting: the development set of real photos and drawings, numbers, refusals."""
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastmnist import TwoLayerNet, train
from fastmnist.cli import main
from fastmnist.images import NoDigitError, load_rgb, predict_image, preprocess_image

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real-digits"
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture(scope="module")
def article_net(mnist_test):
    """784-50-10 trained with the article's settings on the 10,000 real MNIST digits."""
    images, labels = mnist_test
    net = TwoLayerNet(seed=0, device="cpu")
    train(net, images.reshape(-1, 784).astype(np.float32) / 255, labels, iters=10_000, seed=0,
          quiet=True)
    return net


def need_real_digits():
    if not (REAL / "manifest.tsv").is_file():
        pytest.skip(f"the real-handwriting set is only on this project's machines ({REAL})")


def test_real_handwriting_is_read_far_better_than_the_article_pipeline(article_net):
    need_real_digits()
    import real_digits

    r = real_digits.evaluate({"plain": article_net})
    ours, article = r["fastmnist/plain"], r["article/plain"]
    print(real_digits.report_table(r))
    # 0.899 measured (0.878 to 0.907 over nine training seeds, mean 0.896); the article's
    # pipeline: 0.371
    assert ours["accuracy"] >= 0.88
    assert ours["accuracy"] > article["accuracy"] + 0.4
    for kind, (correct, count) in ours["by_kind"].items():
        assert correct / count >= 0.75, kind


def test_written_numbers_are_read_digit_by_digit(article_net):
    need_real_digits()
    with open(REAL / "numbers" / "manifest.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        r = predict_image(REAL / "numbers" / row["file"], article_net)
        assert len(r["digits"]) == len(row["number"]), row["file"]
        assert r["digit"] is None and r["image"].shape == (28, 28 * len(row["number"]))
    read = [predict_image(REAL / "numbers" / row["file"], article_net)["number"] for row in rows]
    assert sum(a == row["number"] for a, row in zip(read, rows)) >= 4


def compose_row(paths, gap: int, height: int = 120) -> np.ndarray:
    """Real single-digit images side by side, scaled to one height, with white gaps."""
    parts = []
    for p in paths:
        rgb = load_rgb(p)
        if rgb.mean() < 0.5:  # light strokes on dark: make every part dark on light
            rgb = 1.0 - rgb
        h, w = rgb.shape[:2]
        img = Image.fromarray((rgb * 255).astype(np.uint8)).resize((max(1, w * height // h), height))
        parts += [np.asarray(img, np.float32) / 255, np.ones((height, gap, 3), np.float32)]
    row = np.concatenate(parts[:-1], axis=1)
    return np.pad(row, ((30, 30), (30, 30), (0, 0)), constant_values=1.0)


def test_rows_composed_from_real_digits_are_split_in_order(article_net):
    need_real_digits()
    with open(REAL / "manifest.tsv", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["kind"] == "canvas"]
    split_right, alone_right, together_right = split_rows(rows, article_net, cases=60)
    assert split_right >= 0.98 * 60  # 150 of 150 measured with another seed
    assert together_right >= 0.94 * alone_right  # 476 vs 498 measured (150 rows)


def test_rows_of_tiny_drawings_keep_their_faint_digits(article_net):
    """The tiny drawings were made with very different pens: a faint grey 1-pixel digit often
    stands beside a bold one, and was lost before ink too faint for the bold digit's levels was
    looked for again (74 of 100 rows split right; 91 of 100 now)."""
    need_real_digits()
    with open(REAL / "manifest.tsv", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["kind"] == "tiny"]
    split_right, _, _ = split_rows(rows, article_net, cases=40)
    assert split_right >= 0.8 * 40  # 35 of 40 measured, 27 before


def split_rows(rows, net, cases: int):
    """Rows of 2 to 5 of ``rows``' images composed with gaps and read: how many were split
    into as many digits as they hold, and in those, the digits read right alone and in the row."""
    rng = np.random.default_rng(0)
    split_right, alone_right, together_right = 0, 0, 0
    for _ in range(cases):
        pick = [rows[i] for i in rng.choice(len(rows), int(rng.integers(2, 6)), replace=False)]
        paths = [REAL / r["file"] for r in pick]
        r = predict_image(compose_row(paths, gap=int(rng.integers(25, 60))), net)
        split_right += len(r["digits"]) == len(pick)
        if len(r["digits"]) == len(pick):
            alone = [predict_image(p, net, several=False)["digit"] for p in paths]
            together_right += sum(d["digit"] == int(p["label"]) for d, p in zip(r["digits"], pick))
            alone_right += sum(a == int(p["label"]) for a, p in zip(alone, pick))
    return split_right, alone_right, together_right


def test_pictures_without_a_digit_are_refused():
    rng = np.random.default_rng(0)
    nothing = {
        "blank": np.full((200, 200), 0.8, np.float32),
        "noise": rng.random((200, 200, 3)),
        "grainy paper": np.clip(0.85 + rng.normal(0, 0.03, (300, 400)), 0, 1),
        "lighting gradient": np.tile(np.linspace(0.5, 0.95, 400), (300, 1)),
        "one pixel": np.zeros((1, 1)),
    }
    for name, image in nothing.items():
        with pytest.raises(NoDigitError, match="found no digit"):
            preprocess_image(image)
            pytest.fail(f"{name} was read as a digit")


def test_files_that_are_empty_huge_or_cmyk(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        preprocess_image(empty)
    huge = tmp_path / "huge.png"
    Image.new("1", (12_000, 8_000)).save(huge)  # 96 megapixels, small on disk
    with pytest.raises(ValueError, match="too large"):
        preprocess_image(huge)
    cmyk = Image.new("CMYK", (300, 300), (0, 0, 0, 0))
    from PIL import ImageDraw

    ImageDraw.Draw(cmyk).line([(150, 40), (140, 260)], fill=(0, 0, 0, 255), width=16)
    cmyk.save(tmp_path / "one.jpg")
    out = preprocess_image(tmp_path / "one.jpg")
    assert out.shape == (28, 28) and out.max() == 1.0
    big = tmp_path / "big.jpg"  # 40 megapixels: decoded reduced
    page = np.full((5000, 8000), 235, np.uint8)
    page[1500:3500, 3900:4100] = 20
    Image.fromarray(page).save(big, quality=80)
    out = preprocess_image(big)
    assert out.shape == (28, 28) and out[:, 14].sum() > out[:, 4].sum()


def test_a_fashion_model_names_its_classes_and_warns_about_digits(tmp_path, capsys, mnist_test):
    images, _ = mnist_test
    net = TwoLayerNet(seed=0, device="cpu")
    model = net.save(tmp_path / "fashion.npz", dataset="fashion-mnist")
    photo = tmp_path / "digit.png"
    Image.fromarray(255 - np.kron(images[0], np.ones((8, 8), np.uint8))).save(photo)
    r = TwoLayerNet.load(model, device="cpu").predict_image(photo)
    assert r["label"] in ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                          "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert main(["predict", str(photo), "--model", str(model)]) == 0
    captured = capsys.readouterr()
    assert "trained on fashion-mnist" in captured.err and "--dataset mnist" in captured.err
    assert r["label"] in captured.out


def test_predict_reads_folders_and_keeps_failures_in_json(tmp_path, capsys, mnist_test):
    images, _ = mnist_test
    net = TwoLayerNet(seed=0, device="cpu")
    model = net.save(tmp_path / "m.npz", dataset="mnist")
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(255 - np.kron(images[i], np.ones((6, 6), np.uint8))).save(folder / f"{i}.png")
    (folder / "bad.png").write_bytes(b"")
    assert main(["predict", str(folder), "--model", str(model), "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [Path(r["image"]).name for r in rows] == ["0.png", "1.png", "2.png", "bad.png"]
    assert "empty" in rows[-1]["error"] and all("digit" in r for r in rows[:3])


def bar_digit() -> np.ndarray:
    """A plain 1: an upright bar 3 px wide and 20 px tall in a 28x28 frame, float32."""
    image = np.zeros((28, 28), np.float32)
    image[4:24, 13:16] = 1.0
    return image


def test_written_styles_flag_and_foot_ones_cross_sevens_curl_nines_and_leave_others(monkeypatch):
    from fastmnist import augment

    monkeypatch.setattr(augment, "STYLES", dict.fromkeys(augment.STYLES, 1.0))
    rng = np.random.default_rng(0)
    one = augment.written_style(bar_digit(), 1, rng)
    rows, cols = np.nonzero(one > 0.5)
    assert one.shape == (28, 28) and one.dtype == np.float32
    top, bottom = rows.min(), rows.max()
    assert cols[rows < top + 4].min() < cols[rows > bottom - 4].max() - 3  # the flag leans left
    assert (one[bottom] > 0.5).sum() >= 5  # the foot is wider than the stem
    seven = augment.written_style(bar_digit(), 7, rng)
    middle = seven[10:18]
    assert (middle > 0.5).sum(axis=1).max() >= 5  # a crossbar across the stem
    nine = augment.written_style(bar_digit(), 9, rng)
    rows, cols = np.nonzero(nine > 0.5)
    low = rows > rows.max() - 5
    assert cols[low].min() < cols[rows < rows.min() + 5].min() - 3  # the tail bends left...
    assert rows[cols == cols.min()].max() < rows.max()  # ...and back up
    for label in (2, 3, 4, 5, 6, 8):
        assert np.array_equal(augment.written_style(bar_digit(), label, rng), bar_digit())


def test_a_seven_broken_where_its_crossbar_goes_still_gets_one(monkeypatch):
    """A stem with no ink at mid height (a pen that skipped) takes the crossbar from the
    nearest inked row instead of failing."""
    from fastmnist import augment

    monkeypatch.setattr(augment, "STYLES", {"flag": 0.0, "foot": 0.0, "crossbar": 1.0,
                                            "slash": 0.0, "hook": 0.0})
    broken = bar_digit()
    broken[11:17] = 0.0
    seven = augment.written_style(broken, 7, np.random.default_rng(0))
    assert np.isfinite(seven).all() and seven.max() == 1.0
    assert (seven > 0.5).sum(axis=1).max() >= 5  # a crossbar wider than the stem


def test_writing_styles_can_be_left_out_for_other_datasets(monkeypatch):
    from fastmnist import augment

    monkeypatch.setattr(augment, "STYLES", dict.fromkeys(augment.STYLES, 1.0))
    calls = []
    monkeypatch.setattr(augment, "written_style",
                        lambda im, label, rng, styles: calls.append(label) or im)
    x, t = np.tile(bar_digit().reshape(1, 784), (3, 1)), np.array([1, 7, 0])
    augment.augmented_training_set(x, t, copies=1, seed=0, writing_styles=False)
    assert calls == []
    augment.augmented_training_set(x, np.eye(10)[t], copies=1, seed=0)  # one-hot labels too
    assert calls == [1, 7, 0]


def test_only_straightened_copies_get_curled_nines(monkeypatch):
    """The own-slant copies keep showing MNIST's 9s as written (a curled tail on them cost
    MNIST's own 9s: README)."""
    from fastmnist import augment

    seen = []
    monkeypatch.setattr(augment, "written_style",
                        lambda im, label, rng, styles: seen.append(styles["hook"]) or im)
    x, t = np.tile(bar_digit().reshape(1, 784), (2, 1)), np.array([9, 9])
    augment.augmented_training_set(x, t, copies=3, seed=0)
    hook = augment.STYLES["hook"]
    assert hook > 0 and seen == [hook, hook, hook, hook, 0.0, 0.0]  # copies 1, 2 straightened
    seen.clear()
    augment.augmented_training_set(x, t, copies=3, seed=0, straighten=False)
    assert seen == [0.0] * 6


def test_copies_are_straightened_as_photos_are_unless_asked_not_to(monkeypatch):
    """The digit itself and two copies in three are at MNIST's mean slant, every third copy
    at the digit's own; with fewer than three copies the digit itself stays as written;
    ``straighten=False`` (other datasets) leaves every slant alone."""
    from fastmnist import augment
    from fastmnist.strokes import MNIST_SLANT, slant

    monkeypatch.setattr(augment, "jitter", lambda image, rng, **spread: image)
    leaning = np.zeros((28, 28), np.float32)
    for row in range(4, 24):  # a bar whose top leans 8 px to the right of its foot
        col = 18 - (row - 4) * 8 // 20
        leaning[row, col - 1: col + 2] = 1.0
    x, t = leaning.reshape(1, 784), np.array([4])
    own = slant(leaning)
    assert own < -0.3
    xa, ta = augment.augmented_training_set(x, t, copies=3, seed=0, writing_styles=False)
    slants = [slant(row.reshape(28, 28)) for row in xa]
    assert list(ta) == [4] * 4
    assert all(abs(s - MNIST_SLANT) < 0.05 for s in slants[:3])  # the digit and two copies
    assert slants[3] == pytest.approx(own)  # the third copy at the digit's own slant
    xa2, _ = augment.augmented_training_set(x, t, copies=2, seed=0, writing_styles=False)
    assert np.array_equal(xa2[0], x[0])  # no own-slant copy: the digit is kept as written
    assert all(abs(slant(row.reshape(28, 28)) - MNIST_SLANT) < 0.05 for row in xa2[1:])
    pixels, _ = augment.augmented_training_set((x * 255).astype(np.uint8), t, copies=3, seed=0,
                                               writing_styles=False)
    assert pixels.dtype == np.uint8 and np.abs(pixels[0] / 255.0 - xa[0]).max() <= 0.5 / 255
    xo, _ = augment.augmented_training_set(x, t, copies=3, seed=0, writing_styles=False,
                                           straighten=False)
    assert np.array_equal(xo[0], x[0])
    assert all(slant(row.reshape(28, 28)) == pytest.approx(own) for row in xo)


def test_augmented_article_net_reads_real_handwriting_better(article_net, mnist_test):
    """The article's settings on the 10k MNIST digits plus augmented_training_set's copies."""
    need_real_digits()
    import real_digits
    from fastmnist.augment import augmented_training_set

    images, labels = mnist_test
    x, t = augmented_training_set(images.reshape(-1, 784), labels, seed=0)
    net = TwoLayerNet(seed=0, device="cpu")
    train(net, x.astype(np.float32) / 255, t, iters=10_000, seed=0, quiet=True)
    r = real_digits.evaluate({"plain": article_net, "augmented": net})
    plain, augmented = r["fastmnist/plain"], r["fastmnist/augmented"]
    print(real_digits.report_table(r))
    assert augmented["accuracy"] >= 0.95  # 0.966 measured (0.932 to 0.966 over six seeds)
    assert augmented["accuracy"] > plain["accuracy"]
    ones, nines = augmented["by_digit"]["1"], augmented["by_digit"]["9"]
    assert ones[0] >= 0.85 * ones[1]  # flagged and footed 1s: 21/22 measured, plain net 13/22
    assert nines[0] >= 0.92 * nines[1]  # curled 9s among them: 25/25 measured, plain net 22/25


def test_the_augmented_net_still_reads_mnist_as_written(mnist_test):
    """Trained on the first 8,000 MNIST digits and their default copies (the digits
    straightened, a quarter of the rows at their own slant), the net reads the 2,000 held-back
    digits, which nobody straightened, about as well as the plain net does."""
    from fastmnist.augment import augmented_training_set

    images, labels = mnist_test
    x = images.reshape(-1, 784)
    xa, ta = augmented_training_set(x[:8000], labels[:8000], seed=0)
    augmented = TwoLayerNet(seed=0, device="cpu")
    train(augmented, xa, ta, iters=10_000, seed=0, quiet=True)
    plain = TwoLayerNet(seed=0, device="cpu")
    train(plain, x[:8000], labels[:8000], iters=10_000, seed=0, quiet=True)
    held = x[8000:].astype(np.float32) / 255
    a, p = augmented.accuracy(held, labels[8000:]), plain.accuracy(held, labels[8000:])
    print(f"2,000 held-back MNIST digits: augmented net {a:.3f}, plain net {p:.3f}")
    assert a >= 0.93  # 0.947 measured
    assert a >= p - 0.02


def test_the_bytes_of_a_file_read_as_the_file_does(article_net, tmp_path):
    need_real_digits()
    path = sorted(REAL.glob("*.jpg"))[0]
    by_path, by_bytes = predict_image(path, article_net), predict_image(path.read_bytes(), article_net)
    assert by_bytes["digit"] == by_path["digit"]
    assert np.array_equal(by_bytes["probabilities"], by_path["probabilities"])
    for data, message in ((b"", "empty"), (b"\x89PNG\r\n\x1a\nnot really", "not an image")):
        with pytest.raises(ValueError, match=message):
            predict_image(data, article_net)
