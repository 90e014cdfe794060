"""The databases shipped in schedules/: valid for their target and covering the demo's kernels."""

import pytest

from tvm_lowrank.api import DENSE, prepare_model
from tvm_lowrank.database import SCHEDULES_DIR, check_database, shipped_database
from tvm_lowrank.demo import DEMO_MODEL, DEMO_RANK
from tvm_lowrank.models import create_model, model_input_shape
from tvm_lowrank.targets import load_target
from tvm_lowrank.tune import database_coverage, outdated_kernels

SHIPPED = sorted(path.name for path in SCHEDULES_DIR.iterdir() if path.is_dir())


def test_the_demo_targets_ship_databases():
    assert {"x86-avx2", "x86-avx512"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("method", [DENSE, "tai"])
def test_shipped_database_is_valid_and_tunes_every_demo_kernel(name, method):
    import torch

    target = load_target(name)
    assert shipped_database(target) == SCHEDULES_DIR / name
    check_database(SCHEDULES_DIR / name, target)  # raises on a damaged or foreign file
    example = torch.zeros(model_input_shape(DEMO_MODEL))
    prepared = prepare_model(create_model(DEMO_MODEL), method, DEMO_RANK, example_input=example)
    coverage = database_coverage(prepared.mod, target, SCHEDULES_DIR / name)
    missing = sorted(kernel for kernel, seconds in coverage.items() if seconds is None)
    assert coverage and not missing, f"kernels without a tuned record in schedules/{name}: {missing}"
    outdated = outdated_kernels(prepared.mod, target, SCHEDULES_DIR / name)
    assert not outdated, f"schedules/{name} was tuned before our schedules changed: re-tune {outdated}"


def test_no_shipped_database_for_an_untuned_target():
    assert shipped_database(load_target("arm-cortex-a53")) is None
