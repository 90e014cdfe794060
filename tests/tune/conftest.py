"""A tiny model tuned once per session (a few trials per task), shared by the tuning tests.

Tuning settings are cut to the bone (small population, batches of 2) so the folder runs in a few
minutes on a loaded 2-core machine; the searches find little, but every mechanism is exercised.
"""

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

import tune_models
from tvm_lowrank.api import prepare_model
from tvm_lowrank.schedule import cpu_conv
from tvm_lowrank.targets import host_cpu_target, load_target
from tvm_lowrank.tune import tune_module

FAST = {"batch_size": 2, "population_size": 64, "warmup_samples": 2, "random_seed": 0}
TRIALS = 6  # 2 tasks: 3 each (the seed included)


def host_target():
    return load_target(host_cpu_target())


@dataclass
class Tuned:
    mod: object  # the Relax module that was tuned
    target: object  # TargetSpec
    database: Path
    result: object  # TuneResult
    lines: list  # progress lines


@pytest.fixture(scope="session")
def tuned(tmp_path_factory):
    model, example = tune_models.two_convs()
    mod = prepare_model(model, "dense", example_input=example).mod
    database = tmp_path_factory.mktemp("tuned") / "db"
    lines = []
    result = tune_module(mod, host_target(), database, trials=TRIALS, min_trials_per_task=3,
                         progress=lines.append, **FAST)
    return Tuned(mod, host_target(), database, result, lines)


@pytest.fixture
def database_copy(tuned, tmp_path):
    """A copy of the tuned database that a test may damage."""
    copy = tmp_path / "db"
    shutil.copytree(tuned.database, copy)
    return copy


@pytest.fixture
def schedules_changed(monkeypatch):
    """Our conv schedules change after tuning: tiles planned for a quarter of the vector registers."""
    planned_for = cpu_conv.cpu_vector_info
    monkeypatch.setattr(cpu_conv, "cpu_vector_info",
                        lambda target: replace(planned_for(target), registers=8))
