"""Which boards on an RPC tracker are emulated stand-ins, so that their timings get labelled.

A board cannot tell over TVM's RPC that it is emulated: the stock server exposes no such fact, and
a qemu user-mode process reads the host's /proc. So whoever starts an emulated board records it:
``scripts/arm_board.py start`` writes its boards' addresses to
``$TVM_LOWRANK_CACHE/arm64-run/<tracker port>/emulated.json`` and ``stop`` removes them. Only a
tracker on this machine (loopback) can have such boards; any board not recorded (a real board on
the same tracker) is real hardware.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

EMULATED_LABEL = "emulated — not representative"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cache_root() -> Path:
    """The project's cache ($TVM_LOWRANK_CACHE, default <tmp>/tvm-lowrank-cache), as arm_board.py."""
    env = os.environ.get("TVM_LOWRANK_CACHE")
    return Path(env) if env else Path(tempfile.gettempdir()) / "tvm-lowrank-cache"


def registry_path(tracker_port: int) -> Path:
    return cache_root() / "arm64-run" / str(tracker_port) / "emulated.json"


def record_emulated_boards(tracker_port: int, boards: list[dict[str, Any]]) -> None:
    """Record emulated boards (each {"addr": "HOST:PORT", "key", "emulator"}) for a tracker, kept
    with the ones recorded before (a second `start` adds boards)."""
    path = registry_path(tracker_port)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = {entry["addr"]: entry for entry in _read(path)}
    entries.update({entry["addr"]: entry for entry in boards})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(entries.values(), key=lambda e: e["addr"]), indent=1) + "\n")
    tmp.replace(path)


def forget_emulated_boards(tracker_port: int) -> None:
    registry_path(tracker_port).unlink(missing_ok=True)


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [e for e in entries if isinstance(e, dict) and "addr" in e] if isinstance(entries, list) else []


def emulated_boards(tracker: str) -> dict[str, dict[str, Any]]:
    """Emulated boards recorded for `tracker` ("HOST:PORT"), by board address."""
    host, _, port = tracker.rpartition(":")
    if host not in _LOOPBACK or not port.isdigit():
        return {}
    return {entry["addr"]: entry for entry in _read(registry_path(int(port)))}


def key_emulation(tracker: str, key: str, summary: dict[str, Any]) -> str | None:
    """What emulates the boards registered under `key` (from the tracker's `summary`), or None
    when they are all real. When real and emulated boards share a key, a session may land on
    either (TVM does not say which), so the key counts as emulated."""
    recorded = emulated_boards(tracker)
    emulators = set()
    for server in summary.get("server_info", []):
        if server.get("key") != f"server:{key}":
            continue
        host, port = server["addr"][0], server["addr"][1]
        entry = recorded.get(f"{host}:{port}")
        if entry is not None:
            emulators.add(entry.get("emulator", "emulator"))
    return ", ".join(sorted(emulators)) or None
