"""Connection errors that need no board (fast), and the aarch64 target files' cross build."""

import socket
import time

import pytest
import torch

from remote_helpers import TinyConvNet, build_library, free_port, skip_without_cross_compiler
from tvm_lowrank.errors import LowRankError
from tvm_lowrank.remote import DeviceError, connect, parse_tracker
from tvm_lowrank.targets import load_target

ARM_TARGETS = ["arm-cortex-a53", "arm-cortex-a72", "arm-cortex-a76"]


def test_unreachable_tracker_fails_fast_naming_it():
    port = free_port()  # bound then released: nothing listens there
    began = time.monotonic()
    with pytest.raises(DeviceError, match=f"no RPC tracker at 127.0.0.1:{port}"):
        connect(f"127.0.0.1:{port}", key="arm-cortex-a72", timeout=30)
    assert time.monotonic() - began < 5  # TVM's own connect_tracker retries for 60 s
    assert issubclass(DeviceError, LowRankError)


def test_a_listener_that_is_no_tracker_fails_within_the_timeout():
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = "127.0.0.1:%d" % listener.getsockname()[1]
        began = time.monotonic()
        with pytest.raises(DeviceError, match=f"{address} does not answer as an RPC tracker"):
            connect(address, key="arm-cortex-a72", timeout=1)
        assert time.monotonic() - began < 5


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:", ":9190", "host:port"])
def test_malformed_tracker_address(address):
    with pytest.raises(DeviceError, match="is not HOST:PORT"):
        parse_tracker(address)


def test_unknown_key_fails_fast_naming_tracker_and_key(tracker_only):
    began = time.monotonic()
    with pytest.raises(DeviceError) as info:
        connect(tracker_only["tracker"], key="no-such-board", timeout=30)
    assert time.monotonic() - began < 5  # TVM's own request would wait for such a board forever
    message = str(info.value)
    assert "'no-such-board'" in message and tracker_only["tracker"] in message
    assert "no boards registered" in message


@pytest.mark.parametrize("name", ARM_TARGETS)
def test_arm_target_files_name_their_board(name):
    spec = load_target(name)
    assert spec.arch == "aarch64" and spec.rpc_key == name and not spec.runs_on_host()
    assert spec.cross_compiler == "aarch64-linux-gnu-g++"
    target = spec.tvm_target()
    assert target.attrs["mtriple"] == "aarch64-linux-gnu" and target.attrs["mcpu"] == name[4:]
    assert "+neon" in spec.tvm_target_config["mattr"]
    assert ("+dotprod" in spec.tvm_target_config["mattr"]) == (name == "arm-cortex-a76")


@pytest.mark.parametrize("name", ARM_TARGETS)
def test_cross_build_is_an_aarch64_shared_library(name, tmp_path):
    skip_without_cross_compiler(name)
    torch.manual_seed(0)
    path = build_library(TinyConvNet(), torch.randn(1, 3, 8, 8), name, tmp_path / f"{name}.so")
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[16] == 3  # a shared object
    assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
