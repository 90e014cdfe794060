"""Target files: each shipped file loads and TVM accepts it; bad files fail naming file and problem."""

import json

import pytest
import tvm

from tvm_lowrank.errors import TargetError
from tvm_lowrank.runner import local_unavailable_reason
from tvm_lowrank.targets import TARGETS_DIR, host_cpu_flags, list_targets, load_target

X86_AVX2 = json.loads((TARGETS_DIR / "x86-avx2.json").read_text())


def write_target(tmp_path, **changes):
    data = {**X86_AVX2, **changes}
    path = tmp_path / "custom.json"
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not ...}))
    return path


def test_shipped_targets_include_the_x86_pair():
    assert {"x86-avx2", "x86-avx512"} <= set(list_targets())


@pytest.mark.parametrize("name", list_targets())
def test_each_shipped_target_loads_and_tvm_accepts_it(name):
    spec = load_target(name)
    assert spec.name == name and spec.source == TARGETS_DIR / f"{name}.json"
    target = spec.tvm_target()
    assert isinstance(target, tvm.target.Target)
    assert target.kind.name == spec.tvm_target_config["kind"]
    if spec.cross_compiler is None and spec.rpc_key is None:
        assert spec.arch == "x86_64"


def test_x86_targets_pin_their_isa():
    assert load_target("x86-avx2").tvm_target().attrs["mcpu"] == "haswell"
    assert "avx512f" in load_target("x86-avx512").cpu_flags


def test_a_path_loads_the_same_spec_as_the_name():
    assert load_target(TARGETS_DIR / "x86-avx2.json") == load_target("x86-avx2")


def test_unknown_name_lists_known_targets():
    with pytest.raises(TargetError, match="x86-avx2") as info:
        load_target("riscv-vector")
    assert "riscv-vector" in str(info.value) and "x86-avx512" in str(info.value)


@pytest.mark.parametrize("content, problem", [
    ("{not json", "cannot read target JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_malformed_file_names_the_file(tmp_path, content, problem):
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(TargetError, match=problem) as info:
        load_target(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("changes, problem", [
    ({"arch": ...}, "missing field.*arch"),
    ({"tvm_targt": {}}, "unknown field.*tvm_targt"),
    ({"runtime": "opencl"}, "'runtime' has the wrong type"),
    ({"arch": "riscv64"}, "arch 'riscv64'"),
    ({"tvm_target": {"kind": "llvm", "mcpus": "haswell"}}, "not a valid TVM target.*mcpus"),
    ({"tvm_target": {"kind": "tpu"}}, "not a valid TVM target"),
    ({"tvm_target": {"kind": "llvm", "mcpu": "haswel"}}, "mcpu 'haswel'"),
    ({"host": {"kind": "llvm", "num-cores": "two"}}, "'host' is not a valid TVM target"),
])
def test_bad_fields_name_the_file_and_the_problem(tmp_path, changes, problem):
    path = write_target(tmp_path, **changes)
    with pytest.raises(TargetError, match=problem) as info:
        load_target(path)
    assert str(path) in str(info.value)


def test_runs_on_host_checks_arch_and_cpu_flags(tmp_path):
    if "avx2" not in host_cpu_flags():
        pytest.skip("this CPU has no AVX2")
    assert load_target("x86-avx2").runs_on_host()
    assert load_target("x86-avx512").runs_on_host() == ("avx512f" in host_cpu_flags())
    lacking = load_target(write_target(tmp_path, cpu_flags=["avx2", "no_such_isa"]))
    assert not lacking.runs_on_host()
    assert local_unavailable_reason(lacking) == "this CPU lacks no_such_isa, which target x86-avx2 needs"
    arm = write_target(tmp_path, arch="aarch64", cpu_flags=[],
                       tvm_target={"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    assert not load_target(arm).runs_on_host()
