"""Figures written straight to PNG (matplotlib's Agg backend: no display needed)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402


def plot_history(history, path, smooth: int = 50) -> None:
    """The article's figure: training loss per step, and train vs test accuracy per evaluation.

    ``smooth`` overlays a running mean of that many steps on the noisy per-batch loss.
    """
    loss = np.asarray(history.loss, dtype=float)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(loss, lw=0.6, alpha=0.5, label="batch loss")
    if smooth > 1 and loss.size >= smooth:
        ax_loss.plot(np.arange(smooth - 1, loss.size),
                     np.convolve(loss, np.ones(smooth) / smooth, mode="valid"),
                     lw=1.5, label=f"mean of {smooth}")
    ax_loss.set(title="Loss", xlabel="step", ylabel="cross-entropy")
    ax_loss.legend()
    ax_acc.plot(history.eval_steps, history.train_acc, "o-", label="train")
    if any(a is not None for a in history.test_acc):
        ax_acc.plot(history.eval_steps, history.test_acc, "s--", label="test")
    ax_acc.set(title="Accuracy", xlabel="step", ylabel="accuracy", ylim=(0, 1))
    ax_acc.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_predictions(paths, results, path) -> None:
    """One row per image: the input, the 28x28 digit the network saw, and the ten probabilities.

    ``results`` are :func:`fastmnist.images.predict_image` dicts, in the order of ``paths``.
    """
    from .images import load_rgb

    rows = len(results)
    fig, axes = plt.subplots(rows, 3, figsize=(9, 2.4 * rows), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 2]})
    for (ax_in, ax_net, ax_bar), src, res in zip(axes, paths, results):
        ax_in.imshow(load_rgb(src))
        ax_in.set_title(str(src)[-28:], fontsize=8)
        ax_net.imshow(res["image"], cmap="gray", vmin=0, vmax=1)
        ax_net.set_title("as the network sees it", fontsize=8)
        for ax in (ax_in, ax_net):
            ax.axis("off")
        if res["probabilities"] is None:  # a number: each digit's own probability
            sure = [d["probabilities"][d["digit"]] for d in res["digits"]]
            ax_bar.bar(range(len(sure)), sure, color="tab:orange")
            ax_bar.set(xticks=range(len(sure)), xticklabels=[d["label"] for d in res["digits"]],
                       ylim=(0, 1), ylabel="probability", title=f"number: {res['number']}")
            continue
        probs = np.asarray(res["probabilities"])
        colours = ["tab:orange" if k == res["digit"] else "tab:blue" for k in range(probs.size)]
        ax_bar.bar(range(probs.size), probs, color=colours)
        ax_bar.set(xticks=range(probs.size), ylim=(0, 1), ylabel="probability",
                   title=f"prediction: {res['label']} ({probs[res['digit']]:.0%})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
