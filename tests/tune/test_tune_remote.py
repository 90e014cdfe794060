"""Tuning for an aarch64 target on an emulated board through TVM's RPC tracker (slow: qemu)."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

import tune_models
from tvm_lowrank.api import prepare_model
from tvm_lowrank.database import check_database
from tvm_lowrank.errors import TargetError
from tvm_lowrank.targets import load_target
from tvm_lowrank.tune import database_coverage, tune_module

ARM_TARGET = "arm-cortex-a72"
_HELPERS = Path(__file__).resolve().parents[1] / "remote" / "remote_helpers.py"


def _remote_helpers():
    spec = importlib.util.spec_from_file_location("remote_helpers", _HELPERS)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("remote_helpers", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def board():
    helpers = _remote_helpers()
    if helpers.board_missing():
        pytest.skip(helpers.board_missing())
    port = helpers.free_port()
    try:
        yield helpers.arm_board.start(port=port, key=load_target(ARM_TARGET).rpc_key, boards=1,
                                      board_port=helpers.free_port())
    finally:
        helpers.arm_board.stop(port)
        shutil.rmtree(helpers.arm_board.run_dir(port), ignore_errors=True)


def test_board_target_needs_rpc(tmp_path):
    model, example = tune_models.first_conv_only()
    mod = prepare_model(model, "dense", example_input=example).mod
    with pytest.raises(TargetError, match="--rpc"):
        tune_module(mod, ARM_TARGET, tmp_path / "db", trials=1, progress=None)


@pytest.mark.slow
def test_tune_on_emulated_board(board, tmp_path):
    model, example = tune_models.first_conv_only()
    mod = prepare_model(model, "dense", example_input=example).mod
    database = tmp_path / "db"
    lines = []
    result = tune_module(mod, ARM_TARGET, database, trials=3, min_trials_per_task=3, rpc=board["tracker"],
                         batch_size=2, population_size=64, warmup_samples=2, random_seed=0,
                         progress=lines.append)
    assert result.measured == 3, lines
    assert result.tasks[0].seed_seconds is not None and result.tasks[0].best_seconds is not None
    assert check_database(database, load_target(ARM_TARGET)).records == 3
    assert all(seconds is not None for seconds in database_coverage(mod, ARM_TARGET, database).values())
