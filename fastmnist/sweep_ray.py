"""The Ray engine of a sweep: every trial a Ray Tune trial, on all cores, GPUs and machines.

Without an address, Ray starts here in-process with this machine's cores (or ``cpus``); with
``address="auto"`` or ``"ray://host:10001"`` the sweep joins that cluster. The data set goes into
Ray's object store once (``ray.put``); each node keeps one copy in shared memory that its
trials read without copying. A trial gets ``cpus_per_trial`` cores (BLAS held to that many
threads, so parallel trials do not oversubscribe the machine) and ``gpus_per_trial`` GPUs
(fractions share one). It reports test accuracy after every evaluation, so an ASHA scheduler
(``early_stop``) can end poor trials; finished trials send their record and model (``.npz``
bytes, never a pickled object) to a small actor the driver reads.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from .trials import run_trial


class Mailbox:
    """An actor holding what finished trials send (record, model bytes) until the driver takes it."""

    def __init__(self):
        self.items = {}

    def put(self, index: int, record: dict, model) -> None:
        self.items[index] = (record, model)

    def take(self, index: int):
        return self.items.pop(index, None)


def ray_trial(config: dict, shared: dict) -> None:
    """A Tune trial: run trial ``config["trial"]`` of the sweep within this worker's cores."""
    from threadpoolctl import threadpool_limits

    index = config["trial"]
    data = ray.get(shared["data"])  # zero-copy views of this node's copy
    cpus = shared["cpus_per_trial"]
    device = shared["device"]
    if device in (None, "auto"):  # Ray hides the GPUs a trial was not given
        device = "cuda" if shared["gpus_per_trial"] else "cpu"

    def report(step, epoch, train_acc, test_acc):
        tune.report({"trial": index, "step": step, "epoch": epoch, "train_acc": train_acc,
                     "test_acc": test_acc})

    with threadpool_limits(limits=max(int(cpus), 1), user_api="blas"):
        record, model = run_trial(shared["configs"][index], data, device=device,
                                  overlap=None if cpus >= 2 else False, report=report,
                                  meta=shared["meta"])
    ray.get(shared["mailbox"].put.remote(index, record, model))
    if record["status"] == "ok":  # the last evaluation, reported once the record is safe
        report(record["history"]["steps"][-1], record["history"]["epochs"][-1],
               record["train_acc"], record["test_acc"])


def start(address=None, cpus=None) -> tuple[bool, float]:
    """Connect to Ray (a cluster at ``address``, or a new local instance with ``cpus`` cores);
    returns (whether this call started the connection, seconds it took)."""
    if ray.is_initialized():
        return False, 0.0
    t0 = time.perf_counter()
    options = dict(log_to_driver=False, logging_level=logging.ERROR)
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(num_cpus=cpus, include_dashboard=False, **options)
    return True, time.perf_counter() - t0


def run(configs, data, tracker, *, address=None, cpus=None, cpus_per_trial=1,
        gpus_per_trial=0, early_stop=False, device=None, meta=None) -> float:
    """Run ``configs`` as Ray Tune trials, telling ``tracker`` what happens; returns Ray's
    start-up seconds (0 when already connected). Ctrl-C stops the trials and returns."""
    started_here, startup = start(address, cpus)
    quiet = {name: logging.getLogger(name).level for name in ("ray.tune", "ray.train", "ray")}
    output_engine = os.environ.get("RAY_AIR_NEW_OUTPUT")
    try:
        for name in quiet:
            logging.getLogger(name).setLevel(logging.ERROR)
        # the tracker shows progress; Tune's newer output prints its banner even when silent
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        mailbox = ray.remote(Mailbox).options(num_cpus=0).remote()
        shared = {"data": ray.put(data), "configs": configs, "mailbox": mailbox, "meta": meta,
                  "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial,
                  "device": device}
        trainable = tune.with_resources(tune.with_parameters(ray_trial, shared=shared),
                                        {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        scheduler = None
        if early_stop:
            longest = max(c["iters"] / max(data[0][0].shape[0] // c["batch_size"], 1)
                          for c in configs)
            scheduler = ASHAScheduler(time_attr="epoch", metric="test_acc", mode="max",
                                      max_t=longest + 1, grace_period=1, reduction_factor=2,
                                      stop_last_trials=False)
        with tempfile.TemporaryDirectory(prefix="fastmnist-sweep-") as storage:
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search(list(range(len(configs))))},
                tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=True),
                run_config=tune.RunConfig(name="fastmnist-sweep", storage_path=storage,
                                          verbose=0, callbacks=[Events(tracker, mailbox)]))
            tuner.fit()
    finally:
        if output_engine is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = output_engine
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
        if started_here:
            ray.shutdown()
    return startup


class Events(tune.Callback):
    """Tune's trial events, passed on to the sweep's tracker."""

    def __init__(self, tracker, mailbox):
        self.tracker, self.mailbox = tracker, mailbox

    def on_trial_start(self, iteration, trials, trial, **info):
        self.tracker.started(trial.config["trial"])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.tracker.evaluated(result["trial"], result["step"], result["epoch"],
                               result["train_acc"], result["test_acc"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        index = trial.config["trial"]
        sent = ray.get(self.mailbox.take.remote(index))
        if sent is None:  # ended by the scheduler before it finished
            self.tracker.stopped(index)
        else:
            self.tracker.finished(index, *sent)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = trial.get_error()
        lines = [line for line in str(error or "").splitlines() if line.strip()]
        self.tracker.failed(trial.config["trial"], lines[-1] if lines else "the Ray trial failed")
