"""Load on `fastmnist serve`: N clients posting real images for T seconds.

Starts the real command on a free local port, then runs each client count in turn: requests
per second, p50/p99 latency, errors, and the server's peak memory (its VmHWM).

    python benchmarks/bench_serve.py --model model.npz --clients 1 16 --seconds 20
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "real-digits"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(model: str, port: int) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "fastmnist.cli", "serve", "--model", model,
                             "--port", str(port), "--device", "cpu"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server stopped: {proc.stderr.read()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start in 60 s")


def images(folder: Path, limit: int = 40) -> list[tuple[bytes, str]]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return [(p.read_bytes(), "image/png" if p.suffix.lower() == ".png" else "image/jpeg")
            for p in paths[:limit]]


def load(url: str, bodies, clients: int, seconds: float) -> dict:
    """``clients`` threads posting ``bodies`` round-robin until ``seconds`` pass."""
    import httpx

    stop = time.perf_counter() + seconds

    def client(k: int):
        times, errors, i = [], 0, k
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.perf_counter() < stop:
                body, kind = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    ok = c.post("/api/predict", content=body,
                                headers={"Content-Type": kind}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                times.append(time.perf_counter() - t0)
                errors += not ok
                i += clients
        return times, errors

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        runs = list(pool.map(client, range(clients)))
    wall = time.perf_counter() - t0
    latencies = np.array([t for times, _ in runs for t in times])
    return {"clients": clients, "requests": int(latencies.size),
            "requests_per_s": latencies.size / wall,
            "p50_ms": float(np.percentile(latencies, 50) * 1e3),
            "p99_ms": float(np.percentile(latencies, 99) * 1e3),
            "errors": int(sum(e for _, e in runs))}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model file to serve")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    p.add_argument("--seconds", type=float, default=20.0, help="how long each load runs")
    p.add_argument("--images", default=str(REAL), help="folder of images to send")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    bodies = images(Path(args.images))
    port = free_port()
    proc = start_server(args.model, port)
    try:
        results = []
        for n in args.clients:
            r = load(f"http://127.0.0.1:{port}", bodies, n, args.seconds)
            r["server_peak_rss_mb"] = peak_rss_mb(proc.pid)
            results.append(r)
            print(f"{n:3d} clients: {r['requests_per_s']:6.1f} req/s, p50 {r['p50_ms']:6.0f} ms, "
                  f"p99 {r['p99_ms']:6.0f} ms, {r['errors']} errors of {r['requests']}, "
                  f"server peak {r['server_peak_rss_mb']:.0f} MB", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
