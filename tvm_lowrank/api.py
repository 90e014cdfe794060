"""`compile_model` and `verify_artifact`: the Python API behind `tvm-lowrank compile` / `verify`.

compile = load (torch.export or ONNX) -> Relax -> our conv2d -> 1-D chain pass -> build for the
target -> artifact (library, manifest, reference data) -> verification against both PyTorch
references. The artifact only replaces an earlier one after it verified.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .artifact import Artifact, ReferenceData, load_artifact, write_artifact
from .decompose import load_rank_file, parse_rank_policy
from .errors import DeviceError, OutdatedDatabaseWarning, VerificationError
from .report import LayerRow, format_table, rows_from_records, totals
from .verify import VerificationResult, compare

DENSE = "dense"  # the method name that compiles the model as it is (no rewrite)
FASHION_MNIST_SHAPE = (1, 1, 28, 28)


@dataclass
class CompileResult:
    artifact: Artifact
    rows: list[LayerRow]
    verification: VerificationResult | None
    records: list  # the pass's LayerRecords (chains included), e.g. to rebuild the PyTorch reference

    @property
    def report(self) -> str:
        return format_table(self.rows)


def _rank_policy(rank, rank_file):
    if rank_file is not None:
        return load_rank_file(rank_file)
    return parse_rank_policy(str(rank)) if isinstance(rank, (str, int)) else rank


def _reference_inputs(example_input: np.ndarray, num_random: int, num_real: int, seed: int = 0):
    """Random inputs at the example's scale, plus real Fashion-MNIST test images when they fit."""
    rng = np.random.default_rng(seed)
    scale = float(np.std(example_input)) or 1.0
    inputs = [rng.standard_normal(example_input.shape).astype(np.float32) * scale for _ in range(num_random)]
    labels = np.zeros(0, dtype=np.int64)
    if tuple(example_input.shape) == FASHION_MNIST_SHAPE and num_real > 0:
        from .data import load_fashion_mnist

        images, labels = load_fashion_mnist("test", limit=num_real)
        inputs.extend(image[None] for image in images)
    return np.stack(inputs), labels


def _run_each(run, inputs: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(run(x)) for x in inputs])


@dataclass
class PreparedModel:
    """A model loaded and imported into Relax, its convs rewritten by our pass (unless dense)."""

    source: object  # frontend.SourceModel
    mod: object  # the Relax IRModule after the rewrite
    records: list  # the pass's LayerRecords
    policy: object  # the rank policy (None for dense)


def prepare_model(model, method: str = "tai", rank="energy:0.95", rank_file=None, example_input=None,
                  method_options=None) -> PreparedModel:
    """Load `model` (as compile_model takes it), import it and rewrite its convs by `method`."""
    from .frontend import load_model, to_relax
    from .passes import DecomposeConv2D

    source = load_model(model, example_input)
    mod = to_relax(source)
    if method == DENSE:
        return PreparedModel(source, mod, _dense_records(mod), None)
    policy = _rank_policy(rank, rank_file)
    rewrite = DecomposeConv2D(method=method, policy=policy, method_options=method_options or {})
    mod = rewrite(mod)
    return PreparedModel(source, mod, rewrite.records, policy)


def _database_dir(database, target_spec):
    """None (no database), True/"default" (schedules/<target>/), or a directory."""
    if database is None or database is False:
        return None
    if database is True or database == "default":
        from .database import default_database_dir

        return default_database_dir(target_spec)
    return Path(database)


def compile_model(model, target: str = "x86-avx2", method: str = "tai", rank="energy:0.95",
                  rank_file=None, out="build/model", example_input=None, method_options=None,
                  min_top1_agreement: float = 0.99, num_random_inputs: int = 8,
                  num_real_inputs: int = 64, verify: bool = True, database=None,
                  rpc: str | None = None, key: str | None = None) -> CompileResult:
    """Compile `model` (ONNX path, .pt2 path, "module:function", nn.Module, or the PreparedModel
    of `prepare_model` for the same `method`, so that a caller needing it too decomposes once) for `target`.

    `database`: a tuning database to apply (a directory, or True for ``schedules/<target>/``).
    The build is verified where its target runs: on the board registered under `key` (default: the
    target's rpc_key) on the `rpc` tracker, else in this process when it can run here (x86; OpenCL
    or CUDA with their runtime and device), else not at all (the manifest says why).
    """
    from .reference import lowrank_reference
    from .targets import load_target

    target_spec = load_target(target)
    prepared = (model if isinstance(model, PreparedModel)  # prepared by the caller (bench) for `method`
                else prepare_model(model, method, rank, rank_file, example_input, method_options))
    source, mod, records, policy = prepared.source, prepared.mod, prepared.records, prepared.policy
    database_dir = _database_dir(database, target_spec)
    executable = _build_for_target(mod, target_spec, database_dir)
    schedules = None
    if database_dir is not None:
        from .tune import database_coverage, outdated_kernels

        coverage = database_coverage(mod, target_spec, database_dir)
        schedules = {"database": str(database_dir), "kernels": len(coverage),
                     "kernels_from_database": sum(v is not None for v in coverage.values()),
                     "outdated_kernels": outdated_kernels(mod, target_spec, database_dir)}
        if schedules["outdated_kernels"]:
            warnings.warn(OutdatedDatabaseWarning(
                f"{database_dir}: {len(schedules['outdated_kernels'])} kernel(s) of this build were tuned "
                "before our default schedules changed, and a record the build applies may now be "
                "slower than the default: tune this model again for the target (it measures today's "
                f"schedules against the records): {', '.join(schedules['outdated_kernels'])}"),
                stacklevel=2)

    inputs, labels = _reference_inputs(source.example_input, num_random_inputs, num_real_inputs)
    original_outputs = _run_each(source.run, inputs)
    lowrank_run = lowrank_reference(source, records) if method != DENSE else source.run
    reference = ReferenceData(inputs, original_outputs, _run_each(lowrank_run, inputs), labels)

    rows = rows_from_records(records)
    manifest = {
        "source": {"origin": source.origin, "kind": source.kind, "sha256": source.sha256,
                   "input_name": source.input_name, "input_shape": list(source.example_input.shape)},
        "target": {"name": target_spec.name, "tvm_target": target_spec.tvm_target_config,
                   "host": target_spec.host, "file": str(target_spec.source)},
        "method": method,
        "rank_policy": None if policy is None else repr(policy),
        "layers": [row.to_dict() for row in rows],
        "totals": totals(rows),
        "schedules": schedules,
        "tvm_version": _tvm_version(),
        "tvm_lowrank_version": __version__,
        "verification": None,
    }
    out = Path(out)
    export_notes: dict = {}
    staged = write_artifact(out.with_name(out.name + ".staging"),
                            lambda path: _export_for_target(executable, path, target_spec, export_notes),
                            manifest, reference)
    if export_notes:
        staged.update_manifest(**export_notes)
    verification = None
    skipped = None if rpc is not None else _why_not_verified_here(target_spec)
    if verify and skipped is None:
        try:
            verification = verify_artifact(staged.path, min_top1_agreement=min_top1_agreement, rpc=rpc,
                                           key=key)
        except VerificationError:
            _replace(staged.path, out.with_name(out.name + ".failed"))
            raise
        except DeviceError as error:  # the board is gone: keep the build, leave OUT as it was
            kept = out.with_name(out.name + ".unverified")
            _replace(staged.path, kept)
            raise DeviceError(f"{error}\nthe new build is kept unverified at {kept} (`tvm-lowrank verify "
                              f"{kept} --rpc HOST:PORT`); {out} is unchanged") from error
        except BaseException:
            shutil.rmtree(staged.path, ignore_errors=True)
            raise
    elif verify:
        staged.update_manifest(verification={"skipped": skipped, "min_top1_agreement": min_top1_agreement})
    _replace(staged.path, out)
    return CompileResult(load_artifact(out), rows, verification, records)


def _export_for_target(executable, path, target_spec, notes: dict):
    """CUDA libraries get their kernels compiled ahead of time (`tvm_lowrank.cuda_aot`), noted in
    `notes["cuda"]`; every other target is exported as build.export_library does."""
    if target_spec.tvm_target_config.get("kind") == "cuda":
        from .cuda_aot import export_cuda_library

        notes["cuda"] = export_cuda_library(executable, path, target_spec)
        return path
    from .build import export_library

    return export_library(executable, path, target_spec)


def _build_for_target(mod, target_spec, database_dir):
    """CPU targets through our pipeline (schedules, tuning database); OpenCL (Mali) targets through
    the OpenCL path, which loads our OpenCL runtime first so the build also runs here."""
    from .build import build

    if target_spec.tvm_target_config.get("kind") == "opencl" and database_dir is None:
        from .opencl import build_for_opencl

        return build_for_opencl(mod, target_spec.tvm_target())
    return build(mod, target_spec, database_dir=database_dir)


def _why_not_verified_here(target_spec) -> str | None:
    """Why a build for `target_spec` cannot be verified in this process, with what to do instead."""
    from .runner import local_unavailable_reason

    reason = local_unavailable_reason(target_spec)
    if reason is None:
        return None
    if target_spec.rpc_key is not None:
        return f"{reason}; verify it on a device with --rpc HOST:PORT --key {target_spec.rpc_key}"
    return f"{reason}; verify it where the device is: `tvm-lowrank verify ARTIFACT`"


def _replace(source: Path, destination: Path) -> None:
    if destination.exists():
        shutil.rmtree(destination)
    source.rename(destination)


def _dense_records(mod):
    """Records of every conv when nothing is rewritten, so dense builds report the same table."""
    from .passes import DecomposeConv2D
    from .decompose import PerLayerRank

    probe = DecomposeConv2D(method="tai", policy=PerLayerRank({}))  # leaves every layer dense
    probe(mod)
    return probe.records


def _tvm_version() -> str:
    import tvm

    return tvm.__version__


def verify_artifact(path, min_top1_agreement: float | None = None, rpc: str | None = None,
                    key: str | None = None) -> VerificationResult:
    """Run the artifact's library on its reference inputs and compare with both PyTorch references;
    raise VerificationError if it does not match.

    Without `rpc` it runs in this process (x86 CPU, or OpenCL/CUDA devices here); with `rpc`
    ("HOST:PORT" of a TVM tracker) on a board registered under `key` (default: the target's
    rpc_key). Where it ran is recorded in the manifest: "verification" (the latest) and
    "verified_on" (one entry per place).
    """
    from .runner import open_artifact

    artifact = load_artifact(path)
    reference = artifact.reference()
    if min_top1_agreement is None:
        stored = artifact.manifest.get("verification") or {}
        min_top1_agreement = stored.get("min_top1_agreement", 0.99)
    with open_artifact(artifact, rpc, key) as runner:
        outputs = _run_each(runner.run, reference.inputs)
    placement = runner.placement
    result = compare(outputs, reference.original_outputs, reference.lowrank_outputs,
                     min_top1_agreement, device=placement.describe(), labels=reference.labels)
    record = {**result.to_dict(), "ran_on": placement.to_dict()}
    place = "local" if placement.where == "local" else f"rpc:{placement.key}"
    verified_on = {**(artifact.manifest.get("verified_on") or {}), place: record}
    artifact.update_manifest(verification=record, verified_on=verified_on)
    result.raise_if_failed()
    return result


def time_artifact(path, rpc: str | None = None, key: str | None = None, repeat: int = 10,
                  number: int = 10):
    """Time the artifact's "main" on its first reference input, where verify_artifact runs it.

    Returns a `runner.DeviceTiming` (median and spread in seconds); its `emulated` is true (and its
    summary says "emulated — not representative") on stand-ins: the emulated board, PoCL.
    """
    from .runner import DeviceTiming, open_artifact

    artifact = load_artifact(path)
    x = artifact.reference().inputs[0]
    with open_artifact(artifact, rpc, key) as runner:
        seconds = runner.time(x, repeat=repeat, number=number)
    return DeviceTiming(tuple(seconds), number, runner.placement)
