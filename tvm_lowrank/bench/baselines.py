"""PyTorch eager and ONNX Runtime latency of the same (low-rank) model, and the CPU's peak GFLOP/s.

They run in a child process that never imports TVM: with TVM's thread pool alive in the same
process, 2-thread PyTorch was measured 15x slower (see NOTES-TVM). The parent saves the program the
build was verified against (a `.pt2`, or an `.onnx` for ONNX sources) and the input; the child
times PyTorch first, then ONNX Runtime (the PyTorch program exported to ONNX), and prints JSON.

    python -m tvm_lowrank.bench.baselines --pt2 P | --onnx O --input X.npy --threads N
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .stats import latency_stats, runs_per_sample

SAMPLE_SECONDS = 0.02  # one timing sample: about this long (at least one run)


def _samples(fn, repeat: int, sample_seconds: float = SAMPLE_SECONDS) -> list[float]:
    """Seconds per run: `repeat` samples, each the mean of enough runs to last `sample_seconds`."""
    fn()
    start = time.perf_counter()
    fn()
    number = runs_per_sample(time.perf_counter() - start, sample_seconds)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return samples


def peak_gflops(threads: int, size: int = 512) -> float:
    """GFLOP/s of a float32 matrix product (PyTorch's BLAS): the roofline's ceiling where the
    target file gives no peak_gflops. The better of `threads` threads and `threads` times one
    thread, each the fastest of 50 short samples: on a loaded machine a multi-threaded GEMM stalls
    whenever one of its threads is descheduled, and only short samples (as short as the kernels'
    own) find the moments the CPU is free."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    best = {}
    for count in sorted({1, threads}):
        torch.set_num_threads(count)
        fastest = min(_samples(lambda: torch.mm(a, b), 50, sample_seconds=0.002))
        best[count] = 2 * size ** 3 / fastest / 1e9
    torch.set_num_threads(threads)
    return max(best[threads], threads * best[1])


def onnx_cpu_session(path: Path, threads: int):
    """ONNX Runtime on the CPU with `threads` intra-op threads (and no inter-op parallelism)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_onnx(program, x, path: Path) -> None:
    """ONNX export (dynamo) of a torch program for input tensor `x`, without the exporter's chatter."""
    import torch

    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            torch.onnx.export(program, (x,), str(path), dynamo=True, input_names=["x"])
        finally:
            logging.disable(logging.NOTSET)


def child(pt2: str | None, onnx_path: str | None, input_path: str, threads: int, repeat: int,
          peak: bool) -> dict:
    import torch

    torch.set_num_threads(threads)
    x = np.load(input_path)
    result = {}
    errors = {}
    if pt2 is not None:
        program = torch.export.load(pt2).module()
        tensor = torch.from_numpy(x)
        with torch.no_grad():
            result.update(latency_stats(_samples(lambda: program(tensor), repeat), "torch"))
            if onnx_path is None:
                onnx_path = str(Path(tempfile.mkdtemp()) / "model.onnx")
                try:
                    export_onnx(program, tensor, Path(onnx_path))
                except Exception as exc:  # noqa: BLE001 - an export failure only loses the ORT column
                    errors["ort"] = f"ONNX export failed: {type(exc).__name__}: {exc}"[:300]
                    onnx_path = None
    if onnx_path is not None:
        session = onnx_cpu_session(Path(onnx_path), threads)
        feed = {session.get_inputs()[0].name: x}
        result.update(latency_stats(_samples(lambda: session.run(None, feed), repeat), "ort"))
    if peak:
        result["peak_gflops"] = peak_gflops(threads)
    result["errors"] = errors
    return result


def measure_baselines(program, onnx_model, x: np.ndarray, threads: int, repeat: int,
                      peak: bool = False, timeout: float = 600.0) -> dict:
    """Time `program` (a torch module, or None) and `onnx_model` (a ModelProto, or None: the
    program's own export) on `x` in a child process; adds "peak_gflops" when `peak`."""
    import torch

    with tempfile.TemporaryDirectory(prefix="tvm-lowrank-baselines-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "x.npy", np.ascontiguousarray(x, dtype=np.float32))
        command = [sys.executable, "-m", "tvm_lowrank.bench.baselines", "--input", str(tmp / "x.npy"),
                   "--threads", str(threads), "--repeat", str(repeat)]
        if program is not None:
            exported = torch.export.export(program, (torch.from_numpy(x),))
            torch.export.save(exported, tmp / "model.pt2")
            command += ["--pt2", str(tmp / "model.pt2")]
        if onnx_model is not None:
            (tmp / "model.onnx").write_bytes(onnx_model.SerializeToString())
            command += ["--onnx", str(tmp / "model.onnx")]
        if peak:
            command.append("--peak")
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"baseline timing process failed (exit {done.returncode}): {tail[0]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pt2")
    parser.add_argument("--onnx")
    parser.add_argument("--input", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--peak", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(child(args.pt2, args.onnx, args.input, args.threads, args.repeat, args.peak)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
