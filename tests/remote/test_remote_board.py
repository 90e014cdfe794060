"""A conv model cross-built for Cortex-A72 runs on the emulated board through the tracker."""

import time

import numpy as np
import pytest
import torch

from remote_helpers import TinyConvNet, build_library
from tvm_lowrank.build import load_executable, run_vm
from tvm_lowrank.remote import DeviceError, RemoteModel, connect, tracker_summary
from tvm_lowrank.targets import load_target

HOST_TARGETS = ["x86-avx512", "x86-avx2"]


@pytest.fixture(scope="module")
def model_and_input():
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        expected = model(x).numpy()
    return model, x, expected


@pytest.fixture(scope="module")
def arm_library(model_and_input, tmp_path_factory):
    model, x, _ = model_and_input
    return build_library(model, x, "arm-cortex-a72", tmp_path_factory.mktemp("arm") / "tiny.so")


def test_board_is_listed_under_its_target_key(board):
    summary = tracker_summary(board["tracker"])
    assert [s["key"] for s in summary["server_info"]] == ["server:arm-cortex-a72"]
    assert board["key"] == load_target("arm-cortex-a72").rpc_key


def test_model_on_board_matches_pytorch_and_the_x86_build(board, model_and_input, arm_library, tmp_path):
    model, x, expected = model_and_input
    with connect(board["tracker"], key=board["key"], timeout=60) as device:
        remote = device.load(arm_library)
        assert isinstance(remote, RemoteModel)
        on_board = remote.run(x.numpy())
        seconds = remote.time(x.numpy(), repeat=3, number=2)
    assert on_board.shape == expected.shape and on_board.dtype == np.float32
    np.testing.assert_allclose(on_board, expected, rtol=1e-5, atol=1e-5)
    assert len(seconds) == 3 and all(0 < s < 5 for s in seconds)

    host = next((name for name in HOST_TARGETS if load_target(name).runs_on_host()), None)
    if host is None:
        pytest.skip("no x86 target file runs on this CPU")
    x86 = run_vm(load_executable(build_library(model, x, host, tmp_path / "x86.so")), x.numpy())
    np.testing.assert_allclose(on_board, x86, rtol=1e-5, atol=1e-5)


def test_an_error_raised_on_the_board_is_not_a_device_error(board, arm_library, model_and_input):
    _, x, expected = model_and_input
    with connect(board["tracker"], key=board["key"]) as device:
        remote = device.load(arm_library)
        with pytest.raises(Exception) as info:
            remote.run(np.zeros((1, 3, 9, 9), np.float32))  # the wrong input shape
        assert not isinstance(info.value, DeviceError)
        assert device.alive()
        np.testing.assert_allclose(remote.run(x.numpy()), expected, rtol=1e-5, atol=1e-5)


def test_unknown_key_lists_the_keys_the_tracker_has(board):
    with pytest.raises(DeviceError, match=r"no board with key 'arm-cortex-a53'.*arm-cortex-a72 \(1\)"):
        connect(board["tracker"], key="arm-cortex-a53")


def test_busy_board_times_out_instead_of_waiting(board):
    with connect(board["tracker"], key=board["key"]) as held:
        began = time.monotonic()
        with pytest.raises(DeviceError, match="no free board with key 'arm-cortex-a72'.*all busy"):
            connect(board["tracker"], key=board["key"], timeout=1)
        assert time.monotonic() - began < 10
        assert held.alive()
