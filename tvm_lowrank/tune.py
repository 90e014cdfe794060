"""Tune a model's kernels for a target with MetaSchedule, into the target's shared database.

Each fused PrimFunc of the build (`build.fuse`: the same passes the build runs before it applies a
database) is one MetaSchedule task. Tuning appends measured schedules to ``schedules/<target>/``
(`tvm_lowrank.database`), which `build(..., database_dir=...)` applies; other models reuse the
records of identical workloads.

How this differs from ``ms.relax_integration.tune_relax``:

- Seeds. Before searching, each task's default schedule (ours, `tvm_lowrank.schedule`, on llvm;
  dlight's GPU rules elsewhere) is measured and committed, so the database is never worse than
  the default build. The evolutionary search starts its population from the database's best
  records, so it sees the seed; the seed's trace has no sampling decisions, so it is kept as it
  is rather than mutated.
- Spreading. The trial budget is split over the tasks before tuning: every task gets at least
  `min_trials_per_task` (when the budget allows), the rest goes by each task's share of the
  model's latency under the seeds (FLOPs where a task has no seed). TVM's gradient scheduler,
  given few trials, leaves some tasks with none.
- Resumption. Records are appended to the database as they are measured, and every record a task
  already has counts against its budget, so an interrupted run loses nothing and a rerun measures
  only what is missing (nothing, once done).
- Measurement. A candidate's time is the fastest of 5 repeats (`_fastest_repeat`), not their
  mean: on a shared machine the mean kept slower schedules over faster ones. After a task's
  search, its best records and its seed are measured again (`confirm_top`) and the new times
  committed: one measurement caught by a load spike would otherwise rank a schedule for good
  (seen here: a seed timed at 14 ms instead of 0.3 ms lost to a slower searched schedule).
- Applying. The build applies a kernel's fastest record only when it leads our schedule's record
  by `applied_records.MIN_TUNED_GAIN` (10%): records are timed minutes apart on a machine whose
  speed drifts, and near-ties went to schedules that ran slower in the model.
- Staleness. A record is a schedule timed against the default schedules of its day; after ours
  improve, `outdated_kernels` finds the kernels whose records lack today's default (the compile
  manifest lists them and warns), and tuning again measures it against them.
- Threads. A local candidate runs on the tuning target's "num-cores" threads (`runner_threads`):
  TVM's thread pool otherwise sizes itself from OMP_NUM_THREADS, which a user may have set to 1
  (this project's own benchmark commands do), and every candidate was timed on one thread while
  the build runs on all: on a 2-core Zen 3, VGG-FMNIST 28²'s kernels 1.0-1.8x slower, so the
  search ranked schedules by their one-thread speed.
- Speed. MetaSchedule's LocalBuilder starts fresh worker processes for every batch, and each
  imports all of TVM's tensor intrinsics (CUDA's included: over a minute on a busy 2-core machine);
  the builder here keeps its workers and registers only the target's CPU intrinsics.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import os
import signal
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import tvm
import tvm.s_tir.analysis
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

from .build import fuse
from .database import database_lock, default_database_dir, open_database
from .errors import DeviceError, TargetError
from .runner import local_unavailable_reason
from .targets import TargetSpec, load_target

DEFAULT_TRIALS_PER_TASK = 32
MIN_TRIALS_PER_TASK = 8
BUILD_TIMEOUT_S = 120.0  # TVM's 30 s fails whole batches on a loaded machine, with no message
WARMUP_SAMPLES = 16  # XGB ranks candidates only after this many measurements (TVM default: 100)
BATCH_SIZE = 16
CONFIRM_TOP = 2  # best records re-measured with the seed after each task's search
POPULATION_SIZE = 512  # the evolutionary search's population (TVM's default); its cost is per batch
REPEATS, MIN_REPEAT_MS = 5, 40  # a candidate's time: the fastest of 5 repeats of >= 40 ms each
BOARD_CORES = 4  # num-cores of an RPC board when not given (the usual quad-core Cortex-A cluster)
_FAILED_SECONDS = 1e9  # MetaSchedule stores a failed build or run as 1e10 s


# --- the builder ----------------------------------------------------------------------------------


def _build_candidate(mod: tvm.IRModule, target: tvm.target.Target, _params) -> tvm.runtime.Module:
    """MetaSchedule's default_build without its `import tvm.s_tir.tensor_intrin` (see module doc):
    a candidate arrives already tensorized, so its build needs no intrinsic registry. It is lowered
    by the TIR pipeline of our builds (`schedule.tir_pipeline`), so it is measured as built."""
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from .schedule.tir_pipeline import tir_pipeline

    return tvm.tirx.build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target,
                          pipeline=tir_pipeline(target))


def _export_candidate(module: tvm.runtime.Module, cross_compiler: str | None = None) -> str:
    """A shared library of one candidate, linked here (by the target's cross compiler if any), so a
    runner only loads it: a board needs no compiler."""
    path = os.path.join(tempfile.mkdtemp(prefix="tvm-lowrank-tune-"), "candidate.so")
    if cross_compiler is None:
        module.export_library(path)
    else:
        module.export_library(path, fcompile=tvm.support.cc.cross_compiler(cross_compiler))
    return path


def _build_worker(f_build, f_export, mod, target) -> str:
    return f_export(f_build(mod, target, None))


@derived_object
class PooledBuilder(PyBuilder):
    """LocalBuilder whose worker processes live across batches (recycled after `recycle_after`
    builds each, against the memory growth that made TVM restart them every batch).

    `max_workers` builds run in parallel (default: the CPU count); one taking over `timeout_sec`
    fails alone. Call `shutdown()` when done.
    """

    def __init__(self, max_workers: int | None = None, timeout_sec: float = BUILD_TIMEOUT_S,
                 cross_compiler: str | None = None, recycle_after: int = 64):
        super().__init__()
        self.max_workers = max_workers or os.cpu_count() or 1
        self.timeout_sec = timeout_sec
        self.recycle_after = recycle_after
        self.f_export = functools.partial(_export_candidate, cross_compiler=cross_compiler)
        self.pool = None

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        if self.pool is None:
            self.pool = PopenPoolExecutor(max_workers=self.max_workers, timeout=self.timeout_sec,
                                          maximum_process_uses=self.recycle_after)
        results = []
        jobs = [(_build_candidate, self.f_export, build_input.mod, build_input.target)
                for build_input in build_inputs]
        for outcome in self.pool.map_with_error_catching(lambda job: _build_worker(*job), jobs):
            if outcome.status == StatusKind.COMPLETE:
                results.append(BuilderResult(outcome.value, None))
            elif outcome.status == StatusKind.TIMEOUT:
                results.append(BuilderResult(None, f"PooledBuilder: timeout, killed after {self.timeout_sec} s"))
            else:
                results.append(BuilderResult(None, f"PooledBuilder: an exception occurred\n{outcome.value}"))
        return results

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


def register_cpu_intrinsics(target: tvm.target.Target) -> None:
    """Make `import tvm.s_tir.tensor_intrin` (done by every TuneContext) cheap for CPU targets.

    The package's __init__ parses every target's intrinsics, CUDA's and ROCm's included (75 s of
    the 115 s it took on this 2-core machine under load); MetaSchedule's CPU rules need only the
    x86 or Arm ones. Where the package is not imported yet, it is put in sys.modules as an empty
    package and only the target's module is imported into it; other submodules still import on
    demand. Other targets import the whole package as usual.
    """
    name = "tvm.s_tir.tensor_intrin"
    if target.kind.name != "llvm" or name in sys.modules:
        importlib.import_module(name)
        return
    triple = str(target.attrs.get("mtriple", "")) or tvm.target.codegen.llvm_get_system_triple()
    spec = importlib.util.find_spec(name)
    package = types.ModuleType(name, "Tensor intrinsics (only those of the tuned target; see tvm_lowrank.tune)")
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__, package.__package__ = spec.origin, name
    sys.modules[name] = package
    importlib.import_module("tvm.s_tir").tensor_intrin = package
    arm = triple.startswith(("aarch64", "arm"))
    importlib.import_module(f"{name}.{'arm_cpu' if arm else 'x86'}")


# --- tasks, seeds, budgets ------------------------------------------------------------------------


@dataclass
class TaskReport:
    """One task (fused PrimFunc) of a tuning run.

    `calls`: how often the model calls it; `budget`: the records it may have in the database
    (measured by earlier runs included); `existing`: records it had before this run; `measured`:
    measurements this run made (seed included); `confirmed`: re-measurements of the best schedules
    after the search (`_confirm_best`, not counted in the budget); `seed_seconds`: our default
    schedule (None: no rule applies; after the run, its fastest record); `seed_key`: its trace;
    `best_seconds`: the database's best after the run (None: no valid record).
    """

    name: str
    calls: int
    flops: float
    workload: tvm.IRModule = field(repr=False)
    budget: int = 0
    existing: int = 0
    measured: int = 0
    confirmed: int = 0
    seed_seconds: float | None = None
    seed_key: str | None = field(default=None, repr=False)
    best_seconds: float | None = None


@dataclass
class TuneResult:
    target: str
    database_dir: Path
    tasks: list[TaskReport]
    seconds: float
    interrupted: bool = False

    @property
    def measured(self) -> int:
        return sum(task.measured for task in self.tasks)

    def estimated_seconds(self, seeds: bool = False) -> float | None:
        """Sum over tasks of calls x best seconds (`seeds`: our default schedule's, where a task has
        one): the kernels' share of the model's latency; None while a task has no valid record."""
        values = [(task.seed_seconds or task.best_seconds if seeds else task.best_seconds) for task in self.tasks]
        if any(v is None for v in values):
            return None
        return sum(task.calls * v for task, v in zip(self.tasks, values))

    def summary(self) -> str:
        rows = [("task", "calls", "MFLOP", "budget", "before", "measured", "ours ms", "best ms", "gain")]
        for task in self.tasks:
            gain = (f"{task.seed_seconds / task.best_seconds:.2f}x"
                    if task.seed_seconds and task.best_seconds else "-")
            rows.append((task.name, str(task.calls), f"{task.flops / 1e6:.2f}", str(task.budget or "-"),
                         str(task.existing), str(task.measured), _ms(task.seed_seconds),
                         _ms(task.best_seconds), gain))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                 for row in rows]
        total, seeds = self.estimated_seconds(), self.estimated_seconds(seeds=True)
        confirmed = sum(task.confirmed for task in self.tasks)
        lines.append(f"{self.measured} measurements" + (f" (+{confirmed} re-measured best)" if confirmed else "")
                     + f" in {self.seconds:.0f} s into {self.database_dir}"
                     + (f"; kernels {_ms(seeds)} -> {_ms(total)} ms per inference" if total and seeds else "")
                     + (" (interrupted)" if self.interrupted else ""))
        return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.4f}"


def _trials(task: TaskReport) -> str:
    """Records of the task / its budget (no budget: TVM's scheduler shares one among the tasks)."""
    return f"{task.existing + task.measured}" + (f"/{task.budget}" if task.budget else "")


def allocate_trials(weights: Sequence[float], total: int, minimum: int = MIN_TRIALS_PER_TASK) -> list[int]:
    """Split `total` trials over tasks of `weights`: each gets `minimum` (or an equal share when
    the total is smaller, at least 1), the rest in proportion to the weights (largest remainders)."""
    count = len(weights)
    if count == 0:
        return []
    floor = max(min(minimum, total // count), 1)
    spare = max(total - floor * count, 0)
    clipped = [max(float(w), 0.0) if math.isfinite(w) else 0.0 for w in weights]
    weight_sum = sum(clipped)
    shares = [spare * (w / weight_sum if weight_sum > 0 else 1 / count) for w in clipped]
    extra = [int(share) for share in shares]
    by_remainder = sorted(range(count), key=lambda i: shares[i] - extra[i], reverse=True)
    for i in by_remainder[:spare - sum(extra)]:
        extra[i] += 1
    return [floor + e for e in extra]


def tuning_target(target: TargetSpec, num_cores: int | None = None) -> tvm.target.Target:
    """`target`'s TVM target with "num-cores", which MetaSchedule requires (default: this machine's
    CPUs for a host target, BOARD_CORES for a board)."""
    if num_cores is None:
        num_cores = (os.cpu_count() or 1) if target.rpc_key is None and target.runs_on_host() else BOARD_CORES
    config = dict(target.tvm_target_config)
    if config.get("kind") == "llvm":
        config["num-cores"] = int(num_cores)
    if target.host is not None:
        config["host"] = dict(target.host)
    return tvm.target.Target(config)


@contextmanager
def runner_threads(tvm_target: tvm.target.Target):
    """Within: TVM_NUM_THREADS is the target's "num-cores", so a local runner's worker processes
    (which inherit the environment when they start) run each candidate on as many threads as the
    build will; the environment is restored after. TVM's pool reads TVM_NUM_THREADS first, then
    OMP_NUM_THREADS, then the core count."""
    cores = tvm_target.attrs.get("num-cores")
    if cores is None:
        yield
        return
    before = os.environ.get("TVM_NUM_THREADS")
    os.environ["TVM_NUM_THREADS"] = str(int(cores))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TVM_NUM_THREADS", None)
        else:
            os.environ["TVM_NUM_THREADS"] = before


@contextmanager
def sigint_noted():
    """Within: a Ctrl-C is noted (in the yielded list) before it raises KeyboardInterrupt as usual.

    MetaSchedule runs its search's Python parts (cost model, callbacks) as callbacks from C++, and
    tvm_ffi hands an exception raised there back as a RuntimeError: a Ctrl-C that lands in one
    comes out as a traceback, not as an interrupt. The note lets the caller raise it again as one.
    """
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # only there can it be set
        yield noted
        return
    previous = signal.getsignal(signal.SIGINT)

    def note(signum, frame):
        noted.append(signum)
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)


def extract_tuning_tasks(mod: tvm.IRModule, target: TargetSpec,
                         tvm_target: tvm.target.Target | None = None) -> list[ms.ExtractedTask]:
    """MetaSchedule tasks of `mod` (a Relax module, after our rewrite pass): its fused PrimFuncs
    as the build sees them, identical ones merged (their `weight` counts the calls)."""
    tvm_target = tvm_target or tuning_target(target)
    tasks = ms.relax_integration.extract_tasks(fuse(mod, target), tvm_target)
    return [task for task in tasks if not task.dispatched[0].attrs.get("tirx.is_scheduled", False)]


def seed_rules(target: tvm.target.Target) -> list:
    """The default schedules to seed tuning with: ours on llvm, dlight's GPU rules elsewhere.

    This is the hook for better start points: a rule here is a dlight ScheduleRule whose
    `apply(func, target, False)` returns a traced Schedule (or None when it does not apply).
    """
    if target.kind.name == "llvm":
        from .schedule import default_cpu_rules

        return default_cpu_rules()
    from tvm.s_tir import dlight

    return [dlight.gpu.Matmul(), dlight.gpu.GEMV(), dlight.gpu.Reduction(),
            dlight.gpu.GeneralReduction(), dlight.gpu.Fallback()]


def seed_schedule(workload: tvm.IRModule, target: tvm.target.Target):
    """The first seed rule's schedule of `workload` ("main"), replayed from its trace as the
    database will replay it; None when no rule applies or the trace does not replay."""
    from tvm import s_tir

    func = workload["main"]
    for rule in seed_rules(target):
        try:
            scheduled = rule.apply(func, target, False)
        except Exception:  # noqa: BLE001 - a rule that fails on this function just does not apply
            continue
        if scheduled is None:
            continue
        replayed = s_tir.Schedule(workload)
        try:
            scheduled.trace.apply_to_schedule(replayed, remove_postproc=False)
        except Exception:  # noqa: BLE001 - not replayable: the database could not apply it either
            return None
        return replayed
    return None


def trace_key(trace) -> str:
    """A schedule's identity across records: its trace as the database stores it."""
    return str(trace.as_json(remove_postproc=False))


def seed_key(workload: tvm.IRModule, target: tvm.target.Target) -> str | None:
    """The trace key of our schedule of `workload` for `target` (None where no rule applies).
    Pass the target a record was tuned for: its thread count shapes our tiles."""
    ours = seed_schedule(workload, target)
    return trace_key(ours.trace) if ours is not None else None


def _device_type(target: tvm.target.Target) -> str:
    return "cpu" if target.kind.name == "llvm" else target.kind.name


def _valid(seconds) -> float | None:
    if not seconds:
        return None
    value = sum(float(s) for s in seconds) / len(seconds)
    return value if value < _FAILED_SECONDS else None


# --- progress -------------------------------------------------------------------------------------


@derived_object
class _Progress(PyMeasureCallback):
    """Counts each task's measurements, keeps its best, and reports a line per batch."""

    def __init__(self, report: Callable[[str], None] | None):
        super().__init__()
        self.report = report
        self.tasks: list[TaskReport] = []
        self.labels: list[str] = []

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        task = self.tasks[task_id]
        task.measured += len(runner_results)
        for result in runner_results:
            seconds = _valid(result.run_secs) if result.error_msg is None else None
            if seconds is not None and (task.best_seconds is None or seconds < task.best_seconds):
                task.best_seconds = seconds
        failed = sum(result.error_msg is not None for result in runner_results)
        if self.report is not None and runner_results:  # empty: the search found nothing new
            self.report(f"{self.labels[task_id]} {task.name}: {_trials(task)} trials, "
                        f"best {_ms(task.best_seconds)} ms (ours {_ms(task.seed_seconds)} ms)"
                        + (f", {failed} failed" if failed else ""))


# --- tuning ---------------------------------------------------------------------------------------


def _fastest_repeat(rt_mod, device, evaluator_config, repeated_args) -> list[float]:
    """The fastest of the evaluator's repeats, as the candidate's one time.

    MetaSchedule ranks records by the mean of their times; on a shared machine one repeat caught
    by another process's burst then outweighs the rest (parallel kernels suffer most, a descheduled
    thread stalls the fork-join), and slower schedules were kept over faster ones. Interference
    only ever adds time, so the minimum is the estimate.
    """
    from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common

    return [min(run_evaluator_common(rt_mod, device, evaluator_config, repeated_args))]


def _fastest_repeat_remote(_session, rt_mod, device, evaluator_config, repeated_args) -> list[float]:
    return _fastest_repeat(rt_mod, device, evaluator_config, repeated_args)


def _runner(target: TargetSpec, tvm_target, rpc: str | None, key: str | None, timeout_sec: float):
    evaluator = ms.runner.EvaluatorConfig(number=1, repeat=REPEATS, min_repeat_ms=MIN_REPEAT_MS,
                                          enable_cpu_cache_flush=False)
    if rpc is None:
        reason = local_unavailable_reason(target)
        if reason is not None:
            raise TargetError(f"{reason}; tune it on a board "
                              f"with --rpc HOST:PORT (a tracker) and --key")
        return ms.runner.LocalRunner(timeout_sec=timeout_sec, evaluator_config=evaluator,
                                     f_run_evaluator=_fastest_repeat)
    from .remote import board_keys, parse_tracker, tracker_summary

    key = key or target.rpc_key
    if key is None:
        raise TargetError(f"target {target.name} has no rpc_key; give --key")
    host, port = parse_tracker(rpc)
    boards = board_keys(tracker_summary(rpc)).get(key, 0)
    if boards == 0:
        raise DeviceError(f"no board with key {key!r} on the RPC tracker at {rpc}")
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key,
                                 session_timeout_sec=int(timeout_sec))
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=boards,
                               f_run_evaluator=_fastest_repeat_remote)


def _measure(mods, args_info, builder, runner, tvm_target) -> list[list[float] | None]:
    """Build and time each schedule's module in one batch: its run seconds, [] where the run failed,
    None where the build failed (nothing was measured)."""
    built = builder.build([BuilderInput(mod, tvm_target) for mod in mods])
    ok = [i for i, result in enumerate(built) if result.error_msg is None]
    futures = runner.run([ms.runner.RunnerInput(built[i].artifact_path, _device_type(tvm_target), args_info[i])
                          for i in ok])
    seconds: list[list[float] | None] = [None] * len(mods)
    for i, future in zip(ok, futures):
        result = future.result()
        seconds[i] = list(result.run_secs) if result.error_msg is None and result.run_secs else []
    return seconds


def _measure_seed(task: TaskReport, sch, builder, runner, database, tvm_target, args_info) -> None:
    """Measure `sch` (the task's seed) unless the database has it, and commit it."""
    workload = database.commit_workload(task.workload)
    key = task.seed_key = trace_key(sch.trace)
    for record in database.get_top_k(workload, 1 << 30):
        if trace_key(record.trace) == key:
            task.seed_seconds = _valid(record.run_secs)
            return
    seconds = _measure([sch.mod], [args_info], builder, runner, tvm_target)[0]
    if seconds is None:
        return
    seconds = seconds or [1e10]  # a failed run is recorded, so it is not measured again
    database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, seconds, tvm_target, args_info))
    task.measured += 1
    task.seed_seconds = _valid(seconds)


def _confirm_best(task: TaskReport, database, builder, runner, tvm_target, top: int) -> int:
    """Measure the task's `top` best schedules and its seed again, back to back, and commit the
    new times; returns how many were measured.

    The database applies the record with the lowest time, and a schedule cannot run faster than
    the machine allows, so a fresh record corrects an overestimated schedule (a slow outlier) and
    a genuinely fast one keeps its place.
    """
    if top <= 0 or not database.has_workload(task.workload):
        return 0
    workload = database.commit_workload(task.workload)
    best_per_schedule = {}  # trace key -> its best record, best schedules first
    for record in database.get_top_k(workload, 1 << 30):
        if _valid(record.run_secs) is not None:
            best_per_schedule.setdefault(trace_key(record.trace), record)
    keys = list(best_per_schedule)[:top]
    if task.seed_key in best_per_schedule and task.seed_key not in keys:
        keys.append(task.seed_key)
    if len(keys) < 2:  # one schedule only: nothing to rank
        return 0
    chosen = [best_per_schedule[key] for key in keys]
    candidates = [record.as_measure_candidate() for record in chosen]
    seconds = _measure([c.sch.mod for c in candidates], [c.args_info for c in candidates], builder, runner,
                       tvm_target)
    for record, measured in zip(chosen, seconds):
        if measured:
            database.commit_tuning_record(ms.database.TuningRecord(
                record.trace, workload, measured, tvm_target, record.args_info))
    return sum(measured is not None for measured in seconds)


def _task_records(task: TaskReport, database) -> list:
    """Every record of `task`'s workload, fastest first."""
    if not database.has_workload(task.workload):
        return []
    return database.get_top_k(database.commit_workload(task.workload), 1 << 30)


def _seed_best(task: TaskReport, records: list) -> float | None:
    """Our schedule's fastest valid record among `records`. The seed is timed again after the search
    (`_confirm_best`), and its first timing, before the search, was up to 1.9x slower on a Zen 3
    (ResNet-18 224²): reported as "ours", it made our own re-measured record look like a searched win."""
    if task.seed_key is None:
        return None
    times = [_valid(r.run_secs) for r in records if trace_key(r.trace) == task.seed_key]
    return min((t for t in times if t is not None), default=None)


def _existing_records(records: list) -> tuple[int, float | None]:
    """How many records there are, and the fastest one's valid seconds (records come fastest first)."""
    return len(records), (_valid(records[0].run_secs) if records else None)


def _even_batch(trials: int, batch_size: int) -> int:
    """Batch size near `batch_size` that splits `trials` evenly: each batch costs one search (tens of
    seconds once the cost model steers it), so 19 trials go as one batch, not as 16 + 3."""
    batches = max(1, round(trials / batch_size))
    return -(-trials // batches)


def _weights(tasks: list[TaskReport]) -> list[float]:
    """Each task's share of latency: calls x seed seconds; unseeded tasks by FLOPs at the seeded
    tasks' median seconds per FLOP (FLOPs alone when nothing is seeded)."""
    rates = sorted(t.seed_seconds / t.flops for t in tasks if t.seed_seconds and t.flops > 0)
    rate = rates[len(rates) // 2] if rates else 1.0
    return [t.calls * (t.seed_seconds if t.seed_seconds else max(t.flops, 1.0) * rate) for t in tasks]


def tune_module(mod: tvm.IRModule, target: str | TargetSpec, database_dir: str | Path | None = None, *,
                trials: int | None = None, min_trials_per_task: int = MIN_TRIALS_PER_TASK,
                seed_schedules: bool = True, spread: bool = True, rpc: str | None = None,
                key: str | None = None, num_cores: int | None = None, builder_workers: int | None = None,
                batch_size: int = BATCH_SIZE, warmup_samples: int = WARMUP_SAMPLES,
                population_size: int = POPULATION_SIZE, timeout_sec: float = BUILD_TIMEOUT_S,
                random_seed: int | None = None, confirm_top: int = CONFIRM_TOP,
                progress: Callable[[str], None] | None = print,
                measure_callbacks: Sequence = ()) -> TuneResult:
    """Tune the kernels of `mod` (a Relax module, after our rewrite pass) into `database_dir`.

    `trials`: the model's budget (default DEFAULT_TRIALS_PER_TASK per task), counting the records
    its tasks already have; `min_trials_per_task`: the floor per task where the budget allows.
    `seed_schedules` / `spread`: see the module docstring (`spread=False` hands the budget to
    TVM's gradient task scheduler instead). `rpc` ("HOST:PORT" of a tracker) and `key` (default: the
    target's rpc_key) measure on a board; without them the target must run here. `batch_size`
    candidates are built and measured at a time; `population_size`, `warmup_samples`: of the
    evolutionary search and of the XGBoost cost model (shared by the tasks). `confirm_top`: best
    schedules measured again with the seed after each task's search (0: none). `progress`
    receives one line per measured batch; `measure_callbacks` (MetaSchedule MeasureCallbacks) run
    after each batch is committed to the database.
    """
    started = time.perf_counter()
    target = load_target(target) if not isinstance(target, TargetSpec) else target
    database_dir = Path(database_dir) if database_dir is not None else default_database_dir(target)
    database_dir.mkdir(parents=True, exist_ok=True)
    tvm_target = tuning_target(target, num_cores)
    with database_lock(database_dir), runner_threads(tvm_target):
        database = open_database(database_dir, target)
        runner = _runner(target, tvm_target, rpc, key, timeout_sec)
        register_cpu_intrinsics(tvm_target)
        tasks = [TaskReport(task.task_name, int(task.weight),
                            float(tvm.s_tir.analysis.estimate_tir_flops(task.dispatched[0])), task.dispatched[0])
                 for task in extract_tuning_tasks(mod, target, tvm_target)]
        result = TuneResult(target.name, database_dir, tasks, 0.0)
        builder = PooledBuilder(max_workers=builder_workers, timeout_sec=timeout_sec,
                                cross_compiler=target.cross_compiler)
        try:
            with sigint_noted() as ctrl_c:
                search = _Search(trials, min_trials_per_task, seed_schedules, spread, batch_size,
                                 warmup_samples, population_size, random_seed, confirm_top)
                _tune_tasks(tasks, database, builder, runner, tvm_target, search, progress,
                            list(measure_callbacks))
        except BaseException as error:
            result.interrupted = True
            if progress is not None:
                progress(f"interrupted: the {sum(t.measured for t in tasks)} measurements of this run "
                         f"are kept in {database_dir}; rerun to continue")
            if ctrl_c and not isinstance(error, KeyboardInterrupt):
                raise KeyboardInterrupt from error
            raise
        finally:
            builder.shutdown()
            for task in tasks:
                records = _task_records(task, database)
                task.best_seconds = _existing_records(records)[1]
                task.seed_seconds = _seed_best(task, records) or task.seed_seconds
            result.seconds = time.perf_counter() - started
    return result


@dataclass(frozen=True)
class _Search:
    """tune_module's search options, as its docstring says."""

    trials: int | None
    min_trials_per_task: int
    seed_schedules: bool
    spread: bool
    batch_size: int
    warmup_samples: int
    population_size: int
    random_seed: int | None
    confirm_top: int


def _tune_tasks(tasks, database, builder, runner, tvm_target, search: _Search, progress, measure_callbacks) -> None:
    trials, min_trials_per_task, spread, batch_size = (search.trials, search.min_trials_per_task, search.spread,
                                                       search.batch_size)
    for task in tasks:
        if search.seed_schedules and (sch := seed_schedule(task.workload, tvm_target)) is not None:
            # the kernel as measured: a weight whose layout the schedule changes is passed changed
            args_info = ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
            _measure_seed(task, sch, builder, runner, database, tvm_target, args_info)
        task.existing, task.best_seconds = _existing_records(_task_records(task, database))
        task.existing -= task.measured  # the seed measured just now is this run's
    total = trials if trials is not None else DEFAULT_TRIALS_PER_TASK * len(tasks)
    budgets = allocate_trials(_weights(tasks), total, min_trials_per_task) if spread else [0] * len(tasks)
    for task, budget in zip(tasks, budgets):
        task.budget = budget
    cores = int(tvm_target.attrs.get("num-cores", os.cpu_count() or 1))
    cost_model = ms.cost_model.XGBModel(num_warmup_samples=search.warmup_samples, num_tuning_cores=cores)
    seeds = (ms.utils.fork_seed(search.random_seed, n=len(tasks)) if search.random_seed is not None
             else [-1] * len(tasks))
    tracker = _Progress(progress)
    callbacks = ms.measure_callback.MeasureCallback.create("default") + [tracker] + measure_callbacks

    def context(task: TaskReport, rand_state: int) -> ms.TuneContext:
        strategy = ms.search_strategy.EvolutionarySearch(population_size=search.population_size,
                                                         init_min_unmeasured=min(50, search.population_size))
        return ms.TuneContext(mod=task.workload, target=tvm_target, space_generator="post-order-apply",
                              search_strategy=strategy, task_name=task.name,
                              rand_state=rand_state, num_threads=cores).clone()

    def run(selected: list[TaskReport], rand_states, remaining: int, per_task: int, scheduler: str,
            batch: int) -> None:
        tracker.tasks = selected
        ms.tune_tasks(tasks=[context(t, s) for t, s in zip(selected, rand_states)],
                      task_weights=[float(t.calls) for t in selected],
                      work_dir=os.path.dirname(str(database.path_workload)),
                      max_trials_global=remaining, max_trials_per_task=per_task,
                      num_trials_per_iter=batch, builder=builder, runner=runner,
                      database=database, cost_model=cost_model, measure_callbacks=callbacks,
                      task_scheduler=scheduler)

    if not spread:  # TVM's own allocation, for comparison: the gradient scheduler over all tasks
        remaining = total - sum(t.existing + t.measured for t in tasks)
        if remaining > 0:
            tracker.labels = [f"[{i + 1}/{len(tasks)}]" for i in range(len(tasks))]
            run(tasks, seeds, remaining, remaining, "gradient", batch_size)
        return
    for index, (task, rand_state) in enumerate(zip(tasks, seeds)):
        remaining = task.budget - task.existing - task.measured
        label = f"[{index + 1}/{len(tasks)}]"
        if remaining <= 0:
            if progress is not None:
                progress(f"{label} {task.name}: {_trials(task)} trials in the database already, "
                         f"best {_ms(task.best_seconds)} ms")
            continue
        tracker.labels = [label]
        run([task], [rand_state], remaining, remaining, "round-robin", _even_batch(remaining, batch_size))
        task.confirmed = _confirm_best(task, database, builder, runner, tvm_target, search.confirm_top)


def tune_model(model, target: str = "x86-avx2", method: str = "tai", rank="energy:0.95", rank_file=None,
               example_input=None, method_options=None, database_dir: str | Path | None = None,
               **options) -> TuneResult:
    """Tune `model` (as `compile_model` takes it) rewritten by `method` at `rank`, for `target`,
    into `database_dir` (default ``schedules/<target>/``); `options`: see tune_module."""
    from .api import prepare_model

    prepared = prepare_model(model, method=method, rank=rank, rank_file=rank_file,
                             example_input=example_input, method_options=method_options)
    return tune_module(prepared.mod, target, database_dir, **options)


def database_coverage(mod: tvm.IRModule, target: str | TargetSpec,
                      database_dir: str | Path | None = None) -> dict[str, float | None]:
    """For each kernel (task) of `mod`, the seconds of its best record in the database, or None
    where it has none and the build falls back to the default schedule."""
    target = load_target(target) if not isinstance(target, TargetSpec) else target
    database_dir = Path(database_dir) if database_dir is not None else default_database_dir(target)
    database = open_database(database_dir, target)
    coverage = {}
    for task in extract_tuning_tasks(mod, target):
        workload = task.dispatched[0]
        best = None
        if database.has_workload(workload):
            records = database.get_top_k(database.commit_workload(workload), 1)
            best = _valid(records[0].run_secs) if records else None
        coverage[task.task_name] = best
    return coverage


def outdated_kernels(mod: tvm.IRModule, target: str | TargetSpec,
                     database_dir: str | Path | None = None) -> list[str]:
    """Kernels of `mod` whose database records were all tuned against other default schedules
    than today's: none of them is the schedule our rules now give the kernel.

    The build applies a kernel's best record, and a tuning run records our schedule next to the
    searched ones, so a database tuned before our schedules changed may apply a record slower
    than today's default. Tuning again fixes it (it measures today's schedule against the
    records, and costs one measurement per such kernel plus the re-measurement of the best).
    Each record is compared with our schedule for the target it was tuned for (its thread count
    shapes our tiles), so the answer does not depend on this machine.
    """
    target = load_target(target) if not isinstance(target, TargetSpec) else target
    database_dir = Path(database_dir) if database_dir is not None else default_database_dir(target)
    database = open_database(database_dir, target)
    outdated = []
    for task in extract_tuning_tasks(mod, target):
        workload = task.dispatched[0]
        if not database.has_workload(workload):
            continue
        records = database.get_top_k(database.commit_workload(workload), 1 << 30)
        if not records:
            continue
        ours = seed_key(workload, records[0].target)
        if ours is not None and ours not in {trace_key(r.trace) for r in records}:
            outdated.append(task.task_name)
    return outdated

