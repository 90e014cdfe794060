"""Which boards count as emulated (fast: no qemu): the record arm_board.py keeps per tracker, and
how a key's boards are labelled from a tracker summary."""

import pytest

from tvm_lowrank.boards import (emulated_boards, forget_emulated_boards, key_emulation,
                                record_emulated_boards, registry_path)
from tvm_lowrank.cli import main
from tvm_lowrank.targets import load_target

QEMU = "qemu-aarch64 user mode (cortex-a72)"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TVM_LOWRANK_CACHE", str(tmp_path))


def summary(*boards):
    """A tracker summary listing boards as (key, host, port)."""
    return {"queue_info": {}, "server_info": [{"key": f"server:{key}", "addr": [host, port]}
                                              for key, host, port in boards]}


def test_recorded_boards_are_emulated_and_others_real():
    record_emulated_boards(9190, [{"addr": "127.0.0.1:9091", "key": "arm-cortex-a72", "emulator": QEMU}])
    registered = summary(("arm-cortex-a72", "127.0.0.1", 9091), ("mali-g76", "127.0.0.1", 9092))
    assert key_emulation("127.0.0.1:9190", "arm-cortex-a72", registered) == QEMU
    assert key_emulation("127.0.0.1:9190", "mali-g76", registered) is None  # a real board, same tracker
    assert key_emulation("127.0.0.1:9191", "arm-cortex-a72", registered) is None  # another tracker


def test_a_key_shared_by_real_and_emulated_boards_counts_as_emulated():
    record_emulated_boards(9190, [{"addr": "127.0.0.1:9091", "key": "arm-cortex-a72", "emulator": QEMU}])
    mixed = summary(("arm-cortex-a72", "127.0.0.1", 9091), ("arm-cortex-a72", "10.0.0.7", 9090))
    assert key_emulation("127.0.0.1:9190", "arm-cortex-a72", mixed) == QEMU


def test_records_accumulate_and_are_forgotten_on_stop():
    record_emulated_boards(9190, [{"addr": "127.0.0.1:9091", "key": "a", "emulator": QEMU}])
    record_emulated_boards(9190, [{"addr": "127.0.0.1:9092", "key": "b", "emulator": QEMU}])
    assert set(emulated_boards("127.0.0.1:9190")) == {"127.0.0.1:9091", "127.0.0.1:9092"}
    forget_emulated_boards(9190)
    assert emulated_boards("127.0.0.1:9190") == {} and not registry_path(9190).exists()


def test_only_a_tracker_on_this_machine_can_have_recorded_boards():
    record_emulated_boards(9190, [{"addr": "10.0.0.7:9091", "key": "a", "emulator": QEMU}])
    assert emulated_boards("10.0.0.7:9190") == {}
    registry_path(9190).write_text("{not json")
    assert emulated_boards("127.0.0.1:9190") == {}  # a damaged record: boards count as real


def test_targets_command_says_where_each_target_runs(capsys):
    assert main(["targets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["arm-cortex-a72"].endswith("[runs on a board: --rpc HOST:PORT --key arm-cortex-a72]")
    assert lines["mali-g76"].endswith("[runs on a board: --rpc HOST:PORT --key mali-g76]")
    if load_target("x86-avx2").runs_on_host():
        assert lines["x86-avx2"].endswith("[runs here]")
