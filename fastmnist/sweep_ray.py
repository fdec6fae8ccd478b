"""The Ray engine of a sweep: every trial a Ray Tune trial, on all cores, GPUs and machines.

Without an address, Ray starts here in-process with this machine's cores (or ``cpus``); with
``address="auto"`` or ``"ray://host:10001"`` the sweep joins that cluster and ships this
fastmnist package to it. The data set goes into Ray's object store once (``ray.put``); each
node keeps one copy in shared memory that its trials read without copying. A trial gets
``cpus_per_trial`` cores (BLAS held to that many threads, so parallel trials do not
oversubscribe the machine) and ``gpus_per_trial`` GPUs (fractions share one). It reports test
accuracy to Tune after every evaluation, so an ASHA scheduler (``early_stop``) can end poor
trials.

Everything the driver learns goes through one small actor, the :class:`Mailbox`: trials post
their progress and, at the end, their record and model (``.npz`` bytes, never a pickled
object); Tune's callbacks post which trials it stopped or lost. That works the same whether
Tune's loop runs here or, under Ray Client (``ray://``), on the cluster.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from .space import SweepSpecError
from .trials import run_trial

POLL_SECONDS = 0.25


class Mailbox:
    """An actor: events from trials and Tune, in order, until the driver drains them; and a
    flag the driver raises to stop the sweep."""

    def __init__(self):
        self.events, self.stopping = [], False

    def post(self, *event) -> None:
        self.events.append(event)

    def drain(self) -> list:
        events, self.events = self.events, []
        return events

    def stop(self) -> None:
        self.stopping = True

    def should_stop(self) -> bool:
        return self.stopping


def ray_trial(config: dict, shared: dict) -> None:
    """A Tune trial: run trial ``config["trial"]`` of the sweep within this worker's cores."""
    from threadpoolctl import threadpool_limits

    index, mailbox = config["trial"], shared["mailbox"]
    mailbox.post.remote("started", index)
    data = ray.get(shared["data"])  # zero-copy views of this node's copy
    cpus = shared["cpus_per_trial"]
    device = shared["device"]
    if device in (None, "auto"):  # Ray hides the GPUs a trial was not given
        device = "cuda" if shared["gpus_per_trial"] else "cpu"

    def report(step, epoch, train_acc, test_acc):
        mailbox.post.remote("evaluated", index, step, epoch, train_acc, test_acc)
        tune.report({"step": step, "epoch": epoch, "train_acc": train_acc, "test_acc": test_acc})

    with threadpool_limits(limits=max(int(cpus), 1), user_api="blas"):
        record, model = run_trial(shared["configs"][index], data, device=device,
                                  overlap=None if cpus >= 2 else False, report=report,
                                  meta=shared["meta"])
    ray.get(mailbox.post.remote("finished", index, record, model))


class Events(tune.Callback):
    """Posts the trials that Tune ended without their own last word: stopped early by the
    scheduler, or lost (a worker died)."""

    def __init__(self, mailbox):
        self.mailbox = mailbox

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.mailbox.post.remote("ended", trial.config["trial"], None)

    def on_trial_error(self, iteration, trials, trial, **info):
        lines = [line for line in str(trial.get_error() or "").splitlines() if line.strip()]
        self.mailbox.post.remote("ended", trial.config["trial"],
                                 lines[-1] if lines else "the Ray trial failed")


class StopOnRequest(tune.Stopper):
    """Ends the whole run once the driver raises the mailbox's flag (looked at twice a second)."""

    def __init__(self, mailbox):
        self.mailbox, self.looked, self.stopping = mailbox, 0.0, False

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        if not self.stopping and time.monotonic() - self.looked > 0.5:
            self.looked = time.monotonic()
            self.stopping = ray.get(self.mailbox.should_stop.remote())
        return self.stopping


def start(address=None, cpus=None) -> tuple[bool, float]:
    """Connect to Ray (a cluster at ``address``, or a new local instance with ``cpus`` cores);
    returns (whether this call started the connection, seconds it took)."""
    if ray.is_initialized():
        return False, 0.0
    t0 = time.perf_counter()
    options = dict(log_to_driver=False, logging_level=logging.ERROR)
    if address:  # the cluster's workers import this very fastmnist
        ray.init(address=address, runtime_env={"py_modules": [str(Path(__file__).parent)]},
                 **options)
    else:
        ray.init(num_cpus=cpus, include_dashboard=False, **options)
    return True, time.perf_counter() - t0


def check_resources(cpus_per_trial, gpus_per_trial) -> None:
    """Refuse trials bigger than every node (Tune would wait for them forever)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not any(n.get("CPU", 0) >= cpus_per_trial and n.get("GPU", 0) >= gpus_per_trial
               for n in nodes):
        have = "; ".join(f"{n.get('CPU', 0):g} CPUs, {n.get('GPU', 0):g} GPUs" for n in nodes)
        raise SweepSpecError(f"no Ray node can hold a trial of {cpus_per_trial:g} CPUs and "
                             f"{gpus_per_trial:g} GPUs (nodes: {have or 'none'}); lower "
                             "--cpus-per-trial / --gpus-per-trial")


def deliver(events, tracker) -> None:
    """Pass the mailbox's events on to the sweep's tracker."""
    for kind, index, *rest in events:
        if kind == "started":
            tracker.started(index)
        elif kind == "evaluated":
            tracker.evaluated(index, *rest)
        elif kind == "finished":
            tracker.finished(index, *rest)
        elif kind == "ended" and not tracker.ended[index]:  # no last word from the trial
            if rest[0] is None:
                tracker.stopped(index)
            else:
                tracker.failed(index, rest[0])


def run(configs, data, tracker, *, address=None, cpus=None, cpus_per_trial=1,
        gpus_per_trial=0, early_stop=False, device=None, meta=None) -> None:
    """Run ``configs`` as Ray Tune trials, telling ``tracker`` what happens (and how long
    starting Ray took: 0 when already connected). Ctrl-C stops the trials, then raises
    KeyboardInterrupt once what finished has been passed on."""
    started_here, tracker.startup_seconds = start(address, cpus)
    if not address:  # a cluster may grow (an autoscaler adds GPU nodes); this machine won't
        try:
            check_resources(cpus_per_trial, gpus_per_trial)
        except SweepSpecError:
            if started_here:
                ray.shutdown()
            raise
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
                                          verbose=0, callbacks=[Events(mailbox)],
                                          stop=StopOnRequest(mailbox)))
            follow(tuner, mailbox, tracker)
    finally:
        if output_engine is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = output_engine
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
        if started_here:
            ray.shutdown()


def follow(tuner, mailbox, tracker) -> None:
    """Run ``tuner.fit()`` on a helper thread while this one passes the mailbox's events to
    ``tracker``; on Ctrl-C, ask Tune to stop, collect what finished, and re-raise."""
    failure = []

    def fit():
        try:
            tuner.fit()
        except BaseException as exc:  # handed to the calling thread
            failure.append(exc)

    thread = threading.Thread(target=fit, name="fastmnist-sweep-tune", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(POLL_SECONDS)
            deliver(ray.get(mailbox.drain.remote()), tracker)
    except KeyboardInterrupt:
        mailbox.stop.remote()
        try:
            thread.join(60)  # Tune ends the running trials
            deliver(ray.get(mailbox.drain.remote()), tracker)
        except KeyboardInterrupt:
            pass  # asked twice: leave now
        raise
    deliver(ray.get(mailbox.drain.remote()), tracker)
    if failure:
        raise failure[0]
