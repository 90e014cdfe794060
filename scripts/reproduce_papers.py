"""Reproduce the central claims of the four low-rank papers on Fashion-MNIST, on CPU, in minutes.

    python scripts/reproduce_papers.py                      # the README's run (about 20 min, 1 thread)
    python scripts/reproduce_papers.py --train-limit 2000 --atcd-limit 1000 --test-limit 2000   # a smoke run

Scaled down to fit a shared 2-core CPU: a VGG-style net with widths 16-32-64 (the bundled one is
32-64-128), the first --train-limit training images (--atcd-limit for the three ATCD
architectures), few epochs, seeds fixed. Every method is compared with the dense net trained on
the same images for the same epochs; the fine-tuning methods start from that dense net. All
training happens first; then every model is compiled for this machine's x86 target with the
pass recognising its chains, verified against PyTorch, and timed (batch 1, TVM's time evaluator),
so TVM's thread pool never competes with PyTorch's during training.

Writes (into --out, default docs/): reproduce_papers.md (the tables and verdicts), .json (all
numbers) and .png (accuracy vs compression per method).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from tvm_lowrank.models._fmnist import MobileNetFashion, ResNetFashion, VGGFashion  # noqa: E402
from tvm_lowrank.train import (FROM_SCRATCH, MethodOptions, TrainSettings, compile_trained,  # noqa: E402
                               load_dataset, run_method, train_dense)
from tvm_lowrank.train.runner import FINETUNE_LR, SCRATCH_LR  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-limit", type=int, default=8000, help="training images (VGG experiments)")
    parser.add_argument("--atcd-limit", type=int, default=4000, help="training images (ATCD on 3 architectures)")
    parser.add_argument("--test-limit", type=int, default=None, help="test images (default: all 10,000)")
    parser.add_argument("--epochs", type=float, default=2, help="epochs of the from-scratch runs")
    parser.add_argument("--finetune-epochs", type=float, default=1, help="epochs of the fine-tuning runs")
    parser.add_argument("--widths", type=int, nargs=3, default=[16, 32, 64], help="VGG-style channel widths")
    parser.add_argument("--tai-scratch-ranks", nargs="+", default=["macs:0.5", "macs:0.25"])
    parser.add_argument("--finetune-ranks", nargs="+", default=["macs:0.25", "macs:0.1"],
                        help="rank policies of tai-finetune and deeptwist (the same, to compare them)")
    parser.add_argument("--cp-ranks", nargs="+", default=["macs:0.3", "macs:0.15"])
    parser.add_argument("--cp-steps-per-layer", type=int, default=15,
                        help="cp-iterative: fine-tuning steps after each layer's decomposition")
    parser.add_argument("--switch-every", default="0.5epoch", help="ATCD alternation schedule")
    parser.add_argument("--deeptwist-period", type=int, default=20, help="steps between distortions")
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch and TVM threads (1: the most stable numbers on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", default=None, help="x86 target (default: the widest this CPU runs)")
    parser.add_argument("--no-compile", action="store_true", help="skip compiling, verifying and timing")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    return parser.parse_args(argv)


@dataclass
class Row:
    table: str  # which claim's table
    method: str
    model: str
    rank: str
    accuracy: float
    macs: int
    params: int
    dense_macs: int
    dense_params: int
    dense_accuracy: float
    train_seconds: float
    extra: dict = field(default_factory=dict)
    latency_ms: float | None = None  # the fastest sample: the least disturbed by other jobs on the machine
    latency_median_ms: float | None = None
    verified: str | None = None

    @property
    def mac_factor(self) -> float:
        return self.dense_macs / self.macs

    @property
    def param_factor(self) -> float:
        return self.dense_params / self.params


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Experiment:
    """Runs the methods, keeping each trained model (for compiling later) and its row."""

    def __init__(self, args, data):
        self.args, self.data, self.rows, self.models = args, data, [], []

    def settings(self, method: str, epochs: float | None = None) -> TrainSettings:
        scratch = method in FROM_SCRATCH or method == "dense"
        epochs = epochs or (self.args.epochs if scratch else self.args.finetune_epochs)
        return TrainSettings(epochs, 128, SCRATCH_LR if scratch else FINETUNE_LR, self.args.seed)

    def record(self, table, result, model_name, rank, dense, seconds, data=None) -> Row:
        row = Row(table, result.method, model_name, rank, result.accuracy, result.cost.macs, result.cost.params,
                  dense.cost.macs, dense.cost.params, dense.accuracy, seconds, _summary(result.history))
        self.rows.append(row)
        self.models.append((row, result.model, (data or self.data).example))
        log(f"{table}: {row.method} {model_name} {rank}: accuracy {row.accuracy:.4f}, MACs /{row.mac_factor:.2f}, "
            f"params /{row.param_factor:.2f}, {seconds:.0f} s")
        return row

    def dense(self, table, architecture, model_name, data=None):
        start = time.perf_counter()
        dense = train_dense(architecture, data or self.data, self.settings("dense"))
        self.record(table, dense, model_name, "dense", dense, time.perf_counter() - start, data)
        return dense

    def method(self, table, method, architecture, model_name, dense, options, rank="", data=None):
        start = time.perf_counter()
        settings = self.settings(method)
        result = run_method(method, architecture, data or self.data, settings, options, trained=dense.model)
        return self.record(table, result, model_name, rank, dense, time.perf_counter() - start, data)


def _summary(history: dict) -> dict:
    """The JSON-worthy part of a method's history."""
    keep = {}
    for key, value in history.items():
        if key == "switches":
            keep["switch_output_change"] = {form: max((c for _, f, c in value if f == form), default=None)
                                            for form in ("composed", "decomposed")}
            keep["switches"] = len(value)
        elif key in ("accuracy_before_finetune", "accuracy_dense_distorted", "max_decomposition_error", "ranks"):
            keep[key] = value
        elif key == "steps":
            keep["accuracy_after_each_decomposition"] = [step["accuracy_after_decomposition"] for step in value]
    return keep


def run_training(args) -> Experiment:
    data = load_dataset("fashion-mnist", args.train_limit, args.test_limit)
    atcd_data = load_dataset("fashion-mnist", args.atcd_limit, args.test_limit)
    experiment = Experiment(args, data)
    widths = tuple(args.widths)
    vgg = lambda: VGGFashion(widths)  # noqa: E731
    name = f"vgg-{'-'.join(map(str, widths))}"
    log(f"data: {len(data.train_labels)} training images ({len(atcd_data.train_labels)} for ATCD), "
        f"{len(data.test_labels)} test images; {args.threads} threads")
    dense = experiment.dense("dense", vgg, name)

    for rank in args.tai_scratch_ranks:
        experiment.method("tai-scratch", "tai-scratch", vgg, name, dense, MethodOptions(rank=rank), rank)
    for rank in args.finetune_ranks:
        experiment.method("deeptwist", "tai-finetune", vgg, name, dense, MethodOptions(rank=rank), rank)
        experiment.method("deeptwist", "deeptwist", vgg, name, dense,
                          MethodOptions(rank=rank, period=args.deeptwist_period), rank)
    for rank in args.cp_ranks:
        experiment.method("cp-iterative", "cp-iterative", vgg, name, dense,
                          MethodOptions(rank=rank, cp_steps_per_layer=args.cp_steps_per_layer), rank)

    options = MethodOptions(switch_every=args.switch_every)
    for arch_name, architecture in (("vgg", vgg), ("resnet", ResNetFashion), ("mobilenet", MobileNetFashion)):
        label = name if arch_name == "vgg" else f"{arch_name}-fmnist"
        arch_dense = experiment.dense("atcd", architecture, label, atcd_data)
        for method in ("atcd", "atcd-fixed"):
            experiment.method("atcd", method, architecture, label, arch_dense, options, "rank-1", atcd_data)
    return experiment


def compile_all(experiment: Experiment, args) -> None:
    """Compile, verify and time every trained model (after all training: one thread pool at a time)."""
    from tvm_lowrank.build import load_executable, time_vm
    from tvm_lowrank.targets import host_cpu_target

    target = args.target or host_cpu_target()
    with tempfile.TemporaryDirectory() as scratch:
        for index, (row, model, example) in enumerate(experiment.models):
            start = time.perf_counter()
            compiled = compile_trained(model, example, Path(scratch) / f"m{index}", target)
            vm = load_executable(compiled.artifact.library_path)
            samples = time_vm(vm, example.numpy(), repeat=30, number=20)
            row.latency_ms, row.latency_median_ms = float(np.min(samples) * 1e3), float(np.median(samples) * 1e3)
            chains = sum(r.action == "pre-decomposed" for r in compiled.records)
            row.verified = f"{target}, {chains} chains recognised, {compiled.verification.summary().splitlines()[0]}"
            log(f"compiled {row.method} {row.model} {row.rank}: {row.latency_ms:.3f} ms (min), {chains} chains, "
                f"verified ({time.perf_counter() - start:.0f} s)")
        experiment.target = target


# ---- the report --------------------------------------------------------------------------------

def _table(rows) -> list[str]:
    lines = ["| method | model | rank policy | test accuracy | Δ vs dense (points) | MACs ÷ | params ÷ | "
             "x86 latency, ms (min / median) | train time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        latency = "" if row.latency_ms is None else f"{row.latency_ms:.3f} / {row.latency_median_ms:.3f}"
        lines.append(f"| {row.method} | {row.model} | {row.rank} | {row.accuracy:.4f} | "
                     f"{(row.accuracy - row.dense_accuracy) * 100:+.2f} | {row.mac_factor:.2f} | "
                     f"{row.param_factor:.2f} | "
                     f"{latency} | {row.train_seconds:.0f} |")
    return lines


def verdicts(rows) -> list[tuple[str, bool, str]]:
    """(claim, held, evidence) for the four claims."""
    out = []
    atcd = {(r.model, r.method): r for r in rows if r.table == "atcd"}
    models = sorted({model for model, _ in atcd})
    wins = [(m, atcd[(m, "atcd")].accuracy, atcd[(m, "atcd-fixed")].accuracy) for m in models
            if (m, "atcd") in atcd and (m, "atcd-fixed") in atcd]
    held = bool(wins) and all(a > f for _, a, f in wins)
    out.append(("ATCD beats fixed-structure 1-D training at the same structure", held,
                "; ".join(f"{m}: {a:.4f} vs {f:.4f}" for m, a, f in wins)))

    tai = {(r.method, r.rank): r for r in rows if r.table == "deeptwist"}
    dense = next(r for r in rows if r.table == "dense")
    pairs = [(rank, tai[("deeptwist", rank)], tai[("tai-finetune", rank)]) for _, rank in tai
             if ("deeptwist", rank) in tai and ("tai-finetune", rank) in tai]
    pairs = list({rank: (rank, d, f) for rank, d, f in pairs}.values())
    held = bool(pairs) and all(d.accuracy > f.accuracy for _, d, f in pairs)
    out.append(("DeepTwist loses less accuracy than decompose-then-fine-tune at the same rank", held,
                "; ".join(f"{rank} (MACs ÷{d.mac_factor:.2f}): loss {100 * (dense.accuracy - d.accuracy):.2f} vs "
                          f"{100 * (dense.accuracy - f.accuracy):.2f} points" for rank, d, f in pairs)))

    cp = [r for r in rows if r.table == "cp-iterative"]
    good = [r for r in cp if r.mac_factor >= 3 and dense.accuracy - r.accuracy <= 0.01]
    out.append(("CP-TPM with iterative fine-tuning recovers to within 1 point of dense at ≥3× fewer MACs",
                bool(good), "; ".join(f"{r.rank} (MACs ÷{r.mac_factor:.2f}): {100 * (r.accuracy - dense.accuracy):+.2f}"
                                      " points" for r in cp)))

    scratch = [r for r in rows if r.table == "tai-scratch"]
    good = [r for r in scratch if r.mac_factor >= 2 and r.accuracy >= dense.accuracy - 0.005]
    out.append(("Tai from scratch matches dense (within 0.5 point) at ≥2× fewer MACs", bool(good),
                "; ".join(f"{r.rank} (MACs ÷{r.mac_factor:.2f}): {r.accuracy:.4f} vs dense {dense.accuracy:.4f}"
                          for r in scratch)))
    return out


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    dense = next(r for r in rows if r.table == "dense")
    left.axhline(dense.accuracy, color="gray", linestyle="--", label=f"dense {dense.model}")
    for method, marker in (("tai-scratch", "o"), ("tai-finetune", "s"), ("deeptwist", "^"), ("cp-iterative", "D")):
        points = sorted((r.mac_factor, r.accuracy) for r in rows if r.method == method and r.table != "atcd")
        if points:
            left.plot(*zip(*points), marker=marker, label=method)
    left.set(xlabel="MAC reduction (dense MACs / MACs)", ylabel="test accuracy",
             title=f"VGG-style ({dense.model}), Fashion-MNIST")
    left.legend(fontsize=8)
    for method, marker in (("dense", "x"), ("atcd", "o"), ("atcd-fixed", "s")):
        points = [(r.mac_factor, r.accuracy, r.model) for r in rows if r.table == "atcd" and r.method == method]
        right.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, label=method)
        for x, y, model in points:
            right.annotate(model.split("-")[0], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    right.set(xlabel="MAC reduction vs the dense architecture", ylabel="test accuracy",
              title="ATCD rank-1 nets vs fixed 1-D training")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_report(experiment: Experiment, args, seconds: float) -> str:
    rows = experiment.rows
    titles = {
        "dense": "Dense baseline",
        "tai-scratch": "Tai et al.: V-BN-H trained from scratch",
        "deeptwist": "DeepTwist vs decompose-then-fine-tune (Tai form, same ranks)",
        "cp-iterative": "Astrid & Lee: CP (tensor power method) + SVD, iterative one-shot fine-tuning",
        "atcd": "ATCD: rank-1 nets, alternating composed/decomposed vs fixed 1-D training",
    }
    command = " ".join(["python scripts/reproduce_papers.py", *sys.argv[1:]])
    lines = [f"Run: `{command}` — {len(experiment.data.train_labels)} training images "
             f"({args.atcd_limit} for ATCD), {len(experiment.data.test_labels)} test images, {args.epochs:g} epochs "
             f"from scratch, {args.finetune_epochs:g} of fine-tuning, seed {args.seed}, {args.threads} threads, "
             f"{seconds / 60:.1f} min; latency: batch 1 on {getattr(experiment, 'target', 'no target')}, "
             f"{args.threads} thread(s), 30 samples of 20 runs (TVM's time evaluator). MACs and parameters count "
             "all convs and linear layers."]
    for table, title in titles.items():
        selected = [r for r in rows if r.table == table]
        if selected:
            lines += ["", f"**{title}**", "", *_table(selected)]
    lines += ["", "| claim | verdict | evidence |", "|---|---|---|"]
    for claim, held, evidence in verdicts(rows):
        lines.append(f"| {claim} | {'held' if held else 'not held'} | {evidence} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))  # read when TVM's thread pool starts
    start = time.perf_counter()
    experiment = run_training(args)
    if not args.no_compile:
        compile_all(experiment, args)
    args.out.mkdir(parents=True, exist_ok=True)
    report = write_report(experiment, args, time.perf_counter() - start)
    (args.out / "reproduce_papers.md").write_text(report)
    (args.out / "reproduce_papers.json").write_text(json.dumps(
        [{**row.__dict__, "mac_factor": row.mac_factor, "param_factor": row.param_factor} for row in experiment.rows],
        indent=1))
    plot(experiment.rows, args.out / "reproduce_papers.png")
    print(report)
    log(f"done in {(time.perf_counter() - start) / 60:.1f} min; wrote {args.out}/reproduce_papers.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
