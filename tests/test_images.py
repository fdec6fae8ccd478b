import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastmnist import TwoLayerNet, train
from fastmnist.cli import main
from fastmnist.images import load_rgb, predict_image, preprocess_image
from fastmnist.strokes import straightened_frame

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import photo_eval  # noqa: E402


@pytest.fixture(scope="module")
def trained(mnist_test):
    """A net trained on real digits 0-7999 (the photos below come from digits 8000+)."""
    images, labels = mnist_test
    x = images.reshape(-1, 784).astype(np.float32) / 255
    net = TwoLayerNet(seed=0, device="cpu")
    train(net, x[:8000], labels[:8000], iters=6000, seed=0, quiet=True)
    return net


def test_photos_of_real_digits_are_recovered_and_read(mnist_test, trained, tmp_path):
    images, labels = mnist_test
    r = photo_eval.evaluate(images[8000:], labels[8000:], trained, tmp_path, count=150, papers=())
    print(json.dumps(r, indent=1))
    # Photos lose little: 0.963 read against 0.957 for the clean digits (300 photos, 10k steps)
    assert r["similarity_mean"] > 0.93
    assert r["accuracy_fastmnist_preprocessing"] >= r["accuracy_clean_originals"] - 0.03
    assert r["accuracy_fastmnist_preprocessing"] > r["accuracy_article_pipeline"] + 0.3
    names = {p.suffix for p in tmp_path.iterdir()}
    assert names == {".jpg", ".png"}


def test_exif_rotation_is_undone(mnist_test, tmp_path):
    images, _ = mnist_test
    photo, _ = photo_eval.make_photo(images[0], np.random.default_rng(3))
    photo = photo.convert("RGB")
    upright = preprocess_image(photo)
    for orientation, hide in photo_eval.HIDE.items():
        exif = Image.Exif()
        exif[photo_eval.EXIF_ORIENTATION] = orientation
        path = tmp_path / f"o{orientation}.jpg"
        photo.transpose(hide).save(path, quality=95, exif=exif)
        assert photo_eval.similarity(preprocess_image(path), upright) > 0.97, orientation


def test_transparent_drawing_and_light_on_dark(mnist_test):
    images, _ = mnist_test
    digit = images[5] / 255.0
    rgba = np.zeros((280, 280, 4), np.float32)
    rgba[..., 3] = np.kron(digit, np.ones((10, 10)))  # black strokes, transparent elsewhere
    chalk = np.kron(digit, np.ones((10, 10)))  # light strokes on black, like MNIST itself
    clean = preprocess_image(images[5])  # the digit itself, framed and straightened the same way
    assert photo_eval.similarity(clean, straightened_frame(digit)) > 0.95
    for source in (rgba, chalk, (chalk * 255).astype(np.uint8)):
        assert photo_eval.similarity(preprocess_image(source), clean) > 0.95


def test_output_is_mnist_like(mnist_test):
    images, _ = mnist_test
    out = preprocess_image(np.kron(255 - images[9], np.ones((8, 8))))  # dark ink on white paper
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    rows, cols = np.flatnonzero(out.max(1) > 0.05), np.flatnonzero(out.max(0) > 0.05)
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (19, 20, 21)
    from scipy import ndimage

    cy, cx = ndimage.center_of_mass(out)
    assert abs(cy - 14) < 1 and abs(cx - 14) < 1


def test_blank_and_unreadable_images_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no digit"):
        preprocess_image(np.full((100, 100), 0.8, np.float32))
    junk = tmp_path / "x.png"
    junk.write_bytes(b"not a picture")
    with pytest.raises(ValueError, match="not an image"):
        preprocess_image(junk)
    with pytest.raises(FileNotFoundError):
        load_rgb(tmp_path / "missing.png")


def test_predict_image_and_the_net_method(trained, mnist_test):
    images, labels = mnist_test
    k = 8001
    r = predict_image(np.kron(images[k], np.ones((6, 6))), trained, top=2)
    assert r["digit"] == labels[k] and len(r["top"]) == 2 and r["top"][0][0] == labels[k]
    assert abs(sum(r["probabilities"]) - 1) < 1e-4
    assert trained.predict_image(np.kron(images[k], np.ones((6, 6))))["digit"] == labels[k]


def test_predict_command_end_to_end(trained, mnist_test, tmp_path, capsys):
    images, labels = mnist_test
    model = trained.save(tmp_path / "model.npz")
    rng = np.random.default_rng(5)
    paths, truth = [], []
    for i in range(8010, 8016):
        photo, _ = photo_eval.make_photo(images[i], rng)
        paths.append(str(photo_eval.save_photo(photo, tmp_path / f"d{i}", rng)))
        truth.append(int(labels[i]))
    assert main(["predict", *paths, "--model", str(model)]) == 0
    out = capsys.readouterr().out.splitlines()
    printed = [int(line.split(": ")[1].split()[0]) for line in out]
    assert printed == [predict_image(p, trained)["digit"] for p in paths]
    assert sum(a == b for a, b in zip(printed, truth)) >= 5
    plot, pre = tmp_path / "p.png", tmp_path / "pre"
    assert main(["predict", *paths[:3], "--model", str(model), "--json", "--top", "2",
                 "--plot", str(plot), "--save-preprocessed", str(pre)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["digit"] for d in data] == printed[:3] and len(data[0]["top"]) == 2
    assert plot.read_bytes()[:4] == b"\x89PNG" and len(list(pre.glob("*.png"))) == 3
    assert main(["predict", str(tmp_path / "nope.png"), "--model", str(model)]) == 1
    assert "no image file" in capsys.readouterr().err


def test_augmentation_makes_the_net_robust_to_jittered_digits(trained, mnist_test):
    from fastmnist.augment import augmented_training_set

    images, labels = mnist_test
    x = images.reshape(-1, 784).astype(np.float32) / 255
    xa, ta = augmented_training_set(x[:8000], labels[:8000], copies=1, seed=0)
    assert xa.shape == (16000, 784) and np.array_equal(ta[8000:], labels[:8000])
    assert not np.allclose(xa[8000:], x[:8000])
    robust = TwoLayerNet(seed=0, device="cpu")
    train(robust, xa, ta, iters=6000, seed=0, quiet=True)
    jittered, _ = augmented_training_set(x[8000:], labels[8000:], copies=1, seed=99)
    jittered = jittered[2000:]
    plain_acc, robust_acc = trained.accuracy(jittered, labels[8000:]), robust.accuracy(jittered, labels[8000:])
    print(f"jittered held-out digits: plain net {plain_acc:.3f}, augmented net {robust_acc:.3f}")
    assert robust_acc > plain_acc + 0.05


def test_thin_pens_and_fat_markers_are_brought_to_mnists_pen(mnist_test, trained):
    images, labels = mnist_test
    r = photo_eval.pen_accuracy(images[8000:], labels[8000:], trained, count=150, pens=(0.1, 3.0))
    print(json.dumps(r, indent=1))
    thin, fat = r["pen_x0.1"], r["pen_x3.0"]
    assert thin["fair"] >= 75 and fat["fair"] >= 50  # 96 and 68 of 150 measured
    # a 1-pixel canvas pen: 0.958 read against 0.979 for the same digits as written
    assert thin["accuracy_fair"] >= thin["accuracy_clean_fair"] - 0.05
    # a marker 3x MNIST's pen: 0.750 (0.485 when only strokes over 4x MNIST's were thinned)
    assert fat["accuracy_fair"] >= 0.65


def test_thickness_is_the_pens_not_that_of_a_loop_it_filled():
    from fastmnist.strokes import stroke_thickness, stroke_width

    yy, xx = np.mgrid[:240, :200]
    bar = (np.abs(xx - 100) <= 6) & (yy > 20) & (yy < 220)  # 13 pixels wide
    assert stroke_thickness(bar) == pytest.approx(13, abs=1)
    # a stem 9 wide ending in a disc, like a 9 whose small loop the pen filled
    stem = ((np.abs(xx - 100) <= 4) & (yy > 20) & (yy < 200)) | (np.hypot(yy - 170, xx - 100) < 30)
    assert stroke_thickness(stem) == pytest.approx(9, abs=1)
    assert stroke_width(stem) > 2 * stroke_thickness(stem)  # area over length counts the disc


def test_pen_drawings_are_fair_only_when_their_centre_lines_cover_the_digit():
    ring = np.zeros((28, 28), np.uint8)
    yy, xx = np.mgrid[:28, :28]
    ring[np.abs(np.hypot(yy - 14, xx - 14) - 7) < 1.5] = 255  # a 0 drawn with MNIST's pen
    blob = ((np.hypot(yy - 14, xx - 14) < 5) * 255).astype(np.uint8)  # a loop the pen filled
    drawing, fair = photo_eval.pen_drawing(ring, 1.0)
    assert fair and drawing.dtype == np.float32 and drawing.min() < 0.1 and drawing.max() == 1.0
    assert not photo_eval.pen_drawing(ring, 6.0)[1]  # a pen that fills the 0's loop
    assert not photo_eval.pen_drawing(blob, 1.0)[1]


def test_ruled_and_squared_paper_lines_are_taken_out(mnist_test, trained):
    images, labels = mnist_test
    count, rng = 60, np.random.default_rng(5)
    truth = labels[8000:8000 + count]
    clean = [preprocess_image(images[8000 + i]) for i in range(count)]

    def accuracy(frames):
        x = np.stack(frames).reshape(count, 784)
        return float((trained.predict(x).argmax(axis=1) == truth).mean())

    for squared in (False, True):
        photos = [photo_eval.notebook_photo(images[8000 + i], rng, squared) for i in range(count)]
        read = [preprocess_image(p) for p in photos]
        similarity = np.mean([photo_eval.similarity(a, b) for a, b in zip(read, clean)])
        print(f"squared={squared}: similarity {similarity:.3f}, read {accuracy(read):.3f}, "
              f"clean {accuracy(clean):.3f}")
        # measured (60 digits): similarity 0.97 on both papers, 0.967 read against 0.950 clean
        assert similarity > 0.9
        assert accuracy(read) >= accuracy(clean) - 0.07


def test_long_strokes_of_digits_are_not_taken_for_printed_lines(mnist_test, monkeypatch):
    """Tight crops, where a 1's stem, a 4's stem or a 7's bar spans the picture, and flagged,
    footed 1s and crossed 7s read exactly as they would with no line removal at all."""
    from fastmnist import augment, ink, lines
    from fastmnist.strokes import crop

    images, labels = mnist_test
    monkeypatch.setattr(augment, "STYLES", dict.fromkeys(augment.STYLES, 1.0))
    rng = np.random.default_rng(0)
    picks = [i for i in range(2000) if labels[i] in (1, 4, 7)][:60]
    digits = [images[i] / 255.0 for i in range(40)] + [
        augment.written_style(images[i] / 255.0, int(labels[i]), rng) for i in picks]
    pages = [np.kron(1.0 - crop(d, 0.2), np.ones((8, 8))) for d in digits]  # ink box = frame

    def outcome(page):  # a crop this tight can be mostly ink, which may read as blank paper
        try:
            return preprocess_image(page)
        except ValueError as exc:
            return str(exc)

    searched = []
    search = lines.long_level_runs
    monkeypatch.setattr(lines, "long_level_runs", lambda *a: searched.append(1) or search(*a))
    with_lines = [outcome(p) for p in pages]
    assert len(searched) >= 30  # strokes ran edge to edge and were looked at as lines
    assert sum(isinstance(r, np.ndarray) for r in with_lines) >= 0.9 * len(pages)  # 99 of 100
    monkeypatch.setattr(ink, "ruled_lines", lambda mask, faint: np.zeros_like(mask))
    for page, read in zip(pages, with_lines):
        np.testing.assert_array_equal(outcome(page), read)


def test_a_crop_tight_round_the_digit_is_read(mnist_test, trained):
    """Cropped to the ink's box, a digit is ink over up to half the picture: the paper's noise
    is measured on the paper alone, not taken from ink pixels (which read as blank paper)."""
    from fastmnist.strokes import crop

    images, labels = mnist_test
    picks = [i for i in range(8000, 8200) if labels[i] != 1][:120]  # a tight 1 is a dark bar
    frames, read = [], []
    for i in picks:
        try:
            frames.append(preprocess_image(np.kron(1.0 - crop(images[i] / 255.0, 0.2),
                                                   np.ones((8, 8)))))
            read.append(i)
        except ValueError:  # a bold digit in a very narrow crop can look like a shadow
            pass
    assert len(read) >= 0.97 * len(picks)  # 120 of 120 (before: 86, of which 0.55 right)
    clean = [preprocess_image(images[i]) for i in read]

    def accuracy(x):
        return float((trained.predict(np.stack(x).reshape(len(read), 784)).argmax(axis=1)
                      == labels[read]).mean())

    print(f"tight crops: {len(read)} of {len(picks)} read, {accuracy(frames):.3f} right, "
          f"clean {accuracy(clean):.3f}")
    assert accuracy(frames) >= accuracy(clean) - 0.05


def test_a_1_cropped_tight_with_soft_edges_is_read(mnist_test, trained):
    """A narrow 1 cropped to its ink is ink over half the picture, and its grey edges blur ink
    and paper into one spread of tones: the tone first taken for ink can find nothing, and the
    picture is then searched for bold strokes spanning it, in either tone."""
    from fastmnist.strokes import crop

    images, labels = mnist_test
    picks = [i for i in range(8000, 10000) if labels[i] == 1][:100]
    read = []
    for i in picks:
        c = crop(images[i] / 255.0, 0.05)
        photo = Image.fromarray(np.uint8(255 - 255 * c)).resize((6 * c.shape[1], 6 * c.shape[0]),
                                                                Image.Resampling.BILINEAR)
        try:
            read.append(preprocess_image(photo))
        except ValueError:
            pass
    right = int((trained.predict(np.stack(read).reshape(-1, 784)).argmax(axis=1) == 1).sum())
    print(f"tight 1s: {len(read)} of {len(picks)} read, {right} right")
    assert len(read) >= 95  # 97 (before: 92, the others refused as blank paper)
    assert right >= 0.9 * len(read)  # 91 of 97 (before: 88 of 92)


def test_a_phone_size_photo_is_reduced_before_it_becomes_floats(mnist_test, trained, tmp_path):
    """A 4032x3024 photo (a phone's 12 megapixels) is decoded at half size (JPEG) or halved on
    its 8-bit pixels (PNG, and after EXIF rotation), never turned into floats at full size, and
    reads as the same page photographed at 2016x1512."""
    from fastmnist.images import DETAIL_SIDE, load_rgb, open_image

    images, labels = mnist_test
    i = 8001
    rng = np.random.default_rng(0)
    page = np.clip(0.9 + rng.normal(0, 0.02, (3024, 4032)), 0, 1)
    ink = np.asarray(Image.fromarray(images[i]).resize((900, 900), Image.Resampling.BILINEAR))
    ink = ink / 255.0
    page[1062:1962, 1566:2466] -= 0.75 * ink
    photo = Image.fromarray(np.uint8(255 * np.clip(page, 0, 1))).convert("RGB")
    small = preprocess_image(photo.resize((2016, 1512), Image.Resampling.BOX))
    jpeg, png, turned = tmp_path / "phone.jpg", tmp_path / "phone.png", tmp_path / "turned.jpg"
    photo.save(jpeg, quality=90)
    photo.save(png)
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was held upright: the pixels lie on their side
    photo.transpose(Image.Transpose.ROTATE_90).save(turned, quality=90, exif=exif)
    assert open_image(jpeg, DETAIL_SIDE).size == (2016, 1512)
    for path in (jpeg, png, turned):
        assert load_rgb(path, DETAIL_SIDE).shape == (1512, 2016, 3)
        read = preprocess_image(path)
        assert photo_eval.similarity(read, small) > 0.95
        assert trained.predict(read.reshape(1, 784)).argmax() == labels[i]


def test_a_number_written_along_ruled_lines_is_split_as_on_blank_paper(mnist_test, trained):
    from fastmnist.images import read_number

    images, labels = mnist_test
    rng = np.random.default_rng(0)

    def page(digits, ruled: bool) -> np.ndarray:  # dark blue digits in a row, 150 px tall
        side = 150
        ink = np.concatenate([np.pad(np.asarray(Image.fromarray(d).resize((side, side)),
                                                np.float32) / 255, ((0, 0), (10, 10)))
                              for d in digits], axis=1)
        h, w = 2 * side + 30, ink.shape[1] + 160
        canvas = np.zeros((h, w), np.float32)
        canvas[(h - side) // 2:(h + side) // 2, 80:80 + ink.shape[1]] = np.clip(ink, 0, 1)
        lines = np.zeros((h, w, 1), np.float32)
        if ruled:  # 2-pixel light blue lines 70 px apart: two or three cross the digits
            for y in range(int(rng.integers(0, 70)), h, 70):
                lines[y:y + 2] = 1
        rgb = (248 - lines * np.array([98, 68, 10])) * (1 - canvas[..., None])
        return np.clip(rgb + canvas[..., None] * np.array([25, 40, 140]), 0, 255) / 255

    split = {True: 0, False: 0}
    for _ in range(16):
        idx = rng.integers(8000, 10000, int(rng.integers(2, 6)))
        for ruled in (True, False):
            found = read_number(page(images[idx], ruled), trained)["digits"]
            split[ruled] += len(found) == len(idx)
    print(split)
    assert split[True] >= split[False] - 1 and split[True] >= 14  # measured: 16 and 16 of 16


def test_a_box_ring_or_line_drawn_round_the_digit_is_left_out(mnist_test, trained):
    images, labels = mnist_test
    count = 60
    yy, xx = np.mgrid[0:304, 0:304]
    ring = np.abs(np.hypot(yy - 152, xx - 152) - 148) < 2

    def page(digit, kind):  # dark digit on white, 224 px in a 304 px page
        p = np.pad(1.0 - np.kron(digit / 255.0, np.ones((8, 8))), 40, constant_values=1.0)
        if kind == "box":
            p[15:18, 15:-15] = p[-18:-15, 15:-15] = p[15:-15, 15:18] = p[15:-15, -18:-15] = 0
        elif kind == "ring":
            p[ring] = 0
        elif kind == "underline":
            p[-30:-27, 30:-30] = 0
        return p

    truth = labels[8000:8000 + count]
    read = {}
    for kind in ("none", "box", "ring", "underline"):
        x = np.stack([preprocess_image(page(images[8000 + i], kind)) for i in range(count)])
        read[kind] = float((trained.predict(x.reshape(count, 784)).argmax(axis=1) == truth).mean())
    print(read)  # measured: 0.967 each; left in, box 0.13, ring 0.10, underline 0.30
    assert min(read.values()) >= read["none"] - 0.03


def test_a_foot_or_cap_drawn_apart_stays_with_its_digit():
    from fastmnist.ink import Blob, without_boxes_and_underlines

    stem = Blob(1, 300, top=10, bottom=100, left=45, right=55)
    foot = Blob(2, 120, top=101, bottom=105, left=25, right=75)  # just under the stem
    cap = Blob(3, 120, top=0, bottom=4, left=40, right=90)  # a 5's cap, above
    underline = Blob(4, 200, top=112, bottom=116, left=20, right=80)
    box = Blob(5, 400, top=0, bottom=130, left=0, right=100)
    assert without_boxes_and_underlines([stem, foot]) == [stem, foot]
    assert without_boxes_and_underlines([cap, stem]) == [cap, stem]
    assert without_boxes_and_underlines([stem, underline]) == [stem]
    assert without_boxes_and_underlines([box, stem, foot]) == [stem, foot]


def test_a_small_digit_on_a_big_page_is_found_beside_a_shadow(mnist_test, trained):
    """A 90-pixel digit in a 2000x1500 photo: under 1% of the picture is ink, so its tone is
    judged from the extremes; a soft shadow in a corner is a patch, not the digit, and the
    digit, small beside it, is not taken for a speck."""
    images, labels = mnist_test
    count = 30
    yy, xx = np.mgrid[0:1500, 0:2000]
    corner = 1 - 0.55 * np.clip(1 - np.hypot(yy / 1500, xx / 2000) / 0.6, 0, 1)

    def photo(digit, shaded):
        ink = np.asarray(Image.fromarray(digit).resize((90, 90), Image.Resampling.BICUBIC),
                         np.float32)[..., None] / 255
        rgb = np.full((1500, 2000, 3), (235, 232, 225), np.float32)
        rgb[700:790, 950:1040] = rgb[700:790, 950:1040] * (1 - ink) + np.array([30, 30, 60]) * ink
        if shaded:  # and noisy: the shadow's ragged edge must not pass for pen strokes
            rgb = rgb * corner[..., None] + np.random.default_rng(0).normal(0, 6, rgb.shape)
        return np.clip(rgb, 0, 255).astype(np.uint8)

    truth = labels[8000:8000 + count]
    for shaded in (False, True):
        x = np.stack([preprocess_image(photo(images[8000 + i], shaded)) for i in range(count)])
        read = float((trained.predict(x.reshape(count, 784)).argmax(axis=1) == truth).mean())
        print(f"shaded={shaded}: {read:.3f}")  # 0.967, 1.0 (before: all refused; then 0.73 shaded)
        assert read >= 0.85


def test_a_faint_digit_beside_bold_ones_stays_in_the_number(mnist_test, trained):
    """A number whose digits were written with different pressures: one of them drawn with a
    faint 1-pixel pencil line (a sixth of the ink's darkness) beside bold marker digits."""
    images, labels = mnist_test
    rng = np.random.default_rng(1)
    split = read = 0
    for _ in range(12):
        idx = rng.choice(np.arange(8000, 8300), 3, replace=False)
        faint = int(rng.integers(3))
        parts = []
        for k, i in enumerate(idx):
            pen = 0.1 if k == faint else 1.5
            drawing, _ = photo_eval.pen_drawing(images[i], pen)
            darkness = 1 / 6 if k == faint else 1.0
            parts.append(1 - darkness * (1 - drawing[60:-60, 40:-40]))
        row = np.concatenate(parts, axis=1)
        found = predict_image(np.pad(row, 40, constant_values=1.0), trained)["digits"]
        split += len(found) == 3
        read += len(found) == 3 and found[faint]["digit"] == labels[idx[faint]]
    print(f"split {split} of 12, faint digit read {read}")
    assert split >= 11 and read >= 9
