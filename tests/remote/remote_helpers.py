"""Shared pieces of the remote tests: the board script, free ports, a tiny conv model and its build."""

import importlib.util
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from tvm.relax.frontend.torch import from_exported_program

from tvm_lowrank.build import build, export_library
from tvm_lowrank.targets import load_target

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "arm_board.py"
_spec = importlib.util.spec_from_file_location("arm_board", SCRIPT)
arm_board = importlib.util.module_from_spec(_spec)
sys.modules["arm_board"] = arm_board
_spec.loader.exec_module(arm_board)

ARM_TARGET = "arm-cortex-a72"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def board_missing() -> str | None:
    """Why no emulated board can be started here, or None."""
    missing = arm_board.missing_host_tools()
    if missing:
        return f"{', '.join(missing)} not installed (run scripts/arm_board.py setup)"
    if arm_board.ready_info() is None:
        return f"no emulated aarch64 board cached at {arm_board.board_dir()} (run scripts/arm_board.py setup)"
    return None


class TinyConvNet(nn.Module):
    """A 3x3 conv, ReLU, then a 3x1/1x3 pair: the shapes the low-rank rewrite produces."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(channels, channels, (3, 1), padding=(1, 0)),
                                      nn.Conv2d(channels, 4, (1, 3), padding=(0, 1)))

    def forward(self, x):
        return self.features(x)


def relax_module(model: nn.Module, x: torch.Tensor):
    return from_exported_program(torch.export.export(model.eval(), (x,)), unwrap_unit_return_tuple=True)


def build_library(model: nn.Module, x: torch.Tensor, target_name: str, path: Path) -> Path:
    """Build and export `model` for a target file (cross-compiled where the target says so)."""
    target = load_target(target_name)
    return export_library(build(relax_module(model, x), target), path, target)


def skip_without_cross_compiler(target_name: str) -> None:
    """Skip the test where the target's cross compiler is not installed."""
    cross_compiler = load_target(target_name).cross_compiler
    if cross_compiler and shutil.which(cross_compiler) is None:
        pytest.skip(f"{cross_compiler} not installed (run scripts/arm_board.py setup)")


def compile_tiny(target_name: str, out: Path, **options):
    """compile_model (the API path) on TinyConvNet, its convs rewritten as rank-2 Tai pairs.

    Its outputs are feature maps, not class scores, so top-1 agreement with the dense model is not
    required; the compiler check (vs the PyTorch low-rank model) is what matters here. Skips the
    test where the target's cross compiler is not installed.
    """
    from tvm_lowrank.api import compile_model

    skip_without_cross_compiler(target_name)
    model, example = tiny_model()
    options = {"method": "tai", "rank": 2, "min_top1_agreement": 0.0, "num_random_inputs": 4, **options}
    return compile_model(model, target=target_name, out=out, example_input=example, **options)


def tiny_model():
    """(TinyConvNet, example input), seeded: the model of compile_tiny, as "remote_helpers:tiny_model"
    for the CLI."""
    torch.manual_seed(0)
    return TinyConvNet().eval(), torch.randn(1, 3, 12, 12)
