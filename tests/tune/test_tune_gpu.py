"""Tuning for a CUDA target on this machine: measured on its GPU where one is, refused with the reason where not."""

import pytest

import tune_models
from tvm_lowrank.api import prepare_model
from tvm_lowrank.errors import TargetError
from tvm_lowrank.runner import local_unavailable_reason
from tvm_lowrank.targets import load_target
from tvm_lowrank.tune import tune_module

CUDA_TARGET = "cuda-sm80"  # runs on any GPU from Ampere on


def test_cuda_tuning_runs_on_a_local_gpu_or_says_why_not(tmp_path):
    model, example = tune_models.first_conv_only()
    mod = prepare_model(model, "dense", example_input=example).mod
    reason = local_unavailable_reason(load_target(CUDA_TARGET))
    if reason is not None:
        with pytest.raises(TargetError, match="CUDA unavailable"):
            tune_module(mod, CUDA_TARGET, tmp_path / "db", trials=1, progress=None)
        return
    result = tune_module(mod, CUDA_TARGET, tmp_path / "db", trials=2, min_trials_per_task=2, batch_size=2,
                         population_size=16, warmup_samples=2, random_seed=0, progress=None)
    assert result.measured == 2 and result.tasks[0].best_seconds is not None
