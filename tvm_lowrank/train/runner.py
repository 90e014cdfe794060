"""One entry point for the six training methods (`tvm-lowrank train`, scripts/reproduce_papers.py).

Methods by name: two train from scratch on an architecture (``atcd`` / ``atcd-fixed`` as rank-1
nets, ``tai-scratch`` as V-BN-H pairs), three start from a trained dense model (``tai-finetune``,
``cp-iterative``, ``deeptwist``). Every result is a decomposed PyTorch model that exports with
torch.export and compiles with the pass recognising its chains (`compile_trained`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..decompose import PerLayerRank, parse_rank_policy
from ..errors import TrainingError
from ..models.training import evaluate_accuracy
from ._loop import (BatchStream, Dataset, TrainedModel, TrainSettings, finish, load_dataset, model_cost,
                    train_steps)
from .atcd import AlternationSchedule, to_rank1, train_atcd
from .cp_iterative import train_cp_iterative
from .deeptwist import APPROXIMATIONS, train_deeptwist
from .tai import decompose_then_finetune, train_tai_scratch

FROM_SCRATCH = ("atcd", "atcd-fixed", "tai-scratch")
FROM_TRAINED = ("tai-finetune", "cp-iterative", "deeptwist")
METHODS = FROM_SCRATCH + FROM_TRAINED
SCRATCH_LR, FINETUNE_LR = 3e-3, 1e-3


@dataclass(frozen=True)
class MethodOptions:
    """Per-method knobs; each method reads only its own."""

    rank: str = "macs:0.25"  # rank policy (tai-*, cp-iterative, deeptwist)
    switch_every: str = "1epoch"  # ATCD alternation schedule
    rank1_terms: int = 1  # ATCD: rank-1 terms per filter
    period: int = 50  # DeepTwist: steps between distortions
    deeptwist_form: str = "tai"  # DeepTwist's low-rank form: "tai" or "im2col"
    cp_steps_per_layer: int | None = None  # cp-iterative: fine-tuning steps after each layer (None: split epochs)
    svd_policy: str | None = "energy:0.95"  # cp-iterative: ranks of the SVD layers (1×1 convs, linear)


def check_method(method: str, options: MethodOptions | None = None) -> None:
    """Reject an unknown method or a malformed option of it before any data is loaded."""
    if method not in METHODS:
        raise TrainingError(f"unknown training method {method!r}; known: {', '.join(METHODS)}")
    if options is None:
        return
    if method.startswith("atcd"):
        AlternationSchedule.parse(options.switch_every)
        if options.rank1_terms < 1:
            raise TrainingError(f"{method}: rank-1 terms per filter must be >= 1, got {options.rank1_terms}")
    else:
        parse_rank_policy(str(options.rank))  # a RankPolicyError names the text
    if method == "deeptwist" and options.deeptwist_form not in APPROXIMATIONS:
        raise TrainingError(f"deeptwist: form must be one of {sorted(APPROXIMATIONS)}, not {options.deeptwist_form!r}")
    if method == "deeptwist" and options.period < 1:
        raise TrainingError(f"deeptwist: period must be >= 1 step, got {options.period}")


def train_dense(architecture: Callable[[], nn.Module], data: Dataset, settings: TrainSettings) -> TrainedModel:
    """The dense baseline: the architecture trained on the same data and budget."""
    torch.manual_seed(settings.seed)
    model = architecture()
    stream = BatchStream(data.train_images, data.train_labels, settings.batch_size, settings.seed)
    train_steps(model, stream, settings.total_steps(stream), settings.lr, settings.seed)
    return finish("dense", model, data, calibrate=True)


def run_method(method: str, architecture: Callable[[], nn.Module], data: Dataset, settings: TrainSettings,
               options: MethodOptions = MethodOptions(), trained: nn.Module | None = None) -> TrainedModel:
    """Train by `method`. `architecture()` makes a fresh dense model (the structure to compress);
    `trained` is the trained dense model the fine-tuning methods start from."""
    check_method(method, options)
    if method in FROM_TRAINED and trained is None:
        raise TrainingError(f"{method} starts from a trained dense model; none was given")
    torch.manual_seed(settings.seed)
    if method in ("atcd", "atcd-fixed"):
        model = to_rank1(architecture(), options.rank1_terms)
        return train_atcd(model, data, settings, AlternationSchedule.parse(options.switch_every),
                          fixed=method == "atcd-fixed")
    if method == "tai-scratch":
        return train_tai_scratch(architecture(), data, settings, options.rank)
    if method == "tai-finetune":
        return decompose_then_finetune(trained, data, settings, "tai", options.rank)
    if method == "cp-iterative":
        return train_cp_iterative(trained, data, settings, options.rank, options.cp_steps_per_layer,
                                  options.svd_policy)
    return train_deeptwist(trained, data, settings, options.deeptwist_form, options.rank, options.period)


def export_trained(model: nn.Module, example: torch.Tensor, out) -> list[Path]:
    """Write the trained model: ``.pt2`` is a torch.export program (what `tvm-lowrank compile`
    reads); ``.pt`` is the pickled nn.Module (for further training in PyTorch) with the ``.pt2``
    beside it. Returns the files written."""
    out = Path(out)
    if out.suffix not in (".pt", ".pt2"):
        raise TrainingError(f"output {out}: expected a .pt or .pt2 file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    exported_path = out.with_suffix(".pt2")
    torch.export.save(torch.export.export(model, (example,)), str(exported_path))
    if out.suffix == ".pt":
        torch.save(model, out)
        return [out, exported_path]
    return [exported_path]


def compile_trained(model: nn.Module, example: torch.Tensor, out, target: str = "x86-avx2", **options):
    """Compile and verify a trained model on `target`: existing chains are recognised and kept, any
    other conv stays as it was trained (an empty per-layer rank policy), so the build computes
    exactly the trained model. Returns the `CompileResult`."""
    from ..api import compile_model

    options.setdefault("min_top1_agreement", 0.99)
    return compile_model(model, target=target, method="tai", rank=PerLayerRank({}), out=out,
                         example_input=example, **options)


@dataclass
class TrainRun:
    """What `train_model` did: the result, the dense reference it started from, the files written."""

    result: TrainedModel
    dense_accuracy: float | None
    dense_cost: object
    files: list[Path]
    compiled: object = None  # CompileResult when a target was given

    def summary(self) -> str:
        result = self.result
        dense = "" if self.dense_accuracy is None else f" (the dense model it started from: {self.dense_accuracy:.4f})"
        macs, params = result.cost.ratio_to(self.dense_cost)
        lines = [f"{result.method}: test accuracy {result.accuracy:.4f}{dense}; "
                 f"{macs:.2f}x fewer MACs, {params:.2f}x fewer parameters than the dense architecture",
                 *(f"wrote {path}" for path in self.files)]
        if self.compiled is not None:
            lines += [self.compiled.report, self.compiled.verification.summary(),
                      f"artifact: {self.compiled.artifact.path}"]
        return "\n".join(lines)


def train_model(method: str, model: str = "vgg-fmnist", epochs: float = 1.0, out="model.pt2",
                options: MethodOptions = MethodOptions(), train_limit: int | None = None,
                test_limit: int | None = None, seed: int = 0,
                lr: float | None = None, batch_size: int = 128, compile_target: str | None = None) -> TrainRun:
    """`tvm-lowrank train`: train a bundled architecture by `method` on Fashion-MNIST, save it.

    Fine-tuning methods start from the bundled checkpoint of `model`; the from-scratch methods use
    only its architecture.
    """
    from ..models import create_model, model_input_shape

    check_method(method, options)
    if not epochs > 0:
        raise TrainingError(f"epochs must be > 0, got {epochs}")
    if Path(out).suffix not in (".pt", ".pt2"):
        raise TrainingError(f"output {out}: expected a .pt or .pt2 file name")
    if model_input_shape(model) != (1, 1, 28, 28):  # also rejects an unknown model, naming the known ones
        raise TrainingError(f"model {model!r} does not take Fashion-MNIST images")
    data = load_dataset("fashion-mnist", train_limit=train_limit, test_limit=test_limit)
    settings = TrainSettings(epochs, batch_size, lr or (SCRATCH_LR if method in FROM_SCRATCH else FINETUNE_LR), seed)
    trained = None if method in FROM_SCRATCH else create_model(model, pretrained=True)
    result = run_method(method, lambda: create_model(model, pretrained=False), data, settings, options, trained)
    dense_cost = model_cost(trained or create_model(model, pretrained=False), data.example)
    dense_accuracy = None if trained is None else evaluate_accuracy(trained, data.test_images, data.test_labels)
    files = export_trained(result.model, data.example, out)
    compiled = None
    if compile_target is not None:
        compiled = compile_trained(result.model, data.example, Path(out).with_suffix(""), compile_target)
    return TrainRun(result, dense_accuracy, dense_cost, files, compiled)


__all__ = ["FROM_SCRATCH", "FROM_TRAINED", "METHODS", "MethodOptions", "TrainRun", "check_method",
           "compile_trained", "export_trained", "load_dataset", "run_method", "train_dense",
           "train_model"]
