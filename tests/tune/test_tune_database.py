"""Tuning into a database and building from it: round trip, resumption, damaged databases."""

import json
import os
import signal

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax, s_tir
from tvm.s_tir import meta_schedule as ms

import tune_models
from conftest import FAST, TRIALS
from tvm_lowrank.api import prepare_model
from tvm_lowrank.build import build, compile_pipeline, run_vm
from tvm_lowrank.database import RECORD_FILE, WORKLOAD_FILE, check_database, merge_database
from tvm_lowrank.errors import TuningDatabaseError
from tvm_lowrank.targets import load_target
from tvm_lowrank.applied_records import MIN_TUNED_GAIN, choose_record
from tvm_lowrank.tune import (_valid, database_coverage, extract_tuning_tasks, outdated_kernels, seed_key, trace_key,
                              tune_module)


def _same_schedule(func: tvm.tirx.PrimFunc, other: tvm.tirx.PrimFunc) -> bool:
    """Same loop nest and body, whatever the functions' names, attributes and buffer variables."""
    return tvm_ffi.structural_equal(func.body, other.body, map_free_vars=True)


def _files(database):
    return {name: (database / name).read_bytes() for name in (WORKLOAD_FILE, RECORD_FILE)}


def test_every_task_has_its_budget_of_records(tuned):
    tasks = tuned.result.tasks
    assert len(tasks) == 2
    assert sum(task.budget for task in tasks) == TRIALS
    info = check_database(tuned.database, tuned.target)
    assert info.workloads == 2
    assert sorted(info.records_per_workload) == sorted(t.budget + t.confirmed for t in tasks)
    for task in tasks:
        assert task.measured == task.budget  # the seed and the search, all measured this run
        assert task.seed_seconds is not None and task.best_seconds <= task.seed_seconds
    assert any("best" in line and "ours" in line for line in tuned.lines), tuned.lines


def test_build_applies_the_chosen_record_to_every_kernel(tuned):
    coverage = database_coverage(tuned.mod, tuned.target, tuned.database)
    assert set(coverage) == {task.name for task in tuned.result.tasks}
    assert all(seconds is not None for seconds in coverage.values())
    lowered = compile_pipeline(tuned.target, tuned.database)(tuned.mod)
    database = ms.database.JSONDatabase(work_dir=str(tuned.database))
    for task in extract_tuning_tasks(tuned.mod, tuned.target):
        workload = task.dispatched[0]
        records = database.get_top_k(database.commit_workload(workload), 1 << 30)
        chosen = choose_record(records, seed_key(workload, records[0].target))
        expected = s_tir.Schedule(workload)
        chosen.trace.apply_to_schedule(expected, remove_postproc=False)
        built = lowered[task.task_name]
        assert _same_schedule(built, expected.mod["main"]), task.task_name
        assert built.attrs["tirx.is_scheduled"]


def _searched_record(tuned, database_dir):
    """(database, workload, a record of the first task whose schedule is not ours, its schedule,
    our schedule's record), or a skip when the search measured only ours."""
    untuned = compile_pipeline(tuned.target)(tuned.mod)
    database = ms.database.JSONDatabase(work_dir=str(database_dir))
    task = extract_tuning_tasks(tuned.mod, tuned.target)[0]
    workload = database.commit_workload(task.dispatched[0])
    records = database.get_top_k(workload, 100)
    # ours as the build finds it (by trace key, the best-ranked): another trace that happens to
    # lower to the same schedule may have a faster record, and a lead over that is not the lead
    # choose_record weighs
    ours = next((r for r in records if trace_key(r.trace) == seed_key(workload.mod, r.target)), None)
    searched = None
    for record in records:
        candidate = s_tir.Schedule(task.dispatched[0])
        record.trace.apply_to_schedule(candidate, remove_postproc=False)
        if not _same_schedule(candidate.mod["main"], untuned[task.task_name]):
            searched = (record, candidate)
            break
    if searched is None or ours is None:
        pytest.skip("the search measured nothing but our own schedule")
    return database, workload, task, untuned, searched, ours


def test_a_searched_schedule_that_wins_replaces_ours(tuned, database_copy):
    """Whether the few trials here beat our schedule is up to chance (and machine load); so one
    of the search's own schedules is made the fastest, and the build must switch to it."""
    database, workload, task, untuned, (record, candidate), _ = _searched_record(tuned, database_copy)
    database.commit_tuning_record(ms.database.TuningRecord(
        record.trace, workload, [1e-9], record.target, record.args_info))
    lowered = compile_pipeline(tuned.target, database_copy)(tuned.mod)
    assert _same_schedule(lowered[task.task_name], candidate.mod["main"])
    assert not _same_schedule(lowered[task.task_name], untuned[task.task_name])


@pytest.mark.parametrize("lead, replaces", [(MIN_TUNED_GAIN / 2, False), (MIN_TUNED_GAIN * 2, True)])
def test_a_searched_schedule_replaces_ours_only_with_a_clear_lead(tuned, database_copy, lead, replaces):
    """Records are timed minutes apart on a machine whose speed drifts: a few percent is noise.
    The lead is over our schedule's best-ranked record, as `choose_record` weighs it (the mean of
    its repeats: against their minimum, a noisy run made a 5% lead look like 10%)."""
    database, workload, task, untuned, (record, candidate), ours = _searched_record(tuned, database_copy)
    ours_seconds = _valid(ours.run_secs)
    database.commit_tuning_record(ms.database.TuningRecord(
        record.trace, workload, [ours_seconds * (1 - lead)], record.target, record.args_info))
    assert trace_key(database.get_top_k(workload, 1)[0].trace) == trace_key(record.trace)
    built = compile_pipeline(tuned.target, database_copy)(tuned.mod)[task.task_name]
    assert _same_schedule(built, candidate.mod["main"]) == replaces
    assert _same_schedule(built, untuned[task.task_name]) == (not replaces)


def test_the_report_times_our_schedule_by_its_fastest_record(tuned):
    """Ours is timed before the search and again after it; "ours" in the report is the faster
    time, the one the build weighs, so a re-measured seed is not shown as a searched win."""
    database = ms.database.JSONDatabase(work_dir=str(tuned.database))
    for task in tuned.result.tasks:
        records = database.get_top_k(database.commit_workload(task.workload), 1 << 30)
        ours = [_valid(r.run_secs) for r in records if trace_key(r.trace) == task.seed_key]
        assert len(ours) >= 2, task.name  # the seed and its confirmation
        assert task.seed_seconds == min(ours) and task.best_seconds <= task.seed_seconds


def test_tuned_build_matches_untuned_build(tuned):
    x = tune_models.example_input().numpy()
    tuned_vm = relax.VirtualMachine(build(tuned.mod, tuned.target, database_dir=tuned.database), tvm.cpu())
    plain_vm = relax.VirtualMachine(build(tuned.mod, tuned.target), tvm.cpu())
    np.testing.assert_allclose(run_vm(tuned_vm, x), run_vm(plain_vm, x), rtol=1e-5, atol=1e-5)


def test_rerun_and_shared_workloads_measure_nothing(tuned, database_copy):
    before = _files(database_copy)
    again = tune_module(tuned.mod, tuned.target, database_copy, trials=TRIALS, min_trials_per_task=3,
                        progress=None, **FAST)
    assert again.measured == 0 and _files(database_copy) == before
    # another model whose only kernel is TwoConvs' second: found in the database, not tuned again
    model, example = tune_models.second_conv_only()
    other = prepare_model(model, "dense", example_input=example).mod
    shared = tune_module(other, tuned.target, database_copy, trials=3, min_trials_per_task=3,
                         progress=None, **FAST)
    assert [task.measured for task in shared.tasks] == [0] and _files(database_copy) == before


def test_records_tuned_before_our_schedules_changed_are_found_and_retuning_fixes_them(
        tuned, database_copy, request):
    assert outdated_kernels(tuned.mod, tuned.target, database_copy) == []
    request.getfixturevalue("schedules_changed")
    outdated = outdated_kernels(tuned.mod, tuned.target, database_copy)
    assert sorted(outdated) == sorted(task.name for task in tuned.result.tasks)
    again = tune_module(tuned.mod, tuned.target, database_copy, trials=TRIALS, min_trials_per_task=3,
                        progress=None, **FAST)
    assert again.measured == len(outdated)  # today's schedule per kernel; the budget was spent
    assert outdated_kernels(tuned.mod, tuned.target, database_copy) == []


class _Interrupt(Exception):
    pass


@ms.derived_object if hasattr(ms, "derived_object") else tvm.ir.utils.derived_object
class _AfterMeasured(ms.measure_callback.PyMeasureCallback):
    """Calls `action(seen)` once `limit` candidates were measured: a run stopped mid-way."""

    def __init__(self, limit: int, action):
        super().__init__()
        self.limit, self.action, self.seen = limit, action, 0

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        self.seen += len(runner_results)
        if self.seen >= self.limit:
            self.action(self.seen)


def _raise_interrupt(seen: int):
    raise _Interrupt(f"stopped after {seen}")


def _send_ctrl_c(seen: int):
    os.kill(os.getpid(), signal.SIGINT)


def test_interrupted_run_keeps_its_records_and_a_rerun_measures_only_the_rest(tuned, tmp_path):
    database = tmp_path / "db"
    options = dict(trials=TRIALS, min_trials_per_task=3, progress=None, **FAST)
    with pytest.raises(Exception, match="stopped after 2"):
        tune_module(tuned.mod, tuned.target, database, measure_callbacks=[_AfterMeasured(2, _raise_interrupt)],
                    **options)
    kept = check_database(database, tuned.target).records
    assert kept == 2 + 2  # both seeds, then the first batch of the search
    resumed = tune_module(tuned.mod, tuned.target, database, **options)
    assert resumed.measured == TRIALS - kept
    assert check_database(database, tuned.target).records == TRIALS + sum(t.confirmed for t in resumed.tasks)
    assert sum(task.existing for task in resumed.tasks) == kept


def test_ctrl_c_in_a_search_callback_stops_tuning_as_an_interrupt_and_keeps_records(tuned, tmp_path):
    """The Ctrl-C lands in a Python callback called from C++, which tvm_ffi would hand back as a
    RuntimeError (a traceback for the user, not `tvm-lowrank tune`'s quiet stop)."""
    database = tmp_path / "db"
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        tune_module(tuned.mod, tuned.target, database, measure_callbacks=[_AfterMeasured(2, _send_ctrl_c)],
                    trials=TRIALS, min_trials_per_task=3, progress=None, **FAST)
    assert signal.getsignal(signal.SIGINT) is handler
    assert check_database(database, tuned.target).records == 2 + 2


def test_a_seed_timed_in_a_load_spike_is_measured_again_after_the_search(tuned, tmp_path):
    database = tmp_path / "db"
    seeds_only = tune_module(tuned.mod, tuned.target, database, trials=2, min_trials_per_task=1,
                             progress=None, **FAST)
    assert [task.confirmed for task in seeds_only.tasks] == [0, 0]  # no search, nothing to confirm
    path = database / RECORD_FILE
    spiked = []
    for line in path.read_text().splitlines():  # every seed timed at 1 s, as under a load spike
        workload, (trace, _, target, args_info) = json.loads(line)
        spiked.append(json.dumps([workload, [trace, [1.0], target, args_info]]))
    path.write_text("\n".join(spiked) + "\n")
    result = tune_module(tuned.mod, tuned.target, database, trials=TRIALS, min_trials_per_task=3,
                         progress=None, **FAST)
    ours = compile_pipeline(tuned.target)(tuned.mod)
    records = ms.database.JSONDatabase(work_dir=str(database))
    for task, report in zip(extract_tuning_tasks(tuned.mod, tuned.target), result.tasks):
        assert report.confirmed >= 2
        workload = records.commit_workload(task.dispatched[0])
        seed_times = []
        for record in records.get_top_k(workload, 100):
            candidate = s_tir.Schedule(task.dispatched[0])
            record.trace.apply_to_schedule(candidate, remove_postproc=False)
            if _same_schedule(candidate.mod["main"], ours[task.task_name]):
                seed_times.append(float(np.mean([float(t) for t in record.run_secs])))
        assert 1.0 in seed_times and min(seed_times) < 0.1, seed_times  # timed again, for real


def _truncate(database):
    path = database / RECORD_FILE
    path.write_bytes(path.read_bytes()[:-40])
    return path


def _bad_workload(database):
    path = database / WORKLOAD_FILE
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([b'{"hash": "0", "module": ""}'] + lines[1:]))  # JSON, not a workload
    return path


def _dangling_record(database):
    path = database / RECORD_FILE
    line = json.loads(path.read_text().splitlines()[0])
    line[0] = 7
    with open(path, "a") as handle:
        handle.write(json.dumps(line) + "\n")
    return path


@pytest.mark.parametrize("damage, message", [
    (_truncate, "truncated"), (_bad_workload, "not a workload entry"), (_dangling_record, "refers to workload 7"),
])
def test_damaged_database_is_reported_with_its_file_and_left_alone(tuned, database_copy, damage, message):
    path = damage(database_copy)
    before = _files(database_copy)
    with pytest.raises(TuningDatabaseError, match=message) as error:
        tune_module(tuned.mod, tuned.target, database_copy, trials=TRIALS, progress=None, **FAST)
    assert str(path) in str(error.value)
    with pytest.raises(TuningDatabaseError, match=message):
        build(tuned.mod, tuned.target, database_dir=database_copy)
    assert _files(database_copy) == before


def test_records_of_another_target_are_refused(tuned, database_copy):
    other = load_target("x86-avx2" if tuned.target.name == "x86-avx512" else "x86-avx512")
    before = _files(database_copy)
    with pytest.raises(TuningDatabaseError, match=f"another target than {other.name}.*mcpu"):
        build(tuned.mod, other, database_dir=database_copy)
    with pytest.raises(TuningDatabaseError, match=str(database_copy / RECORD_FILE)):
        tune_module(tuned.mod, other, database_copy, trials=TRIALS, progress=None, **FAST)
    assert _files(database_copy) == before


def test_merging_databases_adds_only_missing_records(tuned, tmp_path):
    merged = tmp_path / "merged"
    assert merge_database(tuned.database, merged, tuned.target) == TRIALS
    assert check_database(merged, tuned.target).records == TRIALS
    assert merge_database(tuned.database, merged, tuned.target) == 0
    assert database_coverage(tuned.mod, tuned.target, merged) == database_coverage(tuned.mod, tuned.target,
                                                                                   tuned.database)
