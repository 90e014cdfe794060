"""A board that dies mid-run is a DeviceError, and the tracker stops offering it.

Its own module, so its own board: this test kills it.
"""

import os
import signal
import threading
import time

import pytest
import torch

from remote_helpers import TinyConvNet, build_library
from tvm_lowrank.remote import DeviceError, connect


def test_board_killed_mid_run_is_a_device_error(board, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    library = build_library(TinyConvNet(channels=32), x, "arm-cortex-a72", tmp_path / "lost.so")
    (board_pid,) = board["boards"]
    with connect(board["tracker"], key=board["key"]) as device:
        remote = device.load(library)
        remote.run(x.numpy())
        killer = threading.Timer(1.0, os.killpg, (board_pid, signal.SIGKILL))
        killer.start()
        began = time.monotonic()
        try:
            with pytest.raises(DeviceError, match="board 'arm-cortex-a72' .* was lost while timing lost.so"):
                remote.time(x.numpy(), repeat=100, number=10)  # minutes if the board lived
        finally:
            killer.cancel()
        assert time.monotonic() - began < 30
        assert not device.alive()
    with pytest.raises(DeviceError, match="no board with key 'arm-cortex-a72'"):
        connect(board["tracker"], key=board["key"], timeout=5)
