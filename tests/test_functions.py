import numpy as np
import pytest

from fastmnist import functions as F

xps = pytest.importorskip("array_api_strict")


def test_sigmoid_matches_definition_and_survives_extremes():
    x = np.linspace(-30, 30, 101)
    np.testing.assert_allclose(F.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-12, atol=1e-15)
    with np.errstate(all="raise"):
        out = F.sigmoid(np.array([-1e4, 0.0, 1e4], dtype=np.float32))
    np.testing.assert_array_equal(out, np.array([0.0, 0.5, 1.0], dtype=np.float32))
    assert out.dtype == np.float32


def test_sigmoid_grad_is_the_derivative():
    x = np.linspace(-5, 5, 11)
    h = 1e-6
    np.testing.assert_allclose(F.sigmoid_grad(x), (F.sigmoid(x + h) - F.sigmoid(x - h)) / (2 * h),
                               rtol=1e-6)


def test_softmax_rows_sum_to_one_and_huge_logits_are_stable():
    x = np.array([[1000.0, 1000.0, 0.0], [-1000.0, 0.0, 1000.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = F.softmax(x)
    np.testing.assert_allclose(y.sum(axis=1), 1.0)
    np.testing.assert_allclose(y[0], [0.5, 0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(F.softmax(np.array([1.0, 2.0, 3.0])),
                               F.softmax(np.array([[1.0, 2.0, 3.0]]))[0])


def test_cross_entropy_accepts_one_hot_and_integer_labels():
    y = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    t_int = np.array([0, 2])
    t_hot = np.eye(3)[t_int]
    expected = -(np.log(0.7 + 1e-7) + np.log(0.8 + 1e-7)) / 2
    assert float(F.cross_entropy_error(y, t_int)) == pytest.approx(expected)
    assert float(F.cross_entropy_error(y, t_hot)) == pytest.approx(expected)
    assert float(F.cross_entropy_error(y[0], t_hot[0])) == pytest.approx(-np.log(0.7 + 1e-7))


def test_exact_softmax_cross_entropy_agrees_with_article_formula():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 10))
    t = rng.integers(0, 10, 5)
    assert float(F.softmax_cross_entropy(z, t)) == pytest.approx(
        float(F.cross_entropy_error(F.softmax(z), t)), rel=1e-5)


def test_numerical_gradient_of_a_quadratic_and_restores_input():
    x = np.array([[1.0, -2.0], [3.0, 0.5]])
    before = x.copy()
    g = F.numerical_gradient(lambda a: np.sum(a ** 2), x)
    np.testing.assert_allclose(g, 2 * before, rtol=1e-8)
    np.testing.assert_array_equal(x, before)


def test_functions_run_under_array_api_strict():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4, 10))
    t = rng.integers(0, 10, 4)
    zs, ts = xps.asarray(z), xps.asarray(t)
    for f in (F.sigmoid, F.sigmoid_grad, F.softmax):
        np.testing.assert_allclose(np.from_dlpack(f(zs)), f(z), rtol=1e-12)
    assert float(F.softmax_cross_entropy(zs, ts)) == pytest.approx(float(F.softmax_cross_entropy(z, t)))
    assert float(F.cross_entropy_error(F.softmax(zs), ts)) == pytest.approx(
        float(F.cross_entropy_error(F.softmax(z), t)))
    x = xps.asarray(np.array([1.0, 2.0, 3.0]))
    g = F.numerical_gradient(lambda a: xps.sum(a * a), x)
    np.testing.assert_allclose(np.from_dlpack(g), [2.0, 4.0, 6.0], rtol=1e-8)
