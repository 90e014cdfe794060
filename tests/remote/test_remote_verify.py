"""A low-rank model compiled for Cortex-A72 through the API, verified and timed on the emulated
board through the tracker (`verify --rpc`), and its results equal to the x86 build's."""

import json

import numpy as np
import pytest

from remote_helpers import compile_tiny
from tvm_lowrank.api import time_artifact, verify_artifact
from tvm_lowrank.artifact import REFERENCE_FILE, load_artifact
from tvm_lowrank.boards import EMULATED_LABEL
from tvm_lowrank.cli import main
from tvm_lowrank.errors import DeviceError, TargetError, VerificationError
from tvm_lowrank.remote import connect
from tvm_lowrank.runner import open_artifact
from tvm_lowrank.targets import load_target

HOST_TARGETS = ["x86-avx512", "x86-avx2"]


@pytest.fixture(scope="module")
def arm_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("arm") / "tiny"
    result = compile_tiny("arm-cortex-a72", out)
    assert result.verification is None  # no --rpc: built and exported, not run
    assert "--rpc" in result.artifact.manifest["verification"]["skipped"]
    assert any(row.action == "decomposed" for row in result.rows)  # the rewrite really happened
    return out


def test_verify_on_the_board_records_where_it_ran(board, arm_artifact):
    result = verify_artifact(arm_artifact, rpc=board["tracker"], key=board["key"])
    assert result.passed and result.vs_lowrank_reference.max_rel_error < 1e-5
    manifest = load_artifact(arm_artifact).manifest
    ran_on = manifest["verification"]["ran_on"]
    assert ran_on["where"] == "rpc" and ran_on["key"] == "arm-cortex-a72" and ran_on["device"] == "cpu"
    assert ran_on["tracker"] == board["tracker"] and "qemu-aarch64" in ran_on["emulated"]
    assert manifest["verified_on"]["rpc:arm-cortex-a72"]["passed"]


def test_board_results_equal_the_x86_build_of_the_same_model(board, arm_artifact, tmp_path):
    host = next((name for name in HOST_TARGETS if load_target(name).runs_on_host()), None)
    if host is None:
        pytest.skip("no x86 target file runs on this CPU")
    x86 = compile_tiny(host, tmp_path / "x86").artifact
    inputs = load_artifact(arm_artifact).reference().inputs
    np.testing.assert_array_equal(inputs, x86.reference().inputs)
    with open_artifact(load_artifact(arm_artifact), rpc=board["tracker"]) as runner:  # key: the target's
        on_board = np.stack([runner.run(x) for x in inputs])
    with open_artifact(x86) as runner:
        assert runner.placement.where == "local" and runner.placement.emulated is None
        here = np.stack([runner.run(x) for x in inputs])
    np.testing.assert_allclose(on_board, here, rtol=1e-5, atol=1e-6)


def test_board_timings_are_labelled_emulated(board, arm_artifact):
    timing = time_artifact(arm_artifact, rpc=board["tracker"], repeat=3, number=2)
    assert timing.emulated and len(timing.seconds) == 3
    low, high = timing.spread_s
    assert 0 < low <= timing.median_s <= high < 5
    assert EMULATED_LABEL in timing.summary()


def test_cli_verify_rpc_prints_agreement_and_labelled_timings(board, arm_artifact, capsys):
    assert main(["verify", str(arm_artifact), "--rpc", board["tracker"], "--key", board["key"],
                 "--repeat", "2", "--number", "1"]) == 0
    printed = capsys.readouterr().out
    assert "vs PyTorch low-rank reference" in printed and "OK" in printed
    assert "timing: median" in printed and EMULATED_LABEL in printed


def test_mismatch_on_the_board_fails_and_is_recorded(board, arm_artifact, tmp_path, capsys):
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for item in load_artifact(arm_artifact).path.iterdir():
        (tampered / item.name).write_bytes(item.read_bytes())
    reference = dict(np.load(tampered / REFERENCE_FILE))
    reference["lowrank_outputs"] = reference["lowrank_outputs"] * 1.01
    np.savez(tampered / REFERENCE_FILE, **reference)
    with pytest.raises(VerificationError, match="compiler changed the numerics"):
        verify_artifact(tampered, rpc=board["tracker"])
    record = json.loads((tampered / "manifest.json").read_text())["verification"]
    assert record["passed"] is False and record["ran_on"]["where"] == "rpc"
    assert main(["verify", str(tampered), "--rpc", board["tracker"], "--repeat", "0"]) == 2
    assert "compiler changed the numerics" in capsys.readouterr().err


def test_missing_key_exits_2_and_keeps_the_artifact(board, arm_artifact, capsys):
    before = (arm_artifact / "model.so").read_bytes()
    assert main(["verify", str(arm_artifact), "--rpc", board["tracker"], "--key", "mali-g76"]) == 2
    assert "no board with key 'mali-g76'" in capsys.readouterr().err
    assert (arm_artifact / "model.so").read_bytes() == before


def test_board_artifact_without_rpc_says_how_to_run_it(arm_artifact):
    with pytest.raises(TargetError, match=r"built for aarch64.*--rpc HOST:PORT --key arm-cortex-a72"):
        verify_artifact(arm_artifact)


def test_opencl_build_on_a_board_without_opencl_is_a_device_error(board, tmp_path, capsys):
    mali = compile_tiny("mali-g76", tmp_path / "mali").artifact.path
    with pytest.raises(DeviceError, match="board 'arm-cortex-a72' .* has no opencl device for model.so"):
        verify_artifact(mali, rpc=board["tracker"], key=board["key"])
    assert main(["verify", str(mali), "--rpc", board["tracker"], "--key", board["key"]]) == 2
    assert "has no opencl device" in capsys.readouterr().err


def test_a_library_the_board_cannot_load_is_a_device_error(board, tmp_path):
    x86 = compile_tiny("x86-avx2", tmp_path / "x86", verify=False).artifact
    with connect(board["tracker"], key=board["key"]) as device:
        with pytest.raises(DeviceError, match="board 'arm-cortex-a72' .* cannot load model.so"):
            device.load(x86.library_path)
        assert device.alive()


def test_compile_rpc_failing_on_the_board_keeps_the_previous_artifact(board, arm_artifact, tmp_path):
    out = tmp_path / "model"
    previous = compile_tiny("arm-cortex-a72", out, rank=1).artifact.library_path.read_bytes()
    with pytest.raises(VerificationError, match="top-1 agreement"):  # 1.01 cannot be reached
        compile_tiny("arm-cortex-a72", out, rpc=board["tracker"], min_top1_agreement=1.01)
    assert (out / "model.so").read_bytes() == previous
    failed = load_artifact(out.with_name("model.failed")).manifest["verification"]
    assert failed["passed"] is False and failed["compiler_exact"] and failed["ran_on"]["where"] == "rpc"
