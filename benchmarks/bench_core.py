"""One SGD step at many sizes, and one full-set evaluation: fastmnist vs the article vs PyTorch
vs the matmul floor, side by side in one process.

    python benchmarks/bench_core.py [--device cuda] [--batches 100,1000,10000,60000]
        [--hiddens 50,256,1024] [--repeat 5] [--json core.json] [--chart core.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastmnist import bench  # noqa: E402

def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", type=ints, default=(100, 1000, 10_000, 60_000))
    p.add_argument("--hiddens", type=ints, default=(50, 256, 1024))
    p.add_argument("--rows", type=int, default=60_000, help="rows of the (random) data set")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", default=None)
    p.add_argument("--chart", default=None)
    args = p.parse_args(argv)
    rows = bench.core(args.device, args.batches, args.hiddens, args.repeat, args.rows)
    evaluation = bench.evaluation(args.device, rows=args.rows, repeat=args.repeat)
    results = {"environment": bench.environment(bench.get_backend(args.device)),
               "steps": rows, "evaluation": evaluation}
    print(bench.core_table(rows, evaluation))
    bench.save(results, args.json, args.chart, bench.core_chart, rows)
    return results


if __name__ == "__main__":
    main()
