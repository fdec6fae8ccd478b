"""Which model file the commands use when none is named: the last one `fastmnist train` kept.

The path of that file is remembered in the cache folder; runs that did not learn are never
remembered. :func:`model_warnings` says what a user should know before trusting a model.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .datasets import cache_dir


def last_model_record() -> Path:
    return cache_dir() / "last-model.txt"


def remember_model(path: Path, learned: bool) -> None:
    """Make ``path`` the default model of ``predict`` and ``serve``, if it learned; a model
    that did not learn stops being the default if it was."""
    record, where = last_model_record(), str(Path(path).resolve())
    try:
        if learned:
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(where)
        elif record.is_file() and record.read_text().strip() == where:
            record.unlink()
    except OSError as exc:
        print(f"warning: could not record the default model in {record}: {exc}", file=sys.stderr)


def default_model() -> str:
    """The last model `fastmnist train` kept, else ``model.npz`` here."""
    record = last_model_record()
    if record.is_file():
        return record.read_text().strip()
    return "model.npz"


def model_warnings(net, model_path) -> list[str]:
    """What to tell a user about a model: other classes than digits, an unfinished run, or a
    run that did not learn."""
    meta, lines = net.metadata, []
    dataset = meta.get("dataset")
    if dataset and dataset != "mnist":
        lines.append(f"{model_path} was trained on {dataset}, not on handwritten digits, so it "
                     f"answers with {dataset} classes; for digits train one with "
                     "`fastmnist train --dataset mnist --augment`")
    if meta.get("status", "complete") != "complete":
        lines.append(f"{model_path} holds a run {meta['status']} at step {meta.get('steps')} "
                     f"of {meta.get('iters')}")
    if meta.get("learned") is False:
        lines.append(f"{model_path} did not learn (test accuracy "
                     f"{meta.get('test_accuracy') or 0:.4f}): its answers are no better than "
                     "chance")
    return lines
