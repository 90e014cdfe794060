"""What a small model pays between its kernels: the model against its kernels run one after another.

    OMP_NUM_THREADS=1 python scripts/bench_kernel_sequence.py [--model vgg-fmnist] [--size 28]
                                   [--method tai] [--rank macs:0.25] [--threads 2] [--rounds 3]

One build (our untuned schedules), timed in one process, round after round, three ways:

- the VM running "main";
- one pass: every kernel of one run of "main" called once, in call order, on that run's tensors
  (`bench.kernels.kernel_functions`, from Python: about as costly per call as the VM's dispatch);
- a repeat: the same pass with every call made 3 times and then 2 times; their difference is the
  cost of a kernel run right after itself, as a kernel timed alone runs.

A pass minus a repeat is what switching to the next kernel costs beyond its own work (its code
and the data the previous kernel left in the other core's cache), printed per kernel. Run it with
--threads 1 too: the part that only 2 threads pay is the thread pool's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vgg-fmnist", help="bundled model name (tvm_lowrank.models)")
    parser.add_argument("--size", type=int, default=28, help="input height = width")
    parser.add_argument("--method", default="tai", help='"dense" or a low-rank method')
    parser.add_argument("--rank", default="macs:0.25")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args(argv)


def pass_seconds(calls, repeats: int, passes: int = 300) -> float:
    """Seconds per pass over `calls` ([(name, module, function, args)]), each call made `repeats` times."""
    def one_pass():
        for _, _, function, args in calls:
            for _ in range(repeats):
                function(*args)

    for _ in range(20):
        one_pass()
    start = time.perf_counter()
    for _ in range(passes):
        one_pass()
    return (time.perf_counter() - start) / passes


def switch_cost(one_pass_s: float, three_s: float, two_s: float, kernels: int) -> float:
    """Seconds per kernel that a pass costs beyond its kernels' repeated (warm) runs."""
    return (one_pass_s - (three_s - two_s)) / kernels


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when TVM's thread pool starts
    import tvm
    from tvm import relax

    from bench_untuned import model_channels, prepare_sized
    from tvm_lowrank.bench.kernels import kernel_functions
    from tvm_lowrank.build import build, time_vm
    from tvm_lowrank.targets import host_cpu_target, load_target

    target = load_target(host_cpu_target())
    prepared = prepare_sized(args.model, args.size, args.method, args.rank)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.so"
        build(prepared.mod, target).export_library(str(path))
        library = tvm.runtime.load_module(str(path))
        x = np.random.default_rng(0).standard_normal(
            (1, model_channels(args.model), args.size, args.size)).astype("float32")
        calls = kernel_functions(library, x)
        vm = relax.VirtualMachine(library, tvm.cpu())
        print(f"{args.model} {args.size}² {args.method}, {len(calls)} kernels, {args.threads} thread(s), "
              f"{target.name}; µs per run of the model:")
        for _ in range(args.rounds):
            model = float(np.median(time_vm(vm, x, repeat=20, number=50)))
            one, two, three = (pass_seconds(calls, k) for k in (1, 2, 3))
            print(f"  model {model * 1e6:7.1f}  one pass {one * 1e6:7.1f}  repeat {(three - two) * 1e6:7.1f}  "
                  f"switch per kernel {switch_cost(one, three, two, len(calls)) * 1e6:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
