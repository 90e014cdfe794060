"""Tuning with our seeds + budget spreading vs MetaSchedule's stock flow: trials to within 10%.

    python scripts/tune_experiment.py tune [--model vgg-fmnist] [--methods dense tai] [--rank macs:0.25]
                                           [--trials-per-task 16] [--out reports/tune]
    python scripts/tune_experiment.py curve --database DIR [--model resnet18] [--size 224] [--methods tai]

`tune` tunes each method's build twice from an empty database, with the same trial budget:
"ours" (seeded with our default schedules, budget spread by latency share, `tvm_lowrank.tune`)
and "stock" (no seeds, TVM's gradient task scheduler). From the records, in the order they were
measured, it rebuilds the estimated model latency (sum over kernels of calls x best record so
far; a kernel with no record yet counts at our default schedule's time, as the build would run it) and reports the trials each flow needed to come within 10% of the better final estimate.

`curve` reads one database made by our flow (e.g. one of `scripts/bench_x86.py`'s) and reports
the trials, and the share of its tuning time, after which the estimate stays within 10% of the
final one.

Tuned latencies against PyTorch and ONNX Runtime are `scripts/bench_x86.py`'s job.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
MODES = {"ours": {"seed_schedules": True, "spread": True}, "stock": {"seed_schedules": False, "spread": False},
         "seed-only": {"seed_schedules": True, "spread": False}, "spread-only": {"seed_schedules": False, "spread": True}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=["tune", "report", "curve"])
    parser.add_argument("--model", default="vgg-fmnist")
    parser.add_argument("--methods", nargs="+", default=["dense", "tai"])
    parser.add_argument("--rank", default="macs:0.25")
    parser.add_argument("--target", default=None)
    parser.add_argument("--modes", nargs="+", default=["ours", "stock"], choices=list(MODES))
    parser.add_argument("--trials-per-task", type=int, default=16)
    parser.add_argument("--out", default="reports/tune")
    parser.add_argument("--database", type=Path, help="curve: the database to read")
    parser.add_argument("--size", type=int, default=None, help="input size (default: the model's)")
    return parser.parse_args(argv)


def host_target(name=None):
    from tvm_lowrank.targets import host_cpu_target, load_target

    return load_target(name or host_cpu_target())


def relax_module(args, method):
    """The model's Relax module for `method` at --size (default: the model's own input size)."""
    from bench_untuned import prepare_sized
    from tvm_lowrank.models import model_input_shape

    return prepare_sized(args.model, args.size or model_input_shape(args.model)[-1], method, args.rank)


def measured_curve(mod, target, database_dir):
    """[(records so far, estimated model seconds)] in the order the database's records were committed."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from tvm_lowrank.database import RECORD_FILE, WORKLOAD_FILE
    from tvm_lowrank.tune import extract_tuning_tasks

    tasks = extract_tuning_tasks(mod, target)
    workloads = [ms.database.Workload.from_json(json.loads(line))
                 for line in (database_dir / WORKLOAD_FILE).read_text().splitlines() if line.strip()]
    task_of = {}
    for index, workload in enumerate(workloads):
        for t, task in enumerate(tasks):
            if tvm_ffi.structural_equal(workload.mod, task.dispatched[0]):
                task_of[index] = t
    return tasks, task_of, [json.loads(line) for line in (database_dir / RECORD_FILE).read_text().splitlines()
                            if line.strip()]


def curve(tasks, task_of, records, default_seconds):
    """A kernel runs our default schedule until it has a record, then the database's best record
    (even when that is slower than our default: the build applies the database first)."""
    best = list(default_seconds)
    recorded = [False] * len(tasks)
    points = []
    for n, (index, (_, run_secs, _, _)) in enumerate(records, start=1):
        t = task_of.get(index)
        seconds = _mean(run_secs)
        if t is not None and seconds is not None and (not recorded[t] or seconds < best[t]):
            best[t], recorded[t] = seconds, True
        points.append((n, sum(task.weight * b for task, b in zip(tasks, best))))
    return points


def _mean(run_secs):
    if not run_secs:
        return None
    value = sum(run_secs) / len(run_secs)
    return value if value < 1e9 else None


def tune_phase(args):
    from tvm_lowrank.tune import tune_module

    target = host_target(args.target)
    out = REPO / args.out
    summary = {}
    for method in args.methods:
        prepared = relax_module(args, method)
        for mode in args.modes:
            database = out / f"{method}-{mode}"
            started = time.perf_counter()

            def progress(line, started=started):
                print(f"  {time.perf_counter() - started:7.1f}s {line}", flush=True)

            print(f"== {args.model} {method} ({args.rank if method != 'dense' else 'dense'}), {mode}: "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
            from tvm_lowrank.tune import extract_tuning_tasks

            count = len(extract_tuning_tasks(prepared.mod, target))
            result = tune_module(prepared.mod, target, database, trials=args.trials_per_task * count,
                                 progress=progress, random_seed=0, **MODES[mode])
            print(result.summary(), flush=True)
            summary[f"{method}-{mode}"] = {"seconds": result.seconds, "measured": result.measured,
                                          "tasks": count, "estimate": result.estimated_seconds(),
                                          "seed_estimate": result.estimated_seconds(seeds=True)}
    (out / "tune-summary.json").write_text(json.dumps(summary, indent=1))
    report_curves(args, target, out)


def report_curves(args, target, out):
    """Trials to within 10% of the best final estimate, ours vs stock, per method."""
    for method in args.methods:
        prepared = relax_module(args, method)
        per_mode = {}
        for mode in args.modes:
            database = out / f"{method}-{mode}"
            if database.is_dir():
                per_mode[mode] = measured_curve(prepared.mod, target, database)
        if "ours" not in per_mode:
            continue
        # our schedule's time per task: the seed records of the "ours" database (first per task)
        tasks, task_of, records = per_mode["ours"]
        default = first_default(tasks, task_of, records)
        curves = {mode: curve(*data, default) for mode, data in per_mode.items()}
        best = min(points[-1][1] for points in curves.values())
        start = sum(task.weight * d for task, d in zip(tasks, default))
        print(f"== {method}: default (our schedules) estimate {start * 1e3:.4f} ms, best final {best * 1e3:.4f} ms")
        for mode, points in curves.items():
            reached = within_10_percent(points, best)
            marks = {n: value for n, value in points}
            samples = [k for k in (len(tasks), 2 * len(tasks), 4 * len(tasks), 8 * len(tasks), len(points))
                       if k in marks]
            trace = ", ".join(f"{k}: {marks[k] * 1e3:.4f}" for k in samples)
            print(f"  {mode:5s}: {len(points)} trials, final {points[-1][1] * 1e3:.4f} ms; within 10% of best "
                  f"from trial {reached if reached else '- (never)'} on; estimate after n trials (ms): {trace}")
        (out / f"{method}-curves.json").write_text(json.dumps(
            {"default_estimate": start, "best": best, "curves": curves}, indent=0))


def first_default(tasks, task_of, records):
    """Seconds of each task's first record: our default schedule, which our flow measures first."""
    default = [None] * len(tasks)
    for index, (_, run_secs, _, _) in records:
        t = task_of.get(index)
        if t is not None and default[t] is None:
            default[t] = _mean(run_secs)
    return [d if d is not None else float("nan") for d in default]


def within_10_percent(points, best):
    """The trial from which the estimate stays within 10% of `best` (None: it never does)."""
    if points[-1][1] > 1.1 * best:
        return None
    above = [n for n, value in points if value > 1.1 * best]
    return above[-1] + 1 if above else 1


def curve_phase(args):
    """Trials (and tuning time, pro rata) until one database's estimate is within 10% of its final."""
    from tvm_lowrank.models import model_input_shape

    target = host_target(args.target)
    size = args.size or model_input_shape(args.model)[-1]
    tasks, task_of, records = measured_curve(relax_module(args, args.methods[0]).mod, target, args.database)
    points = curve(tasks, task_of, records, first_default(tasks, task_of, records))
    final = points[-1][1]
    reached = within_10_percent(points, final)
    tuning = args.database / "tuning.json"
    seconds = json.loads(tuning.read_text())["seconds"] if tuning.is_file() else None
    minutes = (f", about {seconds * reached / len(points) / 60:.1f} of {seconds / 60:.1f} min"
               if seconds and reached else "")
    print(f"{args.model} {size}² {args.methods[0]}: {len(tasks)} tasks, {len(points)} trials; estimate "
          f"{points[0][1] * 1e3:.3f} -> {final * 1e3:.3f} ms; within 10% of final from trial {reached}{minutes}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.phase == "tune":
        tune_phase(args)
    elif args.phase == "curve":
        curve_phase(args)
    else:
        report_curves(args, host_target(args.target), REPO / args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
