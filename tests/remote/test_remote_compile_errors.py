"""`compile --rpc` when the device fails: a clear DeviceError (exit 2), the previous artifact kept,
the new build kept aside unverified. Its own module, so its own board: a test kills it."""

import os
import signal

import pytest

from remote_helpers import compile_tiny, free_port
from tvm_lowrank.artifact import load_artifact
from tvm_lowrank.cli import main
from tvm_lowrank.errors import DeviceError
from tvm_lowrank.remote import RemoteDevice

CLI_MODEL = ["remote_helpers:tiny_model", "--target", "arm-cortex-a72", "--rank", "2",
             "--min-top1-agreement", "0"]


@pytest.fixture
def previous(tmp_path):
    """An artifact already at OUT (built without a board), and its library's bytes."""
    out = tmp_path / "model"
    compile_tiny("arm-cortex-a72", out, rank=1)
    return out, (out / "model.so").read_bytes()


def test_unreachable_tracker_exits_2_keeping_the_previous_artifact(previous, capsys):
    out, library = previous
    address = f"127.0.0.1:{free_port()}"
    assert main(["compile", *CLI_MODEL, "--rpc", address, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"no RPC tracker at {address}" in error and f"{out} is unchanged" in error
    assert (out / "model.so").read_bytes() == library
    unverified = load_artifact(out.with_name("model.unverified"))
    assert unverified.manifest["verification"] is None and unverified.library_path.is_file()
    assert not out.with_name("model.staging").exists()


def test_board_lost_during_verification_is_a_device_error(board, previous, monkeypatch):
    out, library = previous
    (board_pid,) = board["boards"]
    load = RemoteDevice.load

    def load_after_the_board_died(self, *args, **kwargs):
        os.killpg(board_pid, signal.SIGKILL)
        return load(self, *args, **kwargs)

    monkeypatch.setattr(RemoteDevice, "load", load_after_the_board_died)
    with pytest.raises(DeviceError, match=r"(?s)board 'arm-cortex-a72' .* was lost while loading.*"
                                          r"kept unverified at .*model\.unverified"):
        compile_tiny("arm-cortex-a72", out, rpc=board["tracker"])
    assert (out / "model.so").read_bytes() == library
    assert load_artifact(out.with_name("model.unverified")).library_path.is_file()
