"""Untuned CPU speed: PyTorch eager vs TVM's default pipeline vs TVM with our schedules.

    python scripts/bench_untuned.py [--model vgg-fmnist] [--sizes 28 64] [--methods dense tai]
                                    [--rank macs:0.25] [--threads 2]

For each input size and method (dense, or a low-rank method at --rank) it builds the model
twice, `build(..., schedules=False)` (TVM's default CPU code) and `build(...)` (our schedules), and
prints median (and minimum) milliseconds per batch-1 inference and the ratios. PyTorch runs the same BN-folded
program (the low-rank one with the chains the Relax pass chose). PyTorch is timed first, before
TVM's thread pool exists: with both pools alive, 2-thread PyTorch slows by an order of magnitude.
Each column is measured in interleaved rounds, so a change of machine load hits the variants
alike; the load average is printed with the table. ONNX Runtime is `bench_x86.py`'s: timed fairly,
each of its sessions needs a process of its own.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vgg-fmnist", help="bundled model name (tvm_lowrank.models)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64], help="input height = width")
    parser.add_argument("--methods", nargs="+", default=["dense", "tai"], help='"dense" or a low-rank method')
    parser.add_argument("--rank", default="macs:0.25", help="rank policy of the low-rank methods")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", default=None, help="target name (default: x86-avx512 if this CPU has it)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds per column")
    parser.add_argument("--budget", type=float, default=0.05,
                        help="seconds of runs per variant per round (fewer runs for slow variants)")
    return parser.parse_args(argv)


@dataclass
class Config:
    size: int
    method: str
    program: object = None  # the torch program PyTorch times
    relax_mod: object = None
    macs: int = 0
    times: dict = field(default_factory=dict)  # column -> list of seconds per run
    errors: dict = field(default_factory=dict)  # column -> max abs error vs PyTorch
    pretrained: bool = True


def prepare_sized(model_name: str, size: int, method: str, rank: str):
    """`api.prepare_model` of bundled `model_name` on a seeded size x size input ("dense": no
    rewrite); models without trained weights get seeded ones, as speed does not depend on them."""
    import torch

    from tvm_lowrank.api import prepare_model
    from tvm_lowrank.models import create_model, has_weights

    model = create_model(model_name, pretrained=has_weights(model_name))
    torch.manual_seed(0)
    x = torch.randn(1, model_channels(model_name), size, size)
    return prepare_model(model, method, rank, example_input=x)


def load_configs(args):
    """Model programs and Relax modules for every (size, method), before any timing."""
    from tvm_lowrank.models import has_weights
    from tvm_lowrank.reference import lowrank_program
    from tvm_lowrank.report import rows_from_records, totals

    configs = []
    for size in args.sizes:
        for method in args.methods:
            prepared = prepare_sized(args.model, size, method, args.rank)
            program = (lowrank_program(prepared.source, prepared.records) if method != "dense"
                       else prepared.source.program)
            macs = totals(rows_from_records(prepared.records))["conv_macs_after"]
            configs.append(Config(size, method, program, prepared.mod, macs, pretrained=has_weights(args.model)))
    return configs


def model_channels(name: str) -> int:
    from tvm_lowrank.models import model_input_shape

    return model_input_shape(name)[1]


def _runs(seconds_per_run: float, budget: float) -> int:
    return max(1, min(50, int(budget / max(seconds_per_run, 1e-6))))


def time_rounds(columns: dict, rounds: int, budget: float) -> dict:
    """columns: name -> zero-argument callable. Returns name -> seconds of each timed run.

    One warm-up call sizes the number of runs per round; then rounds go column by column.
    """
    runs = {}
    for name, fn in columns.items():
        fn()
        start = time.perf_counter()
        fn()
        runs[name] = _runs(time.perf_counter() - start, budget)
    samples = {name: [] for name in columns}
    for _ in range(rounds):
        for name, fn in columns.items():
            for _ in range(runs[name]):
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    return samples


def bench_torch(configs, args):
    import torch

    torch.set_num_threads(args.threads)
    inputs = {c.size: torch.randn(1, model_channels(args.model), c.size, c.size) for c in configs}
    columns = {}
    for config in configs:
        def run(program=config.program, x=inputs[config.size]):
            with torch.no_grad():
                return program(x)
        columns[(config.size, config.method)] = run
    samples = time_rounds(columns, args.rounds, args.budget)
    for config in configs:
        config.times["torch"] = samples[(config.size, config.method)]
    return {size: x.numpy() for size, x in inputs.items()}


def _max_error(output, config, inputs) -> float:
    """Largest |output - PyTorch| relative to the largest |PyTorch output|."""
    import numpy as np
    import torch

    with torch.no_grad():
        expected = config.program(torch.from_numpy(inputs[config.size])).numpy()
    return float(np.abs(np.asarray(output) - expected).max() / max(np.abs(expected).max(), 1e-30))


def bench_tvm(configs, args, inputs):
    import tvm
    from tvm import relax

    from tvm_lowrank.build import build, run_vm
    from tvm_lowrank.targets import host_cpu_target, load_target

    target = load_target(args.target or host_cpu_target())
    for config in configs:
        columns = {}
        for column, schedules in (("tvm default", False), ("tvm ours", True)):
            vm = relax.VirtualMachine(build(config.relax_mod, target, schedules=schedules), tvm.cpu())
            x = inputs[config.size]
            config.errors[column] = _max_error(run_vm(vm, x), config, inputs)
            vm.set_input("main", tvm.runtime.tensor(x))
            columns[column] = lambda vm=vm: vm.invoke_stateful("main")
        samples = time_rounds(columns, args.rounds, args.budget)
        config.times.update(samples)
    return target.name


def format_table(configs, columns, model: str, stat: str = "median") -> str:
    import numpy as np

    reduce = np.median if stat == "median" else np.min
    header = ["model", "input", "method", "MMACs"] + [f"{c} ms" for c in columns] + ["ours/torch", "default/ours"]
    rows = [header]
    for config in configs:
        ms = {c: float(reduce(config.times[c])) * 1e3 for c in columns}
        rows.append([model, f"{config.size}x{config.size}", config.method, f"{config.macs / 1e6:.2f}"]
                    + [f"{ms[c]:.3f}" for c in columns]
                    + [f"{ms['tvm ours'] / ms['torch']:.2f}", f"{ms['tvm default'] / ms['tvm ours']:.1f}x"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when TVM's thread pool starts
    sys.path.insert(0, str(REPO))

    load_before = os.getloadavg()[0]
    configs = load_configs(args)
    inputs = bench_torch(configs, args)
    columns = ["torch"]
    target_name = bench_tvm(configs, args, inputs)
    columns += ["tvm default", "tvm ours"]
    print(f"# {args.model} ({'trained' if configs[0].pretrained else 'random'} weights), batch 1, "
          f"{args.threads} threads, target {target_name}, low-rank policy {args.rank}; "
          f"{args.rounds} interleaved rounds; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    for stat, note in (("median", "median ms"), ("min", "min ms: the run least disturbed by other load")):
        print(f"## {note}")
        print(format_table(configs, columns, args.model, stat))
    worst = max(max(c.errors.values()) for c in configs)
    print(f"# max |output - PyTorch| / max |PyTorch output| over all builds: {worst:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
