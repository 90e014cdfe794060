"""`tvm-lowrank bench` on the emulated Cortex-A72 board: its cells run through the tracker, agree
with PyTorch, and are labelled emulated in every output and left out of the speed plots."""

import json

import pytest

from bench_helpers import board_missing, read_csv, run_cli, start_board
from tvm_lowrank.bench.plots import _speed_rows
from tvm_lowrank.targets import load_target

TARGET = "arm-cortex-a72"


@pytest.fixture(scope="module")
def board():
    if board_missing():
        pytest.skip(board_missing())
    info, stop = start_board(load_target(TARGET).rpc_key)
    try:
        yield info
    finally:
        stop()


def test_board_cells_are_measured_and_labelled_emulated(board, tmp_path, monkeypatch):
    # mali-g76 has no board on this tracker: its cells fail before a build, the others run
    code, compiles = run_cli(monkeypatch, tmp_path, "--models", "bench_helpers:tiny_fmnist_cnn",
                             "--methods", "dense,tai", "--rank", "macs:0.5", "--targets", f"{TARGET},mali-g76",
                             "--tracker", board["tracker"], "--accuracy-images", "10",
                             "--dataset", "fashion-mnist")
    assert (code, compiles) == (1, 2)
    all_rows = read_csv(tmp_path / "results.csv")[1]
    failed = [row for row in all_rows if row["target"] == "mali-g76"]
    assert [row["status"] for row in failed] == ["failed", "failed"]
    assert all("no board with key 'mali-g76'" in row["error"] for row in failed)
    rows = [row for row in all_rows if row["target"] == TARGET]
    assert [row["method"] for row in rows] == ["dense", "tai"]
    for row in rows:
        assert row["status"] == "ok" and row["where"] == "rpc"
        assert row["emulated"] == "True" and "qemu" in row["emulated_by"]
        assert float(row["max_rel_error_vs_lowrank_reference"]) <= 1e-4  # checked on the board
        assert int(row["accuracy_images"]) == 10 and 0 <= float(row["accuracy"]) <= 1
        assert float(row["latency_ms_median"]) > 0
        assert row["torch_ms_median"] == "" and row["peak_gflops"] == ""  # host-only columns
    assert rows[0]["top1_agreement"] == "1.0"
    assert "(emulated)" in (tmp_path / "results.md").read_text()
    cells = [cell for cell in json.loads((tmp_path / "results.json").read_text())["cells"]
             if cell["status"] == "ok"]
    assert len(cells) == 2 and all(cell["emulated"] is True for cell in cells)
    assert _speed_rows(cells, include_emulated=False) == []
    assert len(_speed_rows(cells, include_emulated=True)) == 2
