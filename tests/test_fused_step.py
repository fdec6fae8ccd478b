"""The GPU's fused step and its self-check, run on the CPU: FusedStep drives NumPy versions of
the CUDA kernels (fastmnist.steps.kernels.NumpyKernels), so its layout and the check that guards it
are tested here; deliberately broken kernels must be caught, warned about, and replaced by the
generic step, with training exactly as that step gives it."""
import importlib
from contextlib import nullcontext

import numpy as np
import pytest

from fastmnist import TwoLayerNet, train
from fastmnist.steps.cuda import FusedStep
from fastmnist.steps.generic import CheckedCount
from fastmnist.steps.kernels import NumpyKernels
from fastmnist.network import one_hot
from fastmnist.steps import BufferedCount, BufferedStep, PlainStep
from tests.conftest import assert_agree, small_problem

STEPS, BATCH, LR = 200, 20, 0.5
train_module = importlib.import_module("fastmnist.train")  # fastmnist.train is the function


class SlackDerivative(NumpyKernels):
    """Forgets the (1 - z) of the sigmoid's derivative."""

    def sigmoid_backward(self, z, dz):
        dz *= z


class SlightlyOffSigmoid(NumpyKernels):
    """A hidden layer 0.1% too large: the kind of error a wrong constant in CUDA C makes."""

    def bias_sigmoid(self, a, b, z):
        super().bias_sigmoid(a, b, z)
        z *= 1.001


class WrongLoss(NumpyKernels):
    """Right gradients, wrong reported loss."""

    def softmax_xent(self, yT, t, loss, scale):
        super().softmax_xent(yT, t, loss, scale)
        loss += 0.01


class DoesNotCompile(NumpyKernels):
    def bias_sigmoid(self, a, b, z):
        raise RuntimeError("nvrtc: error: identifier \"expff\" is undefined\n(500 more lines)")


def run(make, x, t, steps=STEPS):
    """Train ``steps`` steps of the step ``make(net, x, onehot)`` on fixed batches."""
    net = TwoLayerNet(seed=2, device="cpu")
    xd, td = net.as_input(x, keep_uint8=True), net.as_labels(t, x.shape[0])
    step = make(net, xd, one_hot(td, 10, net.dtype))
    rows = np.random.default_rng(0).integers(0, x.shape[0], (steps, BATCH))
    losses = np.zeros((steps, BATCH), np.float32)
    for i in range(steps):
        step(rows[i], losses, i)
    return net.params, losses, step


def fused(kernels):
    return lambda net, x, onehot: FusedStep(net.params, x, onehot, LR, BATCH, np, kernels)


def buffered(net, x, onehot):
    return BufferedStep(net.params, x, onehot, LR, BATCH, np)


@pytest.fixture(scope="module")
def data():
    x, t = small_problem(n=200, d=784, seed=1)
    return x.astype(np.float32), t


def test_the_fused_step_matches_the_plain_step(data, recwarn):
    params, losses, step = run(fused(NumpyKernels()), *data)
    plain, plain_losses, _ = run(lambda net, x, onehot: PlainStep(net.params, x, onehot, LR), *data)
    assert step.fused is True and step.reason is None and not recwarn.list
    assert_agree(params, plain, steps=STEPS, batch=BATCH)
    assert_agree({"loss": losses.mean(axis=1)}, {"loss": plain_losses[:, 0]}, steps=STEPS,
                 batch=BATCH)


def test_the_fused_step_takes_uint8_rows(data):
    x, t = data
    pixels = (x * 255).round().astype(np.uint8)
    params, _, step = run(fused(NumpyKernels()), pixels, t)
    expected, _, _ = run(buffered, pixels.astype(np.float32) / 255, t)
    assert step.fused is True
    assert_agree(params, expected, steps=STEPS, batch=BATCH)


@pytest.mark.parametrize("kernels, names", [
    (SlackDerivative(), "W1|b1"), (SlightlyOffSigmoid(), "W1|b1|W2a"), (WrongLoss(), "loss"),
])
def test_a_wrong_kernel_is_caught_and_training_goes_on_generically(data, kernels, names):
    with pytest.warns(RuntimeWarning, match="fused CUDA step was not used: it disagrees with "
                                            "the generic step") as caught:
        params, losses, step = run(fused(kernels), *data)
    assert len(caught) == 1  # once, not every step
    assert step.fused is False
    assert any(name in step.reason for name in names.split("|")), step.reason
    expected, expected_losses, _ = run(buffered, *data)
    for k in expected:  # the generic step's training, exactly
        np.testing.assert_array_equal(params[k], expected[k])
    np.testing.assert_array_equal(losses, expected_losses)


def test_a_kernel_that_fails_to_compile_leaves_the_generic_step(data):
    with pytest.warns(RuntimeWarning, match="fused kernel failed .RuntimeError: nvrtc: error"):
        params, _, step = run(fused(DoesNotCompile()), *data)
    assert "500 more lines" not in step.reason
    expected, _, _ = run(buffered, *data)
    for k in expected:
        np.testing.assert_array_equal(params[k], expected[k])


def test_train_with_a_wrong_fused_step_warns_and_learns_what_the_generic_step_learns(monkeypatch):
    x, t = small_problem(n=300, d=784, seed=4)
    runs = []
    for kernels in (SlackDerivative(), None):
        def make_step(fast, net, x, t, learning_rate, batch_size, cuda_graph=True):
            onehot = one_hot(t, 10, net.dtype)
            if kernels is None:
                return BufferedStep(net.params, x, onehot, learning_rate, batch_size, np)
            return FusedStep(net.params, x, onehot, learning_rate, batch_size, np, kernels)

        monkeypatch.setattr(train_module, "make_step", make_step)
        net = TwoLayerNet(seed=0, device="cpu")
        with pytest.warns(RuntimeWarning, match="disagrees") if kernels else nullcontext():
            h = train(net, x, t, x[:60], t[:60], iters=120, batch_size=30, seed=0, quiet=True,
                      overlap=False)
        runs.append((net, h))
    (wrong, hw), (generic, hg) = runs
    assert hw.config["step"] == "FusedStep" and hg.config["step"] == "BufferedStep"
    assert hw.loss == hg.loss and hw.test_acc == hg.test_acc
    for k in generic.params:
        np.testing.assert_array_equal(wrong.params[k], generic.params[k])
    assert np.mean(hw.loss[-20:]) < np.mean(hw.loss[:20])


# -- the full-set scorer's check --------------------------------------------------------------
def scorer_problem(seed=0, std=0.3):
    """A net and 500 rows labelled mostly as the net classifies them (so the count is high)."""
    x, t = small_problem(n=500, d=784, seed=seed)
    net = TwoLayerNet(seed=seed, weight_init_std=std, device="cpu")
    x = net.as_input(x)
    t = np.argmax(net.predict(x), axis=1)
    t[::5] = (t[::5] + 1) % 10
    return net, x, t


def recorded(net, calls: list):
    """The buffered scorer, noting how many rows each call scores."""
    def fast(x, t):
        calls.append(len(x))
        return BufferedCount(net.params, np)(x, t)
    return fast


def test_a_right_scorer_passes_its_check_and_keeps_scoring(recwarn):
    net, x, t = scorer_problem()
    calls = []
    count = CheckedCount(recorded(net, calls), net.count_correct, net.params)
    expected = int(net.count_correct(x, t))
    assert int(count(x, t)) == expected and int(count(x[:100], t[:100])) == int(
        net.count_correct(x[:100], t[:100]))
    assert calls == [500, 100] and count.reason is None and not recwarn.list


def test_a_wrong_scorer_is_caught_once_and_replaced():
    net, x, t = scorer_problem()
    count = CheckedCount(lambda x, t: BufferedCount(net.params, np)(x, (t + 1) % 10),
                         net.count_correct, net.params)  # scores against the wrong labels
    with pytest.warns(RuntimeWarning, match="fast full-set scoring was not used.*counted"):
        first = count(x, t)
    assert int(first) == int(net.count_correct(x, t)) and "rounding could change" in count.reason
    assert int(count(x, t)) == int(net.count_correct(x, t))  # plain from now on, no new warning


def test_a_failing_scorer_is_replaced():
    net, x, t = scorer_problem()

    def broken(x, t):
        raise MemoryError("out of memory allocating 240,000,000 bytes")

    count = CheckedCount(broken, net.count_correct, net.params)
    with pytest.warns(RuntimeWarning, match="failed .MemoryError"):
        assert int(count(x, t)) == int(net.count_correct(x, t))


def test_rows_rounding_can_flip_are_forgiven(recwarn):
    net, x, t = scorer_problem()
    net.params["W2"][...] = 0  # every logit equal: every row is a tie
    count = CheckedCount(lambda x, t: net.count_correct(x, t) + 3, net.count_correct, net.params)
    count(x, t)
    assert count.reason is None and not recwarn.list


def test_a_scorer_checked_on_its_first_rows_then_scores_the_whole_set(recwarn):
    net, x, t = scorer_problem()
    calls = []
    count = CheckedCount(recorded(net, calls), net.count_correct, net.params, rows=64)
    assert int(count(x, t)) == int(net.count_correct(x, t))
    assert calls == [64, 500] and count.reason is None and not recwarn.list
    wrong = CheckedCount(lambda x, t: BufferedCount(net.params, np)(x, (t + 1) % 10),
                         net.count_correct, net.params, rows=64)
    with pytest.warns(RuntimeWarning, match="fast full-set scoring was not used"):
        assert int(wrong(x, t)) == int(net.count_correct(x, t))  # the whole set, plainly
