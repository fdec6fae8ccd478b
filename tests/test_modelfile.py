import json
import pickle
import zipfile

import numpy as np
import pytest

from fastmnist import TwoLayerNet
from fastmnist.modelfile import FORMAT, ModelFileError

xps = pytest.importorskip("array_api_strict")


@pytest.fixture
def saved(tmp_path):
    net = TwoLayerNet(784, 30, 10, seed=7, device="cpu")
    net.params["b2"] += np.float32(0.25)  # not just the initial state
    return net, net.save(tmp_path / "m.npz", dataset="mnist", test_accuracy=0.93)


def test_round_trip_is_exact_and_keeps_metadata(saved):
    net, path = saved
    back = TwoLayerNet.load(path, device="cpu")
    for k in net.params:
        np.testing.assert_array_equal(back.params[k], net.params[k])
        assert back.params[k].dtype == np.float32
    assert back.sizes == (784, 30, 10) and back.seed == 7
    meta = back.metadata
    assert meta["dataset"] == "mnist" and meta["test_accuracy"] == 0.93 and meta["format"] == FORMAT
    assert {"fastmnist", "preprocessing", "dtype", "sizes"} <= set(meta)
    strict = TwoLayerNet.load(path, device=xps)
    assert strict.xp is xps


def rewrite(path, tmp_path, name="bad.npz", meta_update=None, **arrays):
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(str(data.pop("meta")))
    meta.update(meta_update or {})
    data.update(arrays)
    out = tmp_path / name
    np.savez(out, meta=np.array(json.dumps(meta)), **{k: v for k, v in data.items() if v is not None})
    return out


def test_truncated_file(saved, tmp_path):
    _, path = saved
    bad = tmp_path / "cut.npz"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        TwoLayerNet.load(bad)


def test_pickles_are_refused(tmp_path):
    plain = tmp_path / "model.pkl"
    plain.write_bytes(pickle.dumps({"W1": np.zeros((784, 50))}))
    with pytest.raises(ModelFileError, match="pickle"):
        TwoLayerNet.load(plain)
    obj = tmp_path / "objects.npz"
    np.savez(obj, meta=np.array([{"format": FORMAT}], dtype=object))
    with pytest.raises(ModelFileError, match="pickle"):
        TwoLayerNet.load(obj)


def test_wrong_shapes(saved, tmp_path):
    _, path = saved
    with pytest.raises(ModelFileError, match="W2 has shape \\(30, 9\\), expected \\(30, 10\\)"):
        TwoLayerNet.load(rewrite(path, tmp_path, W2=np.zeros((30, 9), np.float32)))


def test_nans(saved, tmp_path):
    net, path = saved
    w = net.params["W1"].copy()
    w[3, 3] = np.nan
    with pytest.raises(ModelFileError, match="W1 contains NaN"):
        TwoLayerNet.load(rewrite(path, tmp_path, W1=w))


def test_other_architectures(saved, tmp_path):
    _, path = saved
    with pytest.raises(ModelFileError, match="a different architecture"):
        TwoLayerNet.load(rewrite(path, tmp_path, W3=np.zeros((10, 10), np.float32)))
    with pytest.raises(ModelFileError, match="this fastmnist reads"):
        TwoLayerNet.load(rewrite(path, tmp_path, meta_update={"format": "keras.Sequential/2"}))
    plain = tmp_path / "plain.npz"
    np.savez(plain, W1=np.zeros((784, 50)))
    with pytest.raises(ModelFileError, match="no 'meta' record"):
        TwoLayerNet.load(plain)


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(ModelFileError, match="fastmnist train --save"):
        TwoLayerNet.load(tmp_path / "nothing.npz")


def test_a_bad_file_never_half_loads(saved, tmp_path):
    net, path = saved
    bad = rewrite(path, tmp_path, b2=np.full(10, np.inf, np.float32))
    before = {k: v.copy() for k, v in net.params.items()}
    with pytest.raises(ModelFileError):
        net = TwoLayerNet.load(bad)
    for k in before:
        np.testing.assert_array_equal(net.params[k], before[k])


def test_save_is_atomic_and_adds_the_extension(tmp_path):
    net = TwoLayerNet(20, 5, 10, seed=0, device="cpu")
    out = net.save(tmp_path / "model")
    assert out.name == "model.npz" and zipfile.is_zipfile(out)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]
