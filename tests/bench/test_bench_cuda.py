"""scripts/bench_cuda.py: without a GPU it stops with the reason; its table's ratios come from the rows."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_cuda import main, markdown  # noqa: E402
from tvm_lowrank.runner import local_unavailable_reason  # noqa: E402
from tvm_lowrank.targets import load_target  # noqa: E402


def test_without_a_gpu_it_exits_2_naming_why(tmp_path, capsys):
    reason = local_unavailable_reason(load_target("cuda-sm90"))
    if reason is None:
        pytest.skip("a CUDA GPU is here: the benchmark would run")
    assert main(["--out", str(tmp_path / "bench")]) == 2
    assert reason in capsys.readouterr().err and not (tmp_path / "bench").exists()


def test_table_ratios():
    rows = [{"model": "m", "size": 28, "method": "dense", "tvm_ms": 0.3, "torch_ms": 0.9, "conv_macs": 400},
            {"model": "m", "size": 28, "method": "tai", "tvm_ms": 0.1, "torch_ms": 0.5, "conv_macs": 100}]
    line = markdown(rows).splitlines()[2]
    assert line == "| m 28² | 0.300 | 0.100 | 0.900 | 0.500 | 5.00 | 3.00 | 4.00 |"
