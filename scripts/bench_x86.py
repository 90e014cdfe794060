"""x86 host benchmark: the low-rank model compiled by us against PyTorch eager and ONNX Runtime.

    python scripts/bench_x86.py [--models vgg-fmnist resnet18] [--sizes 32 224] [--method tai]
                                [--rank macs:0.25] [--trials-per-task 8] [--threads 2]
                                [--out reports/bench-x86] [--tune-only-all]
    python scripts/bench_x86.py --cells vgg-fmnist:32 resnet18:224 ...   (chosen pairs only)

For every model and input size, side by side in one process, batch 1, `--threads` threads:
PyTorch eager dense and low-rank (the program with the chains our pass chose), ONNX Runtime dense
and low-rank (ONNX export of the same programs), TVM dense tuned, TVM low-rank with our untuned
schedules, TVM low-rank tuned. Tuning (MetaSchedule + XGBoost, seeded with our schedules,
budget spread over tasks: `tvm_lowrank.tune`) runs first, each build in its own subprocess, into
`OUT/db/<model>-<size>-<method>/`; a database already there is reused (rerunning costs nothing),
so its tuning time and trials are those recorded when it was made.

Timing: each cell in child processes of its own, one for PyTorch, which also computes the
reference outputs, one per ONNX Runtime session, then one for TVM, which never runs PyTorch: in
one process, whichever thread pool starts second is slowed by the first (measured: a 0.29 ms TVM
build takes 62 ms once 2-thread PyTorch has run, 2-thread PyTorch slows by an order of magnitude
beside TVM's pool, and an ONNX Runtime session beside another ran at about its 1-thread speed).
The columns of one process (PyTorch's two, TVM's three) are measured in interleaved rounds so a
change of machine load hits them alike; medians are reported with the load average. Each
column's conv GFLOP/s is set against a ceiling measured in the PyTorch child (its 512² float32
matrix product on the same threads): where both TVM and ONNX Runtime run near it, no schedule
can widen the gap between them.
Writes OUT/bench-x86.json (every sample's median, p10, p90) and OUT/bench-x86.md (the table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_untuned import prepare_sized  # noqa: E402

COLUMNS = ("torch dense", "torch low-rank", "ort dense", "ort low-rank",
           "tvm dense tuned", "tvm low-rank untuned", "tvm low-rank tuned")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["vgg-fmnist", "resnet18"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224], help="input height = width")
    parser.add_argument("--method", default="tai", help="low-rank method")
    parser.add_argument("--rank", default="macs:0.25", help="rank policy of the low-rank build")
    parser.add_argument("--trials-per-task", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", default=None, help="default: x86-avx512 where this CPU has it, else x86-avx2")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds per column")
    parser.add_argument("--budget", type=float, default=0.05, help="seconds of runs per column per round")
    parser.add_argument("--cells", nargs="+", metavar="MODEL:SIZE",
                        help="(model, input size) pairs to run instead of every --models x --sizes")
    parser.add_argument("--tune-only-all", action="store_true", help="tune what is missing, time nothing")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench-x86")
    parser.add_argument("--tune-only", nargs=4, metavar=("MODEL", "SIZE", "METHOD", "DB"),
                        help=argparse.SUPPRESS)  # the tuning subprocess
    parser.add_argument("--baselines-only", type=Path, metavar="NPZ",
                        help=argparse.SUPPRESS)  # the PyTorch subprocess
    parser.add_argument("--ort-only", type=Path, metavar="NPZ", help=argparse.SUPPRESS)  # an ORT subprocess
    parser.add_argument("--ort-kind", choices=("dense", "low-rank"), help=argparse.SUPPRESS)
    parser.add_argument("--tvm-only", type=Path, metavar="NPZ", help=argparse.SUPPRESS)  # the TVM subprocess
    return parser.parse_args(argv)


def host_target(name=None):
    from tvm_lowrank.targets import host_cpu_target, load_target

    return load_target(name or host_cpu_target())


def tune_one(args) -> int:
    """Subprocess body: tune one build into its database, write tuning.json beside it."""
    from tvm_lowrank.tune import extract_tuning_tasks, tune_module

    model_name, size, method, database = args.tune_only
    target = host_target(args.target)
    mod = prepare_sized(model_name, int(size), method, args.rank).mod
    tasks = len(extract_tuning_tasks(mod, target))
    result = tune_module(mod, target, database, trials=args.trials_per_task * tasks, random_seed=0,
                         progress=lambda line: print(f"    {line}", flush=True))
    print(result.summary(), flush=True)
    (Path(database) / "tuning.json").write_text(json.dumps(
        {"seconds": result.seconds, "trials": result.measured, "tasks": tasks,
         "trials_per_task": args.trials_per_task, "estimated_ms": (result.estimated_seconds() or 0) * 1e3}))
    return 0


def tune_all(args, builds) -> dict:
    """Tune every (model, size, method) lacking a finished database, each in a subprocess."""
    info = {}
    for model_name, size, method in builds:
        database = args.out / "db" / f"{model_name}-{size}-{method}"
        done = database / "tuning.json"
        if not done.is_file():
            print(f"== tuning {model_name} {size}² {method} ({args.trials_per_task} trials per task)", flush=True)
            command = [sys.executable, __file__, "--tune-only", model_name, str(size), method, str(database),
                       "--rank", args.rank, "--trials-per-task", str(args.trials_per_task)]
            if args.target:
                command += ["--target", args.target]
            subprocess.run(command, check=True)
        info[(model_name, size, method)] = json.loads(done.read_text())
    return info


class Cell:
    """One (model, size): its two programs, Relax modules, MACs, and timings per column."""

    def __init__(self, model_name: str, size: int, args):
        from tvm_lowrank.reference import lowrank_program
        from tvm_lowrank.report import rows_from_records, totals

        self.model, self.size = model_name, size
        dense = prepare_sized(model_name, size, "dense", args.rank)
        lowrank = prepare_sized(model_name, size, args.method, args.rank)
        self.dense_mod, self.lowrank_mod = dense.mod, lowrank.mod
        self.x = np.asarray(dense.source.example_input, dtype=np.float32)
        self.programs = {"dense": dense.source.program,
                         "low-rank": lowrank_program(lowrank.source, lowrank.records)}
        self.macs = {kind: totals(rows_from_records(prepared.records))["conv_macs_after"]
                     for kind, prepared in (("dense", dense), ("low-rank", lowrank))}
        self.samples: dict[str, list[float]] = {}
        self.gemm_gflops = float("nan")  # the CPU's ceiling, measured beside this cell's PyTorch runs
        self.errors: dict[str, float] = {}
        self.outputs: dict = {}  # kind -> PyTorch output

    @property
    def key(self) -> str:
        return f"{self.model}-{self.size}"

    def run_programs(self) -> None:
        """The PyTorch outputs every build is checked against (in the baselines process only)."""
        import torch

        with torch.no_grad():
            self.outputs = {kind: program(torch.from_numpy(self.x)).numpy()
                            for kind, program in self.programs.items()}

    def check(self, column: str, output) -> None:
        """Record the output's largest error against PyTorch's program of the same kind."""
        expected = self.outputs["dense" if "dense" in column else "low-rank"]
        self.errors[column] = float(np.abs(np.asarray(output) - expected).max() / max(np.abs(expected).max(), 1e-30))


def time_torch(cells, args) -> None:
    import torch

    from bench_untuned import time_rounds

    torch.set_num_threads(args.threads)
    for cell in cells:
        runs = {}
        for kind, program in cell.programs.items():
            x = torch.from_numpy(cell.x)

            def run(program=program, x=x):
                with torch.no_grad():
                    return program(x)
            runs[f"torch {kind}"] = run
        cell.samples.update(time_rounds(runs, args.rounds, args.budget))


def time_ort(cells, args, kind: str) -> None:
    """ONNX Runtime on the program `kind` ("dense" or "low-rank") of each cell: one session per
    process, since a second session's thread pool, spinning after its own runs, takes a core
    (interleaved with the dense session, the low-rank VGG at 224² took 14 ms, alone 7)."""
    import torch

    from bench_untuned import time_rounds
    from tvm_lowrank.bench.baselines import export_onnx, onnx_cpu_session

    with tempfile.TemporaryDirectory() as tmp:
        for cell in cells:
            path = Path(tmp) / f"{cell.model}-{cell.size}-{kind}.onnx"
            export_onnx(cell.programs[kind], torch.from_numpy(cell.x), path)
            session = onnx_cpu_session(path, args.threads)
            feed = {session.get_inputs()[0].name: cell.x}
            cell.outputs[f"ort {kind}"] = session.run(None, feed)[0]
            cell.samples.update(time_rounds({f"ort {kind}": lambda: session.run(None, feed)},
                                            args.rounds, args.budget))


def time_tvm(cells, args, target) -> None:
    import tvm
    from tvm import relax

    from bench_untuned import time_rounds
    from tvm_lowrank.build import build, run_vm

    for cell in cells:
        runs = {}
        variants = {"tvm dense tuned": (cell.dense_mod, "dense"),
                    "tvm low-rank untuned": (cell.lowrank_mod, None),
                    "tvm low-rank tuned": (cell.lowrank_mod, args.method)}
        for column, (mod, tuned) in variants.items():
            database = None if tuned is None else args.out / "db" / f"{cell.model}-{cell.size}-{tuned}"
            vm = relax.VirtualMachine(build(mod, target, database_dir=database), tvm.cpu())
            cell.outputs[column] = run_vm(vm, cell.x)
            vm.set_input("main", tvm.runtime.tensor(cell.x))
            runs[column] = lambda vm=vm: vm.invoke_stateful("main")
        cell.samples.update(time_rounds(runs, args.rounds, args.budget))


def summarize(cells, tuning, args, target, load) -> dict:
    rows = []
    for cell in cells:
        ms = {c: float(np.median(cell.samples[c])) * 1e3 for c in COLUMNS}
        spread = {c: [float(np.percentile(cell.samples[c], q)) * 1e3 for q in (10, 90)] for c in COLUMNS}
        mac_ratio = cell.macs["dense"] / cell.macs["low-rank"]
        speedup = ms["tvm dense tuned"] / ms["tvm low-rank tuned"]
        dense_tuning = tuning[(cell.model, cell.size, "dense")]
        lowrank_tuning = tuning[(cell.model, cell.size, args.method)]
        # conv GFLOP/s of each column (2 FLOPs a MAC; pools, adds and the classifier not counted)
        gflops = {c: 2 * cell.macs["dense" if "dense" in c else "low-rank"] / (ms[c] * 1e-3) / 1e9 for c in COLUMNS}
        rows.append({
            "model": cell.model, "input": f"{cell.size}x{cell.size}", "method": args.method, "rank": args.rank,
            "dense_mmacs": cell.macs["dense"] / 1e6, "lowrank_mmacs": cell.macs["low-rank"] / 1e6,
            "mac_ratio": mac_ratio, "median_ms": ms, "p10_p90_ms": spread,
            "tvm_vs_torch_lowrank": ms["torch low-rank"] / ms["tvm low-rank tuned"],
            "tvm_vs_ort_lowrank": ms["ort low-rank"] / ms["tvm low-rank tuned"],
            # ONNX Runtime's times spread wide on this VM (its fastest tenth near TVM's median
            # at times): the same ratio between the two fastest tenths
            "tvm_vs_ort_lowrank_p10": spread["ort low-rank"][0] / spread["tvm low-rank tuned"][0],
            "tvm_lowrank_speedup": speedup, "speedup_share_of_mac_ratio": speedup / mac_ratio,
            "tuning": {"dense": dense_tuning, "low-rank": lowrank_tuning},
            "conv_gflops": gflops, "gemm_gflops": cell.gemm_gflops,
            "max_relative_error": max(cell.errors.values()),
        })
    return {"target": target.name, "threads": args.threads, "rounds": args.rounds,
            "load_average": load, "cpus": os.cpu_count(), "rows": rows}


def markdown(summary) -> str:
    head = ["model", "input", "MAC ratio"] + [f"{c} ms" for c in COLUMNS] + [
        "×PyTorch LR", "×ORT LR", "×ORT LR, p10s", "LR conv GFLOP/s TVM / ORT (GEMM ceiling)",
        "LR/dense speed-up (share of MAC ratio)", "tuning dense / LR"]
    lines = [f"Batch 1, {summary['threads']} threads, {summary['target']}, medians of "
             f"{summary['rounds']} interleaved rounds; load average {summary['load_average'][0]:.1f} → "
             f"{summary['load_average'][1]:.1f} on {summary['cpus']} CPUs. ×PyTorch LR / ×ORT LR: how many times "
             "faster TVM low-rank tuned runs than PyTorch eager / ONNX Runtime on the same low-rank program; "
             "p10s: the same between the fastest tenths of their runs. Conv GFLOP/s: 2 × conv MACs / median; "
             "GEMM ceiling: PyTorch's 512² float32 matrix product on the same threads, fastest sample.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary["rows"]:
        ms = row["median_ms"]
        tune = row["tuning"]
        lines.append("| " + " | ".join(
            [row["model"], row["input"], f"{row['mac_ratio']:.2f}×"] + [f"{ms[c]:.3f}" for c in COLUMNS]
            + [f"{row['tvm_vs_torch_lowrank']:.2f}×", f"{row['tvm_vs_ort_lowrank']:.2f}×",
               f"{row['tvm_vs_ort_lowrank_p10']:.2f}×",
               f"{row['conv_gflops']['tvm low-rank tuned']:.0f} / {row['conv_gflops']['ort low-rank']:.0f} "
               f"({row['gemm_gflops']:.0f})",
               f"{row['tvm_lowrank_speedup']:.2f}× ({row['speedup_share_of_mac_ratio']:.0%})",
               f"{tune['dense']['trials']} trials {tune['dense']['seconds'] / 60:.1f} min / "
               f"{tune['low-rank']['trials']} trials {tune['low-rank']['seconds'] / 60:.1f} min"]) + " |")
    worst = max(row["max_relative_error"] for row in summary["rows"])
    lines.append("")
    lines.append(f"Max |output − PyTorch| / max |PyTorch output| over every run: {worst:.1e}.")
    return "\n".join(lines)


def timing_only(args, pairs) -> int:
    """Subprocess body, one cell, into one .npz: with --baselines-only, PyTorch's outputs and
    timings; with --ort-only, ONNX Runtime's on the program --ort-kind; with --tvm-only, TVM's."""
    cells = [Cell(m, s, args) for m, s in pairs]
    if args.baselines_only:
        from tvm_lowrank.bench.baselines import peak_gflops

        for cell in cells:
            cell.run_programs()
        time_torch(cells, args)
        for cell in cells:
            cell.gemm_gflops = peak_gflops(args.threads)
    elif args.ort_only:
        time_ort(cells, args, args.ort_kind)
    else:
        time_tvm(cells, args, host_target(args.target))
    arrays = {}
    for cell in cells:
        arrays.update({f"{cell.key}/output/{kind}": out for kind, out in cell.outputs.items()})
        arrays.update({f"{cell.key}/samples/{column}": np.asarray(v) for column, v in cell.samples.items()})
        if args.baselines_only:
            arrays[f"{cell.key}/ceiling/gemm"] = np.asarray(cell.gemm_gflops)
    np.savez(args.baselines_only or args.ort_only or args.tvm_only, **arrays)
    return 0


def run_timings(args, cells) -> None:
    """Each cell timed in child processes: PyTorch (which also computes the reference outputs),
    ONNX Runtime once per program, then TVM (see the module docstring); results into `cells`,
    ONNX Runtime's and TVM's outputs checked against PyTorch's.

    One process per cell: timed in one process after other cells, ONNX Runtime ran the VGG at 224²
    in 16.6-17.8 ms against 10.0-10.4 ms alone, and TVM's VGG 28² builds (dense and low-rank
    alike) twice ran at half speed after ResNet-18 32² while the cell alone ran at full speed.
    """
    common = ["--rank", args.rank, "--method", args.method, "--threads", str(args.threads), "--rounds",
              str(args.rounds), "--budget", str(args.budget), "--out", str(args.out)]
    if args.target:
        common += ["--target", args.target]
    children = [["--baselines-only"], ["--ort-only", "--ort-kind", "dense"],
                ["--ort-only", "--ort-kind", "low-rank"], ["--tvm-only"]]
    with tempfile.TemporaryDirectory() as tmp:
        for cell in cells:
            for flag, *rest in children:
                path = Path(tmp) / f"{cell.key}{flag}{'-'.join(rest)}.npz"
                subprocess.run([sys.executable, __file__, flag, str(path), *rest, *common,
                                "--cells", f"{cell.model}:{cell.size}"], check=True)
                with np.load(path) as stored:
                    for name in stored.files:
                        part, _, label = name.partition("/")[2].partition("/")
                        if part == "ceiling":
                            cell.gemm_gflops = float(stored[name])
                        elif part == "output" and flag == "--baselines-only":
                            cell.outputs[label] = stored[name]
                        elif part == "output":
                            cell.check(label, stored[name])
                        else:
                            cell.samples[label] = stored[name].tolist()


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when TVM's thread pool starts
    if args.tune_only:
        return tune_one(args)
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = ([(cell.rpartition(":")[0], int(cell.rpartition(":")[2])) for cell in args.cells] if args.cells
             else [(m, s) for m in args.models for s in args.sizes])
    if args.baselines_only or args.ort_only or args.tvm_only:
        return timing_only(args, pairs)
    target = host_target(args.target)
    tuning = tune_all(args, [(m, s, k) for m, s in pairs for k in (args.method, "dense")])
    if args.tune_only_all:
        return 0
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    cells = [Cell(m, s, args) for m, s in pairs]
    run_timings(args, cells)
    summary = summarize(cells, tuning, args, target, (load_before, os.getloadavg()[0]))
    (args.out / "bench-x86.json").write_text(json.dumps(summary, indent=1))
    table = markdown(summary)
    (args.out / "bench-x86.md").write_text(table + "\n")
    print(table)
    print(f"# timed in {time.perf_counter() - started:.0f} s; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
