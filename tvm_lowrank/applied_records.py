"""Which tuning record a build applies to each kernel: the database's fastest, unless our own
schedule is within MIN_TUNED_GAIN of it.

MetaSchedule applies the record with the lowest time, and records of different schedules are timed
minutes apart, on a VM whose speed moves by up to 2x for minutes at a time. A searched schedule
whose record is a few percent faster than ours often is not: on VGG-FMNIST 224x224 (Tai) a record
1.8% ahead of ours in the database ran 13% slower in the model, and the tuned build 3-7% slower
than the untuned one; on VGG-FMNIST 28x28 one 5% ahead made the whole model 4-7% slower (a 5% bar
kept it, 10% does not). Our schedule is the known quantity (it is what the untuned build runs), so a
searched one replaces it only with a clear lead; large gains (pooling, reductions, convs that our
tiles fit badly: 1.3-12x here) still win.
"""

from __future__ import annotations

from collections.abc import Sequence

import tvm

MIN_TUNED_GAIN = 0.10  # a searched record must be this much faster than ours to be applied


def choose_record(records: Sequence, ours_key: str | None, min_gain: float = MIN_TUNED_GAIN):
    """The record to apply among `records` (best first, as the database ranks them): the best,
    unless the one whose trace key is `ours_key` is within `min_gain` of it. Without our
    schedule among them (a database from before our schedules changed) the best is applied."""
    from .tune import _valid, trace_key

    if not records:
        return None
    best = records[0]
    ours = next((r for r in records if ours_key is not None and trace_key(r.trace) == ours_key), None)
    best_seconds = _valid(best.run_secs)
    ours_seconds = _valid(ours.run_secs) if ours is not None else None
    if ours_seconds is None or best_seconds is None or best_seconds < ours_seconds * (1 - min_gain):
        return best
    return ours


def applied_database(fused: tvm.IRModule, stored, min_gain: float = MIN_TUNED_GAIN):
    """An in-memory MetaSchedule database holding, for each kernel of `fused` (the build's module
    after fusion) that the database `stored` (`database.open_database`) has records for, the one
    record `choose_record` picks.

    Enter it (`with database:`) around `relax.transform.MetaScheduleApplyDatabase()`; kernels it
    has no record for keep the default schedule.
    """
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    from .tune import seed_key

    applied = ms.database.MemoryDatabase(module_equality="structural")
    for func in fused.functions.values():
        if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", False):
            continue
        workload = _normalize_mod(func)
        if not stored.has_workload(workload):
            continue
        records = stored.get_top_k(stored.commit_workload(workload), 1 << 30)
        if not records:
            continue
        record = choose_record(records, seed_key(workload, records[0].target), min_gain)
        applied.commit_tuning_record(ms.database.TuningRecord(
            record.trace, applied.commit_workload(workload), record.run_secs, record.target,
            record.args_info))
    return applied
