"""One trial of a sweep: a config, run as an ordinary fastmnist training run, and its record.

A trial is ``TwoLayerNet(784, hidden, 10, dtype=..., seed=S)`` trained by
``train(..., seed=S)`` on the sweep's data (augmented first with
``augmented_training_set(x, t, seed=S)`` when asked), exactly what ``fastmnist train`` runs, so
:func:`train_command` reproduces any trial by hand. The same function runs a trial in this
process (``engine="local"``) and inside a Ray Tune worker.
"""
from __future__ import annotations

import shlex
import tempfile
import time
from pathlib import Path

import numpy as np

from .network import TwoLayerNet
from .train import train

STATUSES = ("ok", "stopped", "failed", "interrupted")  # stopped: ended early by the scheduler


def resolve_iters(config: dict, train_rows: int) -> dict:
    """``config`` with ``iters`` worked out from ``epochs``: passes over the rows trained on,
    augmented copies included, as ``fastmnist train --epochs`` counts them."""
    if not config.get("epochs"):
        return config
    if config.get("augment"):
        from .augment import COPIES

        train_rows *= COPIES + 1
    per_epoch = max(train_rows // config["batch_size"], 1)
    return {**config, "iters": max(1, round(config["epochs"] * per_epoch))}


def new_record(config: dict) -> dict:
    return {"status": "interrupted", "test_acc": None, "train_acc": None, "seconds": 0.0,
            "stopped_early": False, "error": None, "config": config,
            "history": {"steps": [], "epochs": [], "train_acc": [], "test_acc": []}}


def add_evaluation(record: dict, step: int, epoch: float, train_acc, test_acc) -> None:
    """Append one evaluation to ``record``'s history and make it the latest score."""
    h = record["history"]
    h["steps"].append(int(step))
    h["epochs"].append(round(epoch, 4))
    h["train_acc"].append(train_acc)
    h["test_acc"].append(test_acc)
    record["train_acc"], record["test_acc"] = train_acc, test_acc


def run_trial(config: dict, data, *, device=None, overlap=None, report=None, meta=None):
    """Run one trial; returns ``(record, model)``: the record (status ``ok``, or ``failed`` with
    the error's message, or ``interrupted`` when training stopped short) and, for ``ok``, the
    trained model as ``.npz`` bytes (:func:`model_bytes`), else None.

    ``data`` is ``((x_train, t_train), (x_test, t_test))``. ``report(step, epoch, train_acc,
    test_acc)`` is called after every evaluation but the last (the record has that one); what
    it raises (a scheduler stopping the trial) ends the trial there. ``meta`` goes into the
    model file.
    """
    (x, t), (xt, tt) = data
    record = new_record(config)
    started = time.perf_counter()

    def on_eval(step, train_acc, test_acc):
        add_evaluation(record, step, step / per_epoch, train_acc, test_acc)
        record["seconds"] = time.perf_counter() - started
        if report is not None and step < config["iters"] - 1:
            report(step, step / per_epoch, train_acc, test_acc)

    try:
        if config["augment"]:  # on floats, as `fastmnist train --augment` does
            from .augment import augmented_training_set
            from .datasets import format_images

            if x.dtype == np.uint8:
                x = format_images(x, normalize=True, flatten=True)
            digits = (meta or {}).get("dataset", "mnist") == "mnist"
            x, t = augmented_training_set(x, t, seed=config["seed"], writing_styles=digits,
                                          straighten=digits)
        per_epoch = max(x.shape[0] // config["batch_size"], 1)
        net = TwoLayerNet(x.shape[1], config["hidden"], 10, device=device,
                          dtype=config["dtype"], seed=config["seed"])
        train(net, x, t, xt, tt, iters=config["iters"], batch_size=config["batch_size"],
              learning_rate=config["lr"], sampling=config["sampling"], seed=config["seed"],
              quiet=True, overlap=overlap, on_eval=on_eval)
    except Exception as exc:  # the sweep goes on; the record says what went wrong
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      seconds=time.perf_counter() - started)
        return record, None
    record["seconds"] = time.perf_counter() - started
    steps = record["history"]["steps"]
    if not steps or steps[-1] != config["iters"] - 1:  # training was interrupted
        return record, None
    record["status"] = "ok"
    meta = {**(meta or {}), "test_accuracy": record["test_acc"],
            "train_accuracy": record["train_acc"], "iters": config["iters"],
            "augment": config["augment"], "sweep_config": config}
    return record, model_bytes(net, meta)


def model_bytes(net: TwoLayerNet, meta: dict) -> bytes:
    """``net`` as the bytes of a ``.npz`` model file (what :meth:`TwoLayerNet.save` writes)."""
    with tempfile.TemporaryDirectory() as folder:
        return net.save(Path(folder) / "model.npz", **meta).read_bytes()


def train_command(config: dict, dataset: str, data_dir=None, train_limit=None,
                  device=None) -> str:
    """The ``fastmnist train`` command line that runs this trial by hand."""
    args = ["fastmnist", "train", "--dataset", dataset]
    if data_dir:
        args += ["--data-dir", str(data_dir)]
    if train_limit:
        args += ["--train-limit", str(train_limit)]
    args += ["--hidden", str(config["hidden"]), "--lr", repr(config["lr"]),
             "--batch-size", str(config["batch_size"]), "--iters", str(config["iters"]),
             "--sampling", config["sampling"], "--dtype", config["dtype"],
             "--seed", str(config["seed"])]
    if config["augment"]:
        args.append("--augment")
    if device:
        args += ["--device", device]
    return shlex.join(args)
