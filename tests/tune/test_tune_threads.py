"""Local candidates are timed on the tuning target's core count, whatever OMP_NUM_THREADS says."""

import os

import pytest
from tvm.support.popen_pool import PopenPoolExecutor

from tvm_lowrank.targets import load_target
from tvm_lowrank.tune import runner_threads, tuning_target


def _threads_in_a_new_worker() -> int:
    """In a fresh worker process, as a local runner starts one: the threads TVM's pool runs kernels
    on. (A lambda, so the worker unpickles it by value, not by importing this test module.)"""
    pool = PopenPoolExecutor(max_workers=1, timeout=120)
    try:
        return pool.submit(lambda: int(__import__("tvm_ffi").get_global_func("runtime.NumThreads")())).result()
    finally:
        pool.shutdown()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: one thread either way")
def test_a_runner_worker_runs_on_the_target_cores_and_the_environment_comes_back(monkeypatch):
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as the benchmark commands set it
    assert _threads_in_a_new_worker() == 1  # what tuning measured with before runner_threads
    target = tuning_target(load_target("x86-avx2"), num_cores=2)  # TVM caps its pool at the CPU count
    with runner_threads(target):
        assert _threads_in_a_new_worker() == 2
    assert "TVM_NUM_THREADS" not in os.environ
    monkeypatch.setenv("TVM_NUM_THREADS", "1")
    with runner_threads(target):
        assert os.environ["TVM_NUM_THREADS"] == "2"
    assert os.environ["TVM_NUM_THREADS"] == "1"
