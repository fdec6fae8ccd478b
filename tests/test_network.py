import numpy as np
import pytest

from fastmnist import TwoLayerNet, to_numpy
from fastmnist.network import gradient_check
from tests.conftest import small_problem

xps = pytest.importorskip("array_api_strict")


def test_backprop_matches_numerical_gradient_in_float64():
    x, t = small_problem(n=8, d=20)
    net = TwoLayerNet(20, 10, 10, 0.5, device="cpu", dtype="float64", seed=3)
    errors = gradient_check(net, x, t)
    assert set(errors) == {"W1", "b1", "W2", "b2"}
    for name, err in errors.items():
        assert err < 1e-6, f"{name}: relative error {err:.2e}"


def test_gradient_check_catches_a_wrong_backward_pass(monkeypatch):
    x, t = small_problem(n=8, d=20)
    net = TwoLayerNet(20, 10, 10, 0.5, device="cpu", dtype="float64", seed=3)
    right = net.gradient
    monkeypatch.setattr(net, "gradient", lambda x, t: {**right(x, t), "b1": 1.1 * right(x, t)["b1"]})
    assert gradient_check(net, x, t)["b1"] > 1e-2


def test_float32_stays_float32():
    net = TwoLayerNet(seed=0, device="cpu")
    assert all(p.dtype == np.float32 for p in net.params.values())
    x = np.random.default_rng(0).random((5, 784))  # float64 input is cast, not propagated
    assert net.predict(x).dtype == np.float32
    assert net.loss(x, np.arange(5)).dtype == np.float32
    assert all(g.dtype == np.float32 for g in net.gradient(x, np.arange(5)).values())


def test_article_api_shapes_and_labels():
    net = TwoLayerNet(input_size=784, hidden_size=50, output_size=10, weight_init_std=0.01, seed=0)
    assert [net.params[k].shape for k in ("W1", "b1", "W2", "b2")] == [(784, 50), (50,), (50, 10), (10,)]
    assert not np.any(net.params["b1"]) and 0.005 < net.params["W1"].std() < 0.015
    x = np.random.default_rng(1).random((7, 784), dtype=np.float32)
    t = np.array([0, 1, 2, 3, 4, 5, 6])
    y = net.predict(x)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    assert net.accuracy(x, t) == net.accuracy(x, np.eye(10)[t])
    assert float(net.loss(x, t)) == pytest.approx(float(net.loss(x, np.eye(10)[t])))
    assert net.predict(x.reshape(7, 1, 28, 28)).shape == (7, 10)


def test_same_seed_same_weights_different_seed_different():
    a, b, c = (TwoLayerNet(seed=s, device="cpu") for s in (1, 1, 2))
    np.testing.assert_array_equal(a.params["W1"], b.params["W1"])
    assert not np.array_equal(a.params["W1"], c.params["W1"])


@pytest.mark.parametrize("bad, match", [
    (dict(x=np.zeros((3, 100))), "expects \\(N, 784\\)"),
    (dict(t=np.array([0, 1, 10])), "0-9"),
    (dict(t=np.array([0, -1, 2])), "0-9"),
    (dict(t=np.array([0, 1])), "shape \\(2,\\)"),
    (dict(t=np.array([0.5, 1, 2])), "whole numbers"),
])
def test_bad_inputs_get_clear_errors(bad, match):
    net = TwoLayerNet(seed=0, device="cpu")
    x = bad.get("x", np.zeros((3, 784), dtype=np.float32))
    t = bad.get("t", np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=match):
        net.accuracy(x, t)


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden_size=0), "hidden_size"), (dict(weight_init_std=-1.0), "weight_init_std"),
    (dict(dtype="int8"), "float32"), (dict(device="gpu"), "unknown device"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TwoLayerNet(**kwargs)


def test_core_runs_under_array_api_strict_and_agrees_with_numpy():
    x, t = small_problem(n=10, d=30)
    ref = TwoLayerNet(30, 8, 10, 0.3, device="cpu", dtype="float64", seed=5)
    strict = TwoLayerNet(30, 8, 10, 0.3, device=xps, dtype="float64", seed=5)
    assert strict.xp is xps and type(strict.params["W1"]).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(to_numpy(strict.predict(x)), ref.predict(x), rtol=1e-12)
    assert float(to_numpy(strict.loss(x, t))) == pytest.approx(float(ref.loss(x, t)), rel=1e-12)
    assert strict.accuracy(x, t) == ref.accuracy(x, t)
    g_ref, g_strict = ref.gradient(x, t), strict.gradient(x, t)
    for k in g_ref:
        np.testing.assert_allclose(to_numpy(g_strict[k]), g_ref[k], rtol=1e-10, atol=1e-14)
    errors = gradient_check(strict, x[:3], t[:3])
    assert max(errors.values()) < 1e-6


def test_accuracy_is_chunked_but_exact(monkeypatch):
    import fastmnist.network as network

    x, t = small_problem(n=25, d=784)
    net = TwoLayerNet(seed=0, device="cpu")
    full = net.accuracy(x, t)
    monkeypatch.setattr(network, "EVAL_CHUNK", 4)
    assert net.accuracy(x, t) == full
    assert int(net.count_correct(net.as_input(x), net.as_labels(t, 25), chunk=7)) == round(full * 25)


def test_to_moves_between_backends():
    net = TwoLayerNet(20, 5, 10, seed=0, device="cpu")
    strict = net.to(xps)
    np.testing.assert_array_equal(to_numpy(strict.params["W2"]), net.params["W2"])
    assert strict.xp is xps and net.xp is np
