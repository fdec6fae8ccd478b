"""How long loading a dataset takes: from its IDX files (parse + verify) and from the .npz cache.

    python benchmarks/bench_data.py --dataset fashion-mnist [--repeat 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time

from fastmnist.datasets import SPLITS, cache_file, get_dataset, load_mnist, load_split


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    ds = get_dataset(args.dataset)

    def from_files():
        for split in SPLITS:
            cache_file(ds, split).unlink(missing_ok=True)
            load_split(ds.name, split, data_dir=args.data_dir, download=False)

    def from_cache():
        for split in SPLITS:
            load_split(ds.name, split, download=False)

    results = {"dataset": ds.name,
               "files_seconds": best_of(from_files, max(1, args.repeat // 2)),
               "cache_seconds": best_of(from_cache, args.repeat),
               "load_mnist_normalized_seconds": best_of(
                   lambda: load_mnist(normalize=True, dataset=ds.name, download=False), args.repeat)}
    for key, value in results.items():
        print(f"{key:32s} {value if isinstance(value, str) else f'{value * 1000:8.1f} ms'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
