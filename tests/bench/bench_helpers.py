"""Shared pieces of the bench tests: a tiny Fashion-MNIST-shaped CNN (importable as
"bench_helpers:tiny_fmnist_cnn"), the CLI run with a compile counter, and an emulated board."""

import csv
import sys
from pathlib import Path

import torch
from torch import nn

from tvm_lowrank import api
from tvm_lowrank.cli import main as cli_main

# The remote tests' helpers start emulated boards (scripts/arm_board.py) on free ports.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote"))
from remote_helpers import arm_board, board_missing, free_port  # noqa: E402


def tiny_fmnist_cnn():
    """Takes 1x28x28 like the bundled models (so accuracy runs on real images); untrained."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()
    return model, torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def run_cli(monkeypatch, out_dir, *args) -> tuple[int, int]:
    """(exit code, compiles it made) of `tvm-lowrank bench --out out_dir ARGS`."""
    compiles = []
    original = api.compile_model

    def counting(*a, **k):
        compiles.append(k.get("target"))
        return original(*a, **k)

    monkeypatch.setattr(api, "compile_model", counting)
    code = cli_main(["bench", "--out", str(out_dir), "--repeat", "5", "--threads", "1", *args])
    monkeypatch.setattr(api, "compile_model", original)
    return code, len(compiles)


def read_csv(path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        return list(reader.fieldnames), list(reader)


def start_board(key: str):
    """A tracker on a free port with one emulated board under `key`; returns (info, stop)."""
    import shutil

    port = free_port()
    info = arm_board.start(port=port, key=key, boards=1, board_port=free_port())

    def stop():
        arm_board.stop(port)
        shutil.rmtree(arm_board.run_dir(port), ignore_errors=True)

    return info, stop
