"""Build -> export -> load -> run for the x86 targets, checked against PyTorch."""

import dataclasses
import os

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program

from tvm_lowrank.build import (build, compile_pipeline, export_library, load_executable, run_vm,
                               time_vm)
from tvm_lowrank.errors import TargetError
from tvm_lowrank.targets import load_target


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                      nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = TinyNet().eval()
    with torch.no_grad():  # non-trivial BN statistics so that BN is really exercised
        model.features[1].running_mean.uniform_(-0.5, 0.5)
        model.features[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 1, 16, 16)
    mod = from_exported_program(torch.export.export(model, (x,)), unwrap_unit_return_tuple=True)
    with torch.no_grad():
        expected = model(x).numpy()
    return mod, x.numpy(), expected


@pytest.mark.parametrize("name", ["x86-avx2", "x86-avx512"])
def test_exported_library_matches_pytorch(name, tiny, tmp_path):
    target = load_target(name)
    if not target.runs_on_host():
        pytest.skip(f"this CPU lacks {name}'s ISA ({', '.join(target.cpu_flags)})")
    mod, x, expected = tiny
    path = export_library(build(mod, target), tmp_path / f"tiny-{name}.so", target)
    vm = load_executable(path)
    np.testing.assert_allclose(run_vm(vm, x), expected, rtol=1e-4, atol=1e-4)
    seconds = time_vm(vm, x, repeat=3, number=2)
    assert len(seconds) == 3 and all(0 < s < 1 for s in seconds)


def test_default_pipeline_fuses_ops(tiny):
    lowered = compile_pipeline(load_target("x86-avx2"))(tiny[0])
    names = [gv.name_hint for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert any(name.startswith("fused_") for name in names), names


def test_empty_tuning_database_keeps_default_schedules(tiny, tmp_path):
    mod, x, expected = tiny
    executable = build(mod, load_target("x86-avx2"), database_dir=tmp_path)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    np.testing.assert_allclose(run_vm(vm, x), expected, rtol=1e-4, atol=1e-4)


def test_missing_database_dir_and_library_are_reported(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="tuning database"):
        build(tiny[0], load_target("x86-avx2"), database_dir=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no exported library"):
        load_executable(tmp_path / "missing.so")


def test_cross_compiler_links_the_library_or_fails_naming_the_target(tiny, tmp_path):
    target = load_target("x86-avx2")
    executable = build(tiny[0], target)
    native_as_cross = dataclasses.replace(target, cross_compiler="g++")  # same arch, explicit g++
    path = export_library(executable, tmp_path / "cross.so", native_as_cross)
    np.testing.assert_allclose(run_vm(load_executable(path), tiny[1]), tiny[2], rtol=1e-4, atol=1e-4)
    missing = dataclasses.replace(target, cross_compiler="no-such-linux-gnu-g++")
    with pytest.raises(TargetError, match="x86-avx2.*no-such-linux-gnu-g\\+\\+.* is not installed"):
        export_library(executable, tmp_path / "never.so", missing)


@pytest.mark.slow
def test_tuned_records_replace_the_default_schedule(tiny, tmp_path):
    """Two MetaSchedule trials on the zero pipeline's output (minutes here), then build with them.

    MetaSchedule insists on "num-cores" in its target; the build target, without it, still
    finds the records (they are keyed by workload).
    """
    from tvm.s_tir import meta_schedule as ms

    mod, x, expected = tiny
    target = load_target("x86-avx2")
    ms.relax_integration.tune_relax(
        mod=relax.get_pipeline("zero")(mod), params={},
        target=tvm.target.Target({**target.tvm_target_config, "num-cores": os.cpu_count()}),
        work_dir=str(tmp_path), max_trials_global=2, num_trials_per_iter=2,
        builder=ms.builder.LocalBuilder(timeout_sec=120, max_workers=1))
    tuned = compile_pipeline(target, tmp_path)(mod)
    default = compile_pipeline(target)(mod)
    changed = [gv.name_hint for gv, f in tuned.functions.items()
               if isinstance(f, tvm.tirx.PrimFunc) and f.script() != default[gv.name_hint].script()]
    assert changed, "no function took a tuned schedule"
    vm = relax.VirtualMachine(build(mod, target, database_dir=tmp_path), tvm.cpu())
    np.testing.assert_allclose(run_vm(vm, x), expected, rtol=1e-4, atol=1e-4)
