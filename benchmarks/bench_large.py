"""Large and full-batch training end to end: ``train()`` against PyTorch on the CPU, same threads.

    python benchmarks/bench_large.py [--dataset fashion-mnist] [--batches 10000,60000]
        [--hiddens 50,256] [--iters 12] [--repeat 5] [--json large.json]

Each run draws ``--iters`` batches with replacement from the whole training set and takes one SGD
step on each, scoring the train and test sets after the first and the last step (fastmnist:
``train(..., eval_every=iters)``; PyTorch: the same loop written the usual way, with
``torch.set_num_threads`` set to the threads fastmnist may use). The two run interleaved,
``--repeat`` rounds; each line gives their median seconds and the ratios of the medians and of
the best times (the best filters out the moments a shared machine was busy elsewhere).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastmnist import TwoLayerNet, train  # noqa: E402
from fastmnist.bench import environment, get_backend, to_json, torch_module  # noqa: E402
from fastmnist.datasets import load_mnist  # noqa: E402
from fastmnist.steps.threaded import thread_budget  # noqa: E402


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def run_fastmnist(data, hidden, batch, iters, seed=0) -> dict:
    (x, t), (xt, tt) = data
    net = TwoLayerNet(784, hidden, 10, seed=seed, device="cpu")
    h = train(net, x, t, xt, tt, iters=iters, batch_size=batch, learning_rate=0.1, seed=seed,
              eval_every=iters, quiet=True)
    return {"loss": h.loss[-1], "test_acc": h.test_acc[-1], "step": h.config["step"]}


def run_torch(torch, data, hidden, batch, iters, seed=0) -> dict:
    (x, t), (xt, tt) = data
    torch.manual_seed(seed)
    x, xt = torch.as_tensor(x), torch.as_tensor(xt)
    t, tt = torch.as_tensor(t.astype(np.int64)), torch.as_tensor(tt.astype(np.int64))
    model = torch.nn.Sequential(torch.nn.Linear(784, hidden), torch.nn.Sigmoid(),
                                torch.nn.Linear(hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    accs, losses = [], []
    for i in range(iters):
        idx = torch.randint(0, x.shape[0], (batch,))
        loss = loss_fn(model(x[idx]), t[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if i == 0 or i == iters - 1:
            with torch.no_grad():
                accs.append([(model(a).argmax(1) == b).float().mean().item() for a, b in ((x, t), (xt, tt))])
    return {"loss": losses[-1], "test_acc": accs[-1][1]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batches", type=ints, default=(10_000, 60_000))
    p.add_argument("--hiddens", type=ints, default=(50, 256))
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--train-limit", type=int, default=None, help="use the first N training rows")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    (x, t), test = load_mnist(normalize=True, dataset=args.dataset, data_dir=args.data_dir)
    data = ((x[:args.train_limit], t[:args.train_limit]), test)
    torch = torch_module()
    threads = thread_budget()
    if torch is not None:
        torch.set_num_threads(threads)
    rows = []
    for hidden in args.hiddens:
        for batch in args.batches:
            todo = {"fastmnist": lambda: run_fastmnist(data, hidden, batch, args.iters)}
            if torch is not None:
                todo["torch"] = lambda: run_torch(torch, data, hidden, batch, args.iters)
            times = {k: [] for k in todo}
            row = {"hidden": hidden, "batch": batch, "iters": args.iters, "threads": threads}
            for _ in range(args.repeat):
                for name, fn in todo.items():
                    t0 = time.perf_counter()
                    out = fn()
                    times[name].append(time.perf_counter() - t0)
                    row.update({f"{name}_{k}": v for k, v in out.items()})
            for name, v in times.items():
                row[name], row[f"{name}_best"] = statistics.median(v), min(v)
            rows.append(row)
            ratio = (f"  fastmnist / torch: median {row['fastmnist'] / row['torch']:.2f}, best "
                     f"{row['fastmnist_best'] / row['torch_best']:.2f}") if "torch" in row else ""
            print(f"hidden {hidden:4d} batch {batch:6d}: fastmnist ({row['fastmnist_step']}) "
                  f"{row['fastmnist']:.2f} s" + (f", torch {row['torch']:.2f} s" if "torch" in row else "")
                  + ratio, flush=True)
    results = {"environment": environment(get_backend("cpu")), "dataset": args.dataset,
               "rows": rows}
    if args.json:
        to_json(results, args.json)
    return results


if __name__ == "__main__":
    main()
