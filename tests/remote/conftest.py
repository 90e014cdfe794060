"""Trackers and emulated aarch64 boards for the remote tests, started and stopped per module.

Everything runs on 127.0.0.1 on ports picked free at start, so a user's own tracker on 9190 is
left alone. Tests that need a board skip, naming the missing piece, where qemu, the cross
compiler or the cached board (`scripts/arm_board.py setup`) are not there.
"""

import shutil

import pytest

from remote_helpers import ARM_TARGET, arm_board, board_missing, free_port
from tvm_lowrank.targets import load_target


def _start(key: str | None):
    """A tracker on a free port, with one board registered under `key` (None: tracker only)."""
    if key is not None and board_missing():
        pytest.skip(board_missing())
    port = free_port()
    try:
        info = arm_board.start(port=port, key=key or ARM_TARGET, boards=0 if key is None else 1,
                               board_port=free_port())
        yield info
    finally:
        arm_board.stop(port)
        shutil.rmtree(arm_board.run_dir(port), ignore_errors=True)


@pytest.fixture(scope="module")
def tracker_only():
    """{"tracker": "127.0.0.1:PORT", ...}: a bare tracker with no boards."""
    yield from _start(None)


@pytest.fixture(scope="module")
def board():
    """{"tracker", "key", "boards": {pid: log}}: a tracker with one emulated Cortex-A72 board."""
    yield from _start(load_target(ARM_TARGET).rpc_key)
