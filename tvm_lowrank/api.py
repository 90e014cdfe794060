"""`compile_model` and `verify_artifact`: the Python API behind `tvm-lowrank compile` / `verify`.

compile = load (torch.export or ONNX) -> Relax -> our conv2d -> 1-D chain pass -> build for the
target -> artifact (library, manifest, reference data) -> verification against both PyTorch
references. The artifact only replaces an earlier one after it verified.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .artifact import Artifact, ReferenceData, load_artifact, write_artifact
from .decompose import load_rank_file, parse_rank_policy
from .errors import VerificationError
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
                  num_real_inputs: int = 64, verify: bool = True, database=None) -> CompileResult:
    """Compile `model` (ONNX path, .pt2 path, "module:function", or nn.Module) for `target`.

    `database`: a tuning database to apply (a directory, or True for ``schedules/<target>/``).
    """
    from .build import build, export_library
    from .reference import lowrank_reference
    from .targets import load_target

    target_spec = load_target(target)
    prepared = prepare_model(model, method, rank, rank_file, example_input, method_options)
    source, mod, records, policy = prepared.source, prepared.mod, prepared.records, prepared.policy
    database_dir = _database_dir(database, target_spec)
    executable = build(mod, target_spec, database_dir=database_dir)
    schedules = None
    if database_dir is not None:
        from .tune import database_coverage

        coverage = database_coverage(mod, target_spec, database_dir)
        schedules = {"database": str(database_dir), "kernels": len(coverage),
                     "kernels_from_database": sum(v is not None for v in coverage.values())}

    inputs, labels = _reference_inputs(source.example_input, num_random_inputs, num_real_inputs)
    original_outputs = _run_each(source.run, inputs)
    lowrank_run = lowrank_reference(source, records) if method != DENSE else source.run
    reference = ReferenceData(inputs, original_outputs, _run_each(lowrank_run, inputs), labels)

    rows = rows_from_records(records)
    manifest = {
        "source": {"origin": source.origin, "kind": source.kind, "sha256": source.sha256,
                   "input_name": source.input_name, "input_shape": list(source.example_input.shape)},
        "target": {"name": target_spec.name, "tvm_target": target_spec.tvm_target_config},
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
    staged = write_artifact(out.with_name(out.name + ".staging"),
                            lambda path: export_library(executable, path, target_spec), manifest, reference)
    verification = None
    if verify and target_spec.runs_on_host():
        try:
            verification = verify_artifact(staged.path, min_top1_agreement=min_top1_agreement)
        except VerificationError:
            _replace(staged.path, out.with_name(out.name + ".failed"))
            raise
    elif verify:
        staged.update_manifest(verification={"skipped": f"target {target_spec.name} does not run on this "
                                                         "host; verify it on a device with --rpc"})
    _replace(staged.path, out)
    return CompileResult(load_artifact(out), rows, verification, records)


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


def verify_artifact(path, min_top1_agreement: float | None = None) -> VerificationResult:
    """Run the artifact's library on this host on its reference inputs; raise if it does not match."""
    from .build import load_executable, run_vm

    artifact = load_artifact(path)
    reference = artifact.reference()
    if min_top1_agreement is None:
        stored = artifact.manifest.get("verification") or {}
        min_top1_agreement = stored.get("min_top1_agreement", 0.99)
    vm = load_executable(artifact.library_path)
    outputs = _run_each(lambda x: run_vm(vm, x), reference.inputs)
    result = compare(outputs, reference.original_outputs, reference.lowrank_outputs,
                     min_top1_agreement, device="local", labels=reference.labels)
    artifact.update_manifest(verification=result.to_dict())
    result.raise_if_failed()
    return result
