"""Finished cells on disk, so that re-running a benchmark measures only what is missing.

A cell's key hashes everything its numbers depend on: the model's content (checkpoint or file
bytes, or the weights of a `module:function` model), the method, the rank policy, the target file,
the tuning database's bytes (or "none") and the measurement settings. Changing any of them makes
a new key, so a stale result is never reused; a failed cell is not stored, so it is tried again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .grid import Cell, ModelSpec

CACHE_DIR = "cache"


def _sha256_file(path: Path) -> str:
    from ..frontend import _file_sha256  # pylint: disable=protected-access

    return _file_sha256(path)


def model_fingerprint(model: ModelSpec) -> str:
    """The content hash of the model the cell compiles."""
    if model.bundled is not None:
        from ..models import checkpoint_path

        path = checkpoint_path(model.bundled)
        return f"{model.bundled}:{_sha256_file(path) if path.is_file() else 'untrained'}"
    path = Path(model.spec)
    if path.suffix.lower() in (".onnx", ".pt2") and path.is_file():
        return _sha256_file(path)
    from ..frontend import load_model  # module:function: the weights it returns

    return load_model(model.spec).sha256


def database_fingerprint(database_dir: Path | None) -> str:
    """"none", or a hash of the database's files (a database tuned further gives a new key)."""
    if database_dir is None:
        return "none"
    from ..database import RECORD_FILE, WORKLOAD_FILE

    digest = hashlib.sha256()
    for name in (WORKLOAD_FILE, RECORD_FILE):
        path = Path(database_dir) / name
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()


def cell_key(cell: Cell, model_hash: str, target_hash: str, database_hash: str, settings: dict) -> str:
    """A short hex key of the cell and everything its measurement depends on."""
    payload = json.dumps({"model": model_hash, "method": cell.method, "rank": cell.rank,
                          "target": [cell.target, target_hash], "database": database_hash,
                          "settings": settings}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


class CellCache:
    """`<out>/cache/<key>.json`: one finished cell's result row each."""

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / CACHE_DIR

    def get(self, key: str) -> dict | None:
        try:
            return json.loads((self.path / f"{key}.json").read_text())
        except (OSError, ValueError):  # missing, or a write cut short: measure again
            return None

    def put(self, key: str, row: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f"{key}.json.tmp"
        tmp.write_text(json.dumps(row, indent=1, sort_keys=True) + "\n")
        tmp.replace(self.path / f"{key}.json")
