"""Trials per minute of a sweep, in-process (``local``) against Ray Tune (``ray``), and what
starting Ray costs: the same N trials (the article's run, one seed each) on each engine.

    python benchmarks/bench_sweep.py --dataset fashion-mnist [--trials 8] [--iters 10000]
"""
from __future__ import annotations

import argparse
import time

import fastmnist as fm
from fastmnist import bench, sweeps


class Clock(sweeps.Tracker):
    """The sweep's tracker, noting when trials start and end (seconds since the sweep began)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.starts, self.ends = [], []

    def started(self, i):
        self.starts.append(time.perf_counter() - self.t0)
        super().started(i)

    def end(self, i, record):
        self.ends.append(time.perf_counter() - self.t0)
        super().end(i, record)


def measure(engine: str, space: dict, data, cpus) -> dict:
    clocks = []

    def tracker(*args, **kwargs):
        clocks.append(Clock(*args, **kwargs))
        return clocks[-1]

    real, sweeps.Tracker = sweeps.Tracker, tracker
    try:
        t0 = time.perf_counter()
        result = fm.sweep(space, engine=engine, data=data, cpus=cpus, log=None, progress=False)
        total = time.perf_counter() - t0
    finally:
        sweeps.Tracker = real
    clock, n = clocks[0], len(result.trials)
    first, last = min(clock.starts), max(clock.ends)
    return {"engine": engine, "trials": n, "seconds": round(total, 2),
            "ray_init_seconds": round(result.startup_seconds, 2),
            "first_trial_started_at": round(first, 2),
            "trials_per_minute": round(60 * n / total, 1),
            "trials_per_minute_running": round(60 * n / (last - first), 1),
            "mean_trial_seconds": round(sum(r["seconds"] for r in result.trials) / n, 2),
            "test_acc": [r["test_acc"] for r in result.trials]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--iters", type=int, default=10_000)
    p.add_argument("--hidden", type=int, default=50)
    p.add_argument("--engines", default="local,ray")
    p.add_argument("--cpus", type=int, default=None, help="cores for the Ray started here")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    data = sweeps.load_data(args.dataset, args.data_dir, args.train_limit, offline=False)
    space = {"seed": list(range(args.trials)), "iters": args.iters, "hidden": args.hidden}
    rows = [measure(engine, space, data, args.cpus) for engine in args.engines.split(",")]
    print(f"{args.trials} trials of {args.iters} steps (784-{args.hidden}-10, batch 100) on "
          f"{args.dataset}, {data[0][0].shape[0]} training rows")
    print(f"{'engine':7s} {'seconds':>8s} {'trials/min':>11s} {'running':>8s} {'per trial':>10s} "
          f"{'ray.init':>9s} {'1st trial at':>13s}")
    for r in rows:
        print(f"{r['engine']:7s} {r['seconds']:8.2f} {r['trials_per_minute']:11.1f} "
              f"{r['trials_per_minute_running']:8.1f} {r['mean_trial_seconds']:9.2f}s "
              f"{r['ray_init_seconds']:8.2f}s {r['first_trial_started_at']:12.2f}s")
    results = {"dataset": args.dataset, "iters": args.iters, "hidden": args.hidden, "rows": rows}
    bench.save(results, args.json)
    return results


if __name__ == "__main__":
    main()
