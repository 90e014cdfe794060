"""`tvm-lowrank bench` end to end on this machine's x86 target with a tiny model: every output
file with its columns, numbers that agree with PyTorch, the cache, and a failing cell."""

import json

import numpy as np
import pytest
import torch

from bench_helpers import read_csv, run_cli, tiny_fmnist_cnn
from tvm_lowrank.targets import host_cpu_target as host_target
from tvm_lowrank.bench.plots import PLOTS
from tvm_lowrank.bench.tables import COLUMNS, KERNEL_COLUMNS
from tvm_lowrank.data import load_fashion_mnist

MODEL = "bench_helpers:tiny_fmnist_cnn"
IMAGES = 40
COMMON = ("--models", MODEL, "--rank", "macs:0.5", "--accuracy-images", str(IMAGES), "--dataset", "fashion-mnist")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The dense and Tai cells measured once; the tests below reuse (and extend) the output."""
    out = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as monkeypatch:
        code, compiles = run_cli(monkeypatch, out, *COMMON, "--methods", "dense,tai", "--targets", host_target())
    return out, code, compiles


def _rows(out):
    return {row["method"]: row for row in read_csv(out / "results.csv")[1]}


def test_outputs_have_every_file_and_column(first_run):
    out, code, compiles = first_run
    assert code == 0 and compiles == 2
    columns, rows = read_csv(out / "results.csv")
    assert columns == list(COLUMNS)
    assert sorted(row["method"] for row in rows) == ["dense", "tai"]
    assert all(row["status"] == "ok" and row["emulated"] == "False" for row in rows)
    data = json.loads((out / "results.json").read_text())
    assert [cell["method"] for cell in data["cells"]] == [row["method"] for row in rows]
    assert set(data["meta"]) >= {"machine", "threads", "repeat", "accuracy_images"}
    kernel_columns, kernels = read_csv(out / "kernels.csv")
    assert kernel_columns == list(KERNEL_COLUMNS) and {k["method"] for k in kernels} == {"dense", "tai"}
    table = (out / "results.md").read_text()
    assert table.count(f"| {MODEL} |") == 2 and "load average" in table
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_numbers_agree_with_the_model(first_run):
    out, _, _ = first_run
    rows = _rows(out)
    dense, tai = rows["dense"], rows["tai"]
    # MACs: dense is the reference; Tai at macs:0.5 needs at most half of each decomposed conv
    assert int(dense["conv_macs"]) == int(dense["conv_macs_dense"]) == int(tai["conv_macs_dense"])
    assert float(dense["mac_reduction"]) == 1.0
    assert int(tai["layers_decomposed"]) >= 1 and int(tai["conv_macs"]) < int(dense["conv_macs"])
    assert float(tai["mac_reduction"]) == pytest.approx(int(tai["conv_macs_dense"]) / int(tai["conv_macs"]))
    # the dense build computes the PyTorch model: same top-1 on the real test images
    model, _ = tiny_fmnist_cnn()
    images, labels = load_fashion_mnist("test", limit=IMAGES)
    with torch.no_grad():
        expected = float(np.mean(model(torch.from_numpy(images)).argmax(1).numpy() == labels))
    assert float(dense["accuracy"]) == pytest.approx(expected)
    assert int(dense["accuracy_images"]) == IMAGES and dense["dataset"] == "fashion-mnist"
    assert float(dense["top1_agreement"]) == 1.0
    for row in (dense, tai):
        assert float(row["max_rel_error_vs_lowrank_reference"]) <= 1e-4
        p10, median, p90 = (float(row[f"latency_ms_{q}"]) for q in ("p10", "median", "p90"))
        assert 0 < p10 <= median <= p90 and int(row["latency_samples"]) == 5
        assert float(row["torch_ms_median"]) > 0 and float(row["ort_ms_median"]) > 0
        assert int(row["build_bytes"]) > 0 and float(row["peak_gflops"]) > 0
    kernels = read_csv(out / "kernels.csv")[1]
    for row in (dense, tai):  # the model's kernel time and GFLOP/s are its kernels' sums
        mine = [k for k in kernels if k["method"] == row["method"]]
        assert float(row["kernels_ms"]) == pytest.approx(sum(float(k["seconds"]) for k in mine) * 1e3)
        assert float(row["kernels_gflops"]) == pytest.approx(
            sum(float(k["flops"]) for k in mine) / float(row["kernels_ms"]) / 1e6)
    assert sum(float(k["flops"]) for k in kernels if k["method"] == "tai") < \
        sum(float(k["flops"]) for k in kernels if k["method"] == "dense")
    assert float(tai["speedup_vs_dense"]) == pytest.approx(
        float(dense["latency_ms_median"]) / float(tai["latency_ms_median"]))


def test_rerun_measures_only_missing_cells_and_reports_failures(first_run, monkeypatch):
    out, _, _ = first_run
    code, compiles = run_cli(monkeypatch, out, *COMMON, "--methods", "dense,tai", "--targets", host_target())
    assert (code, compiles) == (0, 0)  # both cells from the cache
    assert all(row["cached"] == "True" for row in _rows(out).values())

    # a method that does not exist and a board target with no tracker fail; the rest goes on
    code, compiles = run_cli(monkeypatch, out, *COMMON, "--methods", "dense,tai,nosuchmethod",
                             "--targets", f"{host_target()},arm-cortex-a72")
    assert code == 1
    rows = read_csv(out / "results.csv")[1]
    failed = {(row["method"], row["target"]): row["error"] for row in rows if row["status"] == "failed"}
    assert set(failed) == {("nosuchmethod", host_target()), ("dense", "arm-cortex-a72"),
                           ("tai", "arm-cortex-a72"), ("nosuchmethod", "arm-cortex-a72")}
    assert "nosuchmethod" in failed[("nosuchmethod", host_target())]
    assert "--tracker" in failed[("dense", "arm-cortex-a72")]
    assert compiles == 0  # the host cells came from the cache; the others failed before a build
    assert "failed" in (out / "results.md").read_text()
