"""The article's whole workload, every variant side by side: times and ratios to the matmul floor.

    python benchmarks/bench_workload.py --dataset fashion-mnist [--device cuda] [--repeat 2]
        [--iters 10000] [--json workload.json] [--chart workload.png] [--memory]

Variants: fastmnist, the article's algorithm in float64 NumPy (the reference), the same in
float32, PyTorch (when installed; same model, loop and device) and the matmul-only floor.
On a GPU (--device cuda) every variant runs on the device and the run ends with a device sync.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastmnist import bench  # noqa: E402
from fastmnist.datasets import load_mnist  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--iters", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--train-limit", type=int, default=None, help="use the first N training rows")
    p.add_argument("--repeat", type=int, default=2, help="interleaved rounds; best time kept")
    p.add_argument("--variants", default=None, help="comma-separated subset")
    p.add_argument("--memory", action="store_true", help="also measure peak host memory")
    p.add_argument("--json", default=None)
    p.add_argument("--chart", default=None)
    args = p.parse_args(argv)

    def load():
        (x, t), (xt, tt) = load_mnist(normalize=True, dataset=args.dataset, data_dir=args.data_dir)
        n = args.train_limit or x.shape[0]
        return (x[:n], t[:n]), (xt, tt)

    data = load()
    results = bench.workload(data, args.device, args.iters, args.batch_size, repeat=args.repeat,
                             variants=args.variants.split(",") if args.variants else None)
    results["workload"]["dataset"] = args.dataset
    if args.memory:
        del data
        results["memory"] = bench.peak_host_memory(load, args.device, args.iters)
    print(bench.workload_table(results))
    if "memory" in results:
        print(bench.memory_line(results["memory"]))
    bench.save(results, args.json, args.chart, bench.workload_chart)
    return results


if __name__ == "__main__":
    main()
