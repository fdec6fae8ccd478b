"""Figures written straight to PNG (matplotlib's Agg backend: no display needed)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from .space import value_label  # noqa: E402


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
    status = getattr(history, "status", "complete")
    if status != "complete":  # a run stopped early says so on its figure
        fig.suptitle(f"{status} after {loss.size} of {history.config.get('iters', '?')} steps",
                     color="tab:red")
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


STATUS_WORDS = {"ok": "finished", "stopped": "stopped early (dotted)", "failed": "failed",
                "interrupted": "interrupted"}


def plot_sweep(result, path) -> None:
    """A sweep at a glance: every trial's test accuracy over the steps (the five best in
    colour, trials stopped early dotted), and the final test accuracy against each swept
    parameter.

    ``result`` is a :class:`fastmnist.sweeps.SweepResult`.
    """
    trials = [r for r in result.trials if r["history"]["steps"]]
    names = result.swept
    if len(names) <= 2:  # one row: curves, then a panel per parameter
        fig = plt.figure(figsize=(8 + 3.4 * len(names), 4.6))
        grid = fig.add_gridspec(1, 1 + len(names), width_ratios=[2.3] + [1] * len(names))
        ax, cells = fig.add_subplot(grid[0, 0]), [grid[0, 1 + k] for k in range(len(names))]
    else:  # curves across the top, parameters in rows of up to four below
        cols, rows = min(len(names), 4), -(-len(names) // 4)
        fig = plt.figure(figsize=(3.3 * cols + 1, 4.6 + 3.4 * rows))
        grid = fig.add_gridspec(1 + rows, cols, height_ratios=[4.6] + [3.4] * rows)
        ax = fig.add_subplot(grid[0, :])
        cells = [grid[1 + k // cols, k % cols] for k in range(len(names))]
    best = result.best["trial"] if result.best else None
    ranked = sorted((r for r in trials if r["status"] == "ok"), key=lambda r: -r["test_acc"])
    colours = dict(zip((r["trial"] for r in ranked[:5]),
                       ("tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple")))
    rest = [r for r in trials if r["trial"] not in colours]
    for r in rest + ranked[:5]:  # the best drawn last, on top
        h, top = r["history"], r["trial"] in colours
        acc = [a if a is not None else np.nan for a in h["test_acc"]]
        style = {"ok": "-", "stopped": ":", "failed": "--", "interrupted": "-."}[r["status"]]
        colour = colours.get(r["trial"], "0.6")
        label = (f"#{r['trial']}: {r['test_acc']:.4f}  {sweep_label(r['config'], names)}"
                 if top else None)
        ax.plot(h["steps"], acc, style, color=colour, lw=2.4 if r["trial"] == best else 1.2,
                alpha=1.0 if top else 0.55, label=label)
        if r["status"] in ("stopped", "failed"):
            ax.plot(h["steps"][-1:], acc[-1:], "x", color=colour, ms=5, alpha=0.8)
    scores = [a for r in trials for a in r["history"]["test_acc"] if a is not None]
    counts = {s: sum(r["status"] == s for r in result.trials) for s in STATUS_WORDS}
    note = ", ".join(f"{n} {STATUS_WORDS[s]}" for s, n in counts.items() if n)
    ax.set(title=f"Test accuracy of {len(result.trials)} trials ({result.engine} engine): {note}",
           xlabel="step", ylabel="test accuracy", ylim=accuracy_limits(scores))
    ax.grid(alpha=0.3)
    if colours:
        ax.legend(loc="lower right", fontsize=8, title="best trials", title_fontsize=8)
    ends = [r for r in result.trials if r["status"] in ("ok", "stopped", "failed")]
    for k, (name, cell) in enumerate(zip(names, cells)):
        axp = fig.add_subplot(cell)
        axp.set_ylim(ax.get_ylim())
        plot_parameter(axp, name, ends, best, legend=k == 0)
        if k % 4:
            axp.tick_params(labelleft=False)
        else:
            axp.set_ylabel("final test accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def accuracy_limits(values):
    """A y-range that shows the good trials' differences, not the first evaluation's 10%."""
    if not values:
        return (0, 1)
    top = max(values)
    low = min(v for v in values if v >= np.percentile(values, 20))
    return (max(0.0, min(low, top - 0.1) - 0.02), min(1.0, top + 0.02))


def sweep_label(config: dict, names) -> str:
    return " ".join(f"{n}={value_label(config.get(n))}" for n in names)


def plot_parameter(ax, name: str, trials, best, legend: bool = False) -> None:
    """Final test accuracy against one parameter: a continuous axis (log for wide spreads) for
    many numbers, an evenly spaced slot per value for a few or for words; trials stopped early
    hollow, failed ones as crosses at the bottom. Call it with the y-range set."""
    values = [r["config"].get(name) for r in trials]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and len(set(values)) > 6:  # a random search: a continuous axis
        xs = np.asarray(values, dtype=float)
        if xs.min() > 0 and xs.max() / xs.min() >= 20:
            ax.set_xscale("log")
    else:  # a grid, or words: one evenly spaced slot per value, in order
        slots = sorted(set(values), key=lambda v: (isinstance(v, str), v))
        xs = np.asarray([slots.index(v) for v in values], dtype=float)
        xs = xs + np.random.default_rng(0).uniform(-0.06, 0.06, xs.size)
        ax.set_xticks(range(len(slots)), [value_label(v) for v in slots])
        ax.set_xlim(-0.5, len(slots) - 0.5)
    low, high = ax.get_ylim()
    failed = np.asarray([r["status"] == "failed" for r in trials], dtype=bool)
    acc = np.asarray([low + 0.03 * (high - low) if f else r["test_acc"]
                      for r, f in zip(trials, failed)], dtype=float)
    done = np.asarray([r["status"] == "ok" for r in trials], dtype=bool)
    stopped = ~done & ~failed
    ax.scatter(xs[done], acc[done], s=30, color="tab:blue", label="finished", zorder=3)
    if stopped.any():
        ax.scatter(xs[stopped], acc[stopped], s=30, facecolors="none", edgecolors="0.45",
                   label="stopped early", zorder=3)
    if failed.any():
        ax.scatter(xs[failed], acc[failed], s=40, marker="x", color="tab:red",
                   label="failed (drawn at the bottom)", zorder=3)
    is_best = np.asarray([r["trial"] == best for r in trials], dtype=bool)
    if is_best.any():
        ax.scatter(xs[is_best], acc[is_best], s=140, marker="*", color="tab:red", label="best",
                   zorder=4)
    ax.set(title=f"by {name}", xlabel=name)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7.5, loc="lower right")
