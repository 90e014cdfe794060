"""Run exported libraries on boards reached through TVM's RPC tracker (the device farm).

A board is anything registered on a ``tvm.exec.rpc_tracker`` under a key (a real aarch64 board, a
Mali board, or the emulated one of ``scripts/arm_board.py``); a target file's ``rpc_key`` names it.
The only channel is TVM's own RPC: ``connect_tracker(...).request(key)``, ``upload``,
``load_module``, the remote Relax VM and its remote ``time_evaluator``.

TVM's own failure modes are unhelpful here: ``connect_tracker`` retries a refused connection for a
minute, a request for a key no board has waits forever, and a board that dies mid-call surfaces as
``Check failed: code == RPCCode::kReturn``. Each becomes a `DeviceError` naming the tracker, the
key and what was being done.
"""

from __future__ import annotations

import gc
import socket
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import relax, rpc

from .boards import key_emulation
from .build import run_vm, time_vm
from .errors import DeviceError, LowRankError

DEFAULT_TRACKER = "127.0.0.1:9190"


def parse_tracker(tracker: str) -> tuple[str, int]:
    """Split "HOST:PORT" (the port is required)."""
    host, sep, port = tracker.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DeviceError(f"tracker address {tracker!r} is not HOST:PORT")
    return host, int(port)


def tracker_summary(tracker: str = DEFAULT_TRACKER, timeout: float = 5.0) -> dict[str, Any]:
    """The tracker's summary: {"queue_info": {key: {"free", "pending"}}, "server_info": [...]}."""
    session = _connect_tracker(tracker, timeout)
    try:
        return session.summary()
    finally:
        session.close()


def board_keys(summary: dict[str, Any]) -> dict[str, int]:
    """Registered boards per key, from a tracker summary."""
    keys: dict[str, int] = {}
    for server in summary.get("server_info", []):
        key = server.get("key", "").partition("server:")[2]
        if key:
            keys[key] = keys.get(key, 0) + 1
    return keys


def _connect_tracker(tracker: str, timeout: float) -> rpc.TrackerSession:
    """TVM's tracker session, failing within `timeout` (at most 5 s) where TVM would not.

    TVM retries a refused port for 60 s, and its handshake waits forever on a listener that is
    not a tracker; the probe and a default socket timeout for the handshake bound both.
    """
    host, port = parse_tracker(tracker)
    wait = min(timeout, 5.0)
    try:
        with socket.create_connection((host, port), timeout=wait):
            pass
    except OSError as exc:
        raise DeviceError(f"no RPC tracker at {host}:{port} ({exc.strerror or exc}); start one with "
                          f"`python -m tvm.exec.rpc_tracker` or `scripts/arm_board.py start`") from None
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(wait)  # the tracker session's socket is created inside TVM
    try:
        return rpc.connect_tracker(host, port)
    except (RuntimeError, OSError) as exc:
        raise DeviceError(f"{host}:{port} does not answer as an RPC tracker: {exc}") from None
    finally:
        socket.setdefaulttimeout(previous)


def connect(tracker: str = DEFAULT_TRACKER, key: str = "arm-cortex-a72", timeout: float = 60.0,
            session_timeout: float = 0) -> RemoteDevice:
    """A session on a free board registered on `tracker` with `key`.

    `timeout` bounds the wait for a free board (all boards of the key may be busy); a key that no
    board has fails at once, listing the keys the tracker does have. `session_timeout` (seconds,
    0: none) lets the board end a session that runs longer. The device's `emulated` says what
    stands in for the real board, when the key's boards are emulated (`tvm_lowrank.boards`).
    """
    tracker_session = _connect_tracker(tracker, timeout)
    try:
        summary = tracker_session.summary()
        keys = board_keys(summary)
        if key not in keys:
            known = ", ".join(f"{name} ({count})" for name, count in sorted(keys.items()))
            raise DeviceError(f"no board with key {key!r} on the RPC tracker at {tracker}; "
                              f"it has {known or 'no boards registered'}")
        if summary["queue_info"].get(key, {}).get("free", 1) == 0:
            # A session lives until its last remote handle goes; handles kept by an exception's
            # traceback cycle would hold a board of ours until the garbage collector runs.
            gc.collect()
        # The tracker queues a request until a board is free; bound that wait on its socket.
        tracker_session._sock.settimeout(timeout)  # pylint: disable=protected-access
        try:
            session = tracker_session.request(key, priority=1, session_timeout=session_timeout,
                                              max_retry=1)
        except RuntimeError as exc:
            if "timed out" in str(exc):
                raise DeviceError(f"no free board with key {key!r} on {tracker} within {timeout:g} s "
                                  f"({keys[key]} registered, all busy)") from None
            raise DeviceError(f"board with key {key!r} on {tracker} refused the session: {exc}") from None
    finally:
        tracker_session.close()
    return RemoteDevice(session, tracker, key, emulated=key_emulation(tracker, key, summary))


class RemoteDevice:
    """One RPC session on a board: upload and load libraries, then run or time them there."""

    def __init__(self, session: rpc.RPCSession, tracker: str, key: str, emulated: str | None = None):
        self.session = session
        self.tracker = tracker
        self.key = key
        self.emulated = emulated  # what emulates the board (e.g. "qemu-aarch64 cortex-a72"), or None
        self._models: weakref.WeakSet[RemoteModel] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"RemoteDevice(key={self.key!r}, tracker={self.tracker!r})"

    def __enter__(self) -> RemoteDevice:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Drop this side's handles (the session's and its models'): the board is free once no
        remote handle is left (TVM has no explicit close; a session ends with its last handle)."""
        for model in list(self._models):
            model.release()
        self.session = None

    def _session(self) -> rpc.RPCSession:
        if self.session is None:
            raise DeviceError(f"the session on board {self.key!r} ({self.tracker}) is closed")
        return self.session

    def device(self, kind: str = "cpu", index: int = 0) -> tvm.runtime.Device:
        """A device on the board ("cpu", "opencl", ...), for tensors and the VM."""
        return self._session().device(kind, index)

    def load(self, library_path: str | Path, device_kind: str = "cpu") -> RemoteModel:
        """Upload an exported library (built for this board's architecture) and load it in a VM
        on the board's `device_kind` device ("cpu"; "opencl" for a Mali build)."""
        path = Path(library_path)
        if not path.is_file():
            raise FileNotFoundError(f"no exported library at {path}")
        session = self._session()
        with self.guard(f"loading {path.name}"):
            remote_device = session.device(device_kind, 0)
            if device_kind != "cpu" and not remote_device.exist:
                raise DeviceError(f"board {self.key!r} ({self.tracker}) has no {device_kind} device for "
                                  f"{path.name}: its RPC server needs TVM's {device_kind} runtime loaded "
                                  f"(e.g. `--load-library` our OpenCL runtime) and a device")
            session.upload(str(path), target=path.name)
            try:
                module = session.load_module(path.name)
            except RuntimeError as exc:  # a board that answers but cannot load it (arch, runtime)
                if not self.alive():
                    raise
                raise DeviceError(f"board {self.key!r} ({self.tracker}) cannot load {path.name}: "
                                  f"{str(exc).strip().splitlines()[-1]}") from None
            vm = relax.VirtualMachine(module, remote_device)
        model = RemoteModel(self, vm, remote_device, path.name)
        self._models.add(model)
        return model

    def alive(self) -> bool:
        """Whether the board still answers on this session (one round trip)."""
        if self.session is None:
            return False
        try:
            # A real round trip (a CPU device's `exist` is answered on this side); every TVM RPC
            # server has its upload function.
            self.session.get_function("tvm.rpc.server.upload")
        except Exception:  # noqa: BLE001 - any failure of the round trip means "not alive"
            return False
        return True

    @contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """Turn a lost board into a DeviceError saying what was being done.

        An error raised by the board itself (bad input, failing kernel) leaves the session
        answering and passes through as TVM raised it.
        """
        try:
            yield
        except (RuntimeError, OSError) as exc:
            if isinstance(exc, LowRankError) or self.alive():
                raise
            raise DeviceError(f"board {self.key!r} (tracker {self.tracker}) was lost while {doing}: "
                              f"{str(exc).strip().splitlines()[-1]}") from exc


class RemoteModel:
    """A library loaded in a Relax VM on a board; inputs and outputs are numpy arrays here."""

    def __init__(self, board: RemoteDevice, vm: relax.VirtualMachine,
                 device: tvm.runtime.Device, name: str):
        self.board, self.vm, self.device, self.name = board, vm, device, name

    def __repr__(self) -> str:
        return f"RemoteModel({self.name!r} on {self.board.key!r})"

    def release(self) -> None:
        """Drop the remote VM (done for every model by RemoteDevice.close)."""
        self.vm = self.device = None

    def _vm(self) -> relax.VirtualMachine:
        if self.vm is None:
            raise DeviceError(f"{self.name} on board {self.board.key!r} was released (its session is closed)")
        return self.vm

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run "main" on the board (stateful VM calls: a returned tuple is unusable over RPC)."""
        vm = self._vm()
        with self.board.guard(f"running {self.name}"):
            return run_vm(vm, x, self.device)

    def time(self, x: np.ndarray, repeat: int = 10, number: int = 10) -> list[float]:
        """Seconds per run of "main", timed on the board by TVM's remote time_evaluator."""
        vm = self._vm()
        with self.board.guard(f"timing {self.name}"):
            return time_vm(vm, x, repeat=repeat, number=number, device=self.device)
