"""The build artifact: a directory holding the library, its manifest and the reference data.

Everything `verify` needs travels inside the artifact, so a build can be re-checked (on this machine
or a device) without the source model. A new artifact replaces an old one only once it is complete,
so a failed build never destroys a good one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelLoadError

LIBRARY_FILE = "model.so"
MANIFEST_FILE = "manifest.json"
REFERENCE_FILE = "reference.npz"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ReferenceData:
    """Verification inputs and the outputs of both PyTorch references on them."""

    inputs: np.ndarray  # (num_inputs, *input_shape): each row is one batch-1 input
    original_outputs: np.ndarray
    lowrank_outputs: np.ndarray
    labels: np.ndarray  # labels of the last len(labels) inputs (real data); may be empty

    def save(self, path: Path) -> None:
        np.savez_compressed(path, inputs=self.inputs, original_outputs=self.original_outputs,
                            lowrank_outputs=self.lowrank_outputs, labels=self.labels)

    @classmethod
    def load(cls, path: Path) -> "ReferenceData":
        with np.load(path) as data:
            return cls(data["inputs"], data["original_outputs"], data["lowrank_outputs"], data["labels"])


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: dict

    @property
    def library_path(self) -> Path:
        return self.path / LIBRARY_FILE

    def reference(self) -> ReferenceData:
        return ReferenceData.load(self.path / REFERENCE_FILE)

    def update_manifest(self, **fields) -> None:
        """Merge fields into the manifest on disk (e.g. a new verification result)."""
        self.manifest.update(fields)
        _write_json(self.path / MANIFEST_FILE, self.manifest)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    tmp.replace(path)


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_artifact(out_dir, export_library, manifest: dict, reference: ReferenceData) -> Artifact:
    """Write an artifact atomically: `export_library(path)` writes the library into a staging dir."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        export_library(staging / LIBRARY_FILE)
        reference.save(staging / REFERENCE_FILE)
        manifest = {"format_version": FORMAT_VERSION, **manifest}
        _write_json(staging / MANIFEST_FILE, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Artifact(out_dir, manifest)


def load_artifact(path) -> Artifact:
    """Open an artifact directory, with a clear error when it is missing or incomplete."""
    path = Path(path)
    missing = [name for name in (LIBRARY_FILE, MANIFEST_FILE, REFERENCE_FILE) if not (path / name).is_file()]
    if not path.is_dir() or missing:
        raise ModelLoadError(f"{path} is not a tvm-lowrank artifact (missing: {', '.join(missing) or path})")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{path / MANIFEST_FILE} is corrupt: {error}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(f"{path}: artifact format {manifest.get('format_version')} is not {FORMAT_VERSION}")
    return Artifact(path, manifest)
