"""Every benchmark runs end to end at tiny sizes, so none of them rots (no timing is asserted)."""
import json
import sys
from pathlib import Path

import pytest

from fastmnist.cli import main as cli

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))


def test_workload_benchmark(tmp_path, fashion_dir, capsys):
    import bench_workload

    out = bench_workload.main(["--iters", "40", "--train-limit", "1000", "--repeat", "1",
                               "--memory", "--json", str(tmp_path / "w.json"),
                               "--chart", str(tmp_path / "w.png")])
    rows = out["results"]
    assert {"fastmnist", "fastmnist-serial", "article-float64", "numpy-float32", "matmul-floor"} <= set(rows)
    assert rows["matmul-floor"]["ratio_to_floor"] == 1.0
    assert all(r["seconds"] > 0 for r in rows.values())
    assert out["memory"]["peak_bytes"] > out["memory"]["dataset_bytes"] > 0
    saved = json.loads((tmp_path / "w.json").read_text())
    assert saved["environment"]["device"] == "cpu" and saved["workload"]["iters"] == 40
    assert (tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG"
    assert "x floor" in capsys.readouterr().out


def test_core_benchmark(tmp_path):
    import bench_core

    out = bench_core.main(["--batches", "10,50", "--hiddens", "8", "--rows", "300", "--repeat", "1",
                           "--json", str(tmp_path / "c.json"), "--chart", str(tmp_path / "c.png")])
    assert [(r["hidden"], r["batch"]) for r in out["steps"]] == [(8, 10), (8, 50)]
    assert out["steps"][0]["step"] in ("CpuStep", "CompiledStep", "ThreadedStep", "TiledStep")
    assert all(r["fastmnist"] > 0 and r["matmul-floor"] > 0 for r in out["steps"])
    assert out["evaluation"]["rows"] == 300
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_large_batch_benchmark(tmp_path, fashion_dir):
    import bench_large

    out = bench_large.main(["--batches", "300", "--hiddens", "8", "--iters", "2", "--repeat", "1",
                            "--train-limit", "600", "--json", str(tmp_path / "l.json")])
    (row,) = out["rows"]
    assert (row["hidden"], row["batch"], row["iters"]) == (8, 300, 2) and row["fastmnist"] > 0
    assert row["fastmnist_step"] in ("CpuStep", "CompiledStep", "ThreadedStep", "TiledStep")
    assert json.loads((tmp_path / "l.json").read_text())["rows"][0]["batch"] == 300


def test_data_benchmark(fashion_dir):
    import bench_data

    out = bench_data.main(["--dataset", "fashion-mnist", "--repeat", "1"])
    assert 0 < out["cache_seconds"] and 0 < out["files_seconds"]


def test_photo_benchmark(tmp_path, mnist_dir):
    import photo_eval

    out = photo_eval.main(["--count", "12", "--iters", "300", "--out", str(tmp_path / "p"),
                           "--data-dir", str(mnist_dir)])
    assert out["count"] == 12 and out["similarity_mean"] > 0.8
    assert 0 <= out["accuracy_article_pipeline"] <= out["accuracy_clean_originals"] + 0.1


def test_bench_command_quick(tmp_path, fashion_dir, monkeypatch, capsys):
    import fastmnist.bench as bench

    monkeypatch.setattr(bench, "STEPS", 2)
    assert cli(["bench", "--quick", "--repeat", "1", "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"workload.json", "workload.png", "core.json", "core.png"}
    assert "peak host memory while loading + training" in capsys.readouterr().out
    saved = json.loads((tmp_path / "workload.json").read_text())
    assert saved["memory"]["peak_bytes"] > saved["memory"]["dataset_bytes"] > 0


@pytest.mark.cuda
def test_workload_benchmark_on_the_gpu(fashion_dir):
    import bench_workload

    out = bench_workload.main(["--device", "cuda", "--iters", "200", "--repeat", "1", "--memory"])
    assert out["environment"]["device"].startswith("cuda")
    assert out["memory"]["gpu_pool_bytes"] > 0
