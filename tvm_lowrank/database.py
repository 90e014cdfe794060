"""Tuning databases: one MetaSchedule JSONDatabase per target in ``schedules/<target-name>/``.

A database is two append-only files of JSON lines, ``database_workload.json`` (one fused PrimFunc
per line, as MetaSchedule keys it) and ``database_tuning_record.json`` (``[workload index,
[trace, run seconds, target, argument info]]`` per measured schedule). Every model tuned for a
target appends to the same files, so a workload that two models share is tuned once.

TVM reads these files in C++ and reports a damaged line as "parallel_for_dynamic error with
Unexpected EOF", naming neither file nor line; and it does not look at a record's target at all,
so another target's schedules would be applied silently. `check_database` reads both files first
and raises a `TuningDatabaseError` naming the file and line; nothing here ever rewrites them.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TuningDatabaseError
from .targets import TargetSpec

SCHEDULES_DIR = Path(__file__).resolve().parents[1] / "schedules"
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
# Target attributes that decide what code a schedule is for; "num-cores" and "tag" are not among
# them (MetaSchedule needs num-cores while tuning, the build does not).
_IDENTITY_KEYS = ("kind", "mtriple", "mcpu", "mattr", "device", "arch", "model")


def default_database_dir(target: TargetSpec) -> Path:
    """``schedules/<target-name>/`` in the repository: the database shipped for `target`."""
    return SCHEDULES_DIR / target.name


def shipped_database(target: TargetSpec) -> Path | None:
    """`default_database_dir(target)` when it holds tuning records, else None."""
    path = default_database_dir(target)
    records = path / RECORD_FILE
    return path if records.is_file() and records.stat().st_size > 0 else None


@dataclass(frozen=True)
class DatabaseInfo:
    """What `check_database` found: `records_per_workload[i]` counts the records of workload i
    (failed measurements included: MetaSchedule stores them with 1e10 s)."""

    path: Path
    records_per_workload: tuple[int, ...]

    @property
    def workloads(self) -> int:
        return len(self.records_per_workload)

    @property
    def records(self) -> int:
        return sum(self.records_per_workload)


def _plain(value: Any) -> Any:
    """A target attribute as plain Python (TVM's export gives FFI strings and arrays)."""
    if not value:
        return None
    if isinstance(value, (str, int, float)):
        return value if not isinstance(value, str) else str(value)
    return tuple(str(item) for item in value)


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    return {key: _plain(config.get(key)) for key in _IDENTITY_KEYS}


def target_identity(target: TargetSpec) -> dict[str, Any]:
    """The attributes a record's target must share with `target` (see _IDENTITY_KEYS)."""
    return _identity(dict(target.tvm_target().export()))


def _lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-blank line; a damaged line raises TuningDatabaseError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TuningDatabaseError(f"tuning database file {path} cannot be read: {exc}") from None
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            last = number == len(lines) and not data.endswith(b"\n")
            hint = " (the file ends mid-line: truncated?)" if last else ""
            raise TuningDatabaseError(f"tuning database file {path}, line {number}: not JSON{hint}: "
                                      f"{exc}") from None


def _bad(path: Path, number: int, what: str) -> TuningDatabaseError:
    return TuningDatabaseError(f"tuning database file {path}, line {number}: {what}")


def check_database(path: str | Path, target: TargetSpec | None = None) -> DatabaseInfo:
    """Validate the database in directory `path` (missing files: an empty database).

    Raises FileNotFoundError when `path` is not a directory, and TuningDatabaseError for a line
    that is not JSON, a truncated file, a record of an unknown workload, or (with `target`) a
    record measured for another target.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tuning database directory {path} does not exist")
    workload_file, record_file = path / WORKLOAD_FILE, path / RECORD_FILE
    counts: list[int] = []
    if workload_file.exists():
        for number, line in _lines(workload_file):
            if not (isinstance(line, list) and len(line) == 2 and all(isinstance(x, str) for x in line)):
                raise _bad(workload_file, number, "not a workload entry [hash, module]")
            counts.append(0)
    if not record_file.exists():
        return DatabaseInfo(path, tuple(counts))
    expected = target_identity(target) if target is not None else None
    for number, line in _lines(record_file):
        if not (isinstance(line, list) and len(line) == 2 and isinstance(line[0], int)
                and isinstance(line[1], list) and len(line[1]) == 4 and isinstance(line[1][2], dict)):
            raise _bad(record_file, number, "not a tuning record [workload, [trace, seconds, target, args]]")
        index, (_, run_secs, record_target, _) = line
        if not 0 <= index < len(counts):
            raise _bad(record_file, number, f"refers to workload {index}, but {workload_file} has "
                                            f"{len(counts)} workload(s)")
        if run_secs is not None and not (isinstance(run_secs, list)
                                         and all(isinstance(s, (int, float)) for s in run_secs)):
            raise _bad(record_file, number, f"run seconds {run_secs!r} are not a list of numbers")
        if expected is not None:
            found = _identity(record_target)
            if found != expected:
                diff = ", ".join(f"{key} {found[key]!r} (expected {expected[key]!r})"
                                 for key in _IDENTITY_KEYS if found[key] != expected[key])
                raise _bad(record_file, number, f"record of another target than {target.name}: {diff}")
        counts[index] += 1
    return DatabaseInfo(path, tuple(counts))


def open_database(path: str | Path, target: TargetSpec | None = None):
    """The checked database at `path` as a MetaSchedule JSONDatabase (files created if missing)."""
    from tvm.s_tir import meta_schedule as ms

    check_database(path, target)
    try:
        return ms.database.JSONDatabase(work_dir=str(path), module_equality="structural")
    except Exception as exc:  # noqa: BLE001 - TVM reports a bad workload/trace without the file
        raise TuningDatabaseError(f"tuning database {path} ({WORKLOAD_FILE}, {RECORD_FILE}) cannot be "
                                  f"loaded by MetaSchedule: {str(exc).strip().splitlines()[-1]}") from None


@contextmanager
def database_lock(path: str | Path) -> Iterator[None]:
    """Hold the database at `path` for one writer: two tuners appending at once would number
    their new workloads alike."""
    path = Path(path)
    with open(path / WORKLOAD_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TuningDatabaseError(f"tuning database {path} is being written by another "
                                      f"`tvm-lowrank tune`; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def merge_database(source: str | Path, destination: str | Path, target: TargetSpec) -> int:
    """Append to `destination` every record of `source` it lacks (same workload and trace); both
    are checked for `target` first. Returns the number of records added.

    How databases tuned on different machines or runs for one target are combined; nothing in
    `destination` is rewritten.
    """
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    source_db = open_database(source, target)
    Path(destination).mkdir(parents=True, exist_ok=True)
    with database_lock(destination):
        destination_db = open_database(destination, target)
        added = 0
        known: dict[int, set[str]] = {}  # structural hash of a workload -> the traces it has
        for record in source_db.get_all_tuning_records():
            workload = destination_db.commit_workload(record.workload.mod)
            traces = known.setdefault(tvm_ffi.structural_hash(workload.mod), {
                str(r.trace.as_json(False)) for r in destination_db.get_top_k(workload, 1 << 30)})
            key = str(record.trace.as_json(False))
            if key in traces:
                continue
            destination_db.commit_tuning_record(ms.database.TuningRecord(
                record.trace, workload, record.run_secs, record.target, record.args_info))
            traces.add(key)
            added += 1
    return added
