"""Did a schedule change help the whole model? Untuned builds of two commits, timed interleaved in one process.

    OMP_NUM_THREADS=1 python scripts/bench_commits.py --base 402459b [--cells vgg-fmnist:28 resnet18:224]
                                                      [--method tai] [--rank macs:0.25] [--rounds 11]
    OMP_NUM_THREADS=1 python scripts/bench_commits.py --base-tree /tmp/old ...   # no git history here

This VM's speed drifts by up to 2x for minutes at a time, so two benchmark runs cannot show a 5%
change. Here each cell is built (our schedules, no database) once with the code at `--base` (a
temporary `git worktree`, or `--base-tree`, a copy of its files on a machine without the history;
each build in a subprocess that imports that tree's tvm_lowrank) and
once with the working tree; the two libraries are then loaded into one process and timed in
alternating rounds, after checking that they compute the same output. Prints new/old per cell
and in how many rounds the new build was the faster.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUILD_ONE = """
import sys
repo, model, size, method, rank, out = sys.argv[1:7]
sys.path[:0] = [repo, repo + "/scripts"]
import tvm_lowrank
assert tvm_lowrank.__file__.startswith(repo), tvm_lowrank.__file__
from bench_untuned import prepare_sized
from tvm_lowrank.build import build
from tvm_lowrank.targets import host_cpu_target, load_target
build(prepare_sized(model, int(size), method, rank).mod, load_target(host_cpu_target())).export_library(out)
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    base = parser.add_mutually_exclusive_group(required=True)
    base.add_argument("--base", help="the commit to compare the working tree with")
    base.add_argument("--base-tree", type=Path, help="a copy of that commit's files (tvm_lowrank, scripts, targets)")
    parser.add_argument("--cells", nargs="+", default=["vgg-fmnist:28", "resnet18:32"], metavar="MODEL:SIZE")
    parser.add_argument("--method", default="tai")
    parser.add_argument("--rank", default="macs:0.25")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=11)
    return parser.parse_args(argv)


def build_library(repo: Path, model: str, size: int, method: str, rank: str, out: Path) -> Path:
    """Build one cell with the tvm_lowrank of `repo`, in a process of its own."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", BUILD_ONE, str(repo), model, str(size), method, rank, str(out)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return out


@contextmanager
def base_checkout(args, path: Path):
    """The base's files: `--base-tree` as given, or `--base` checked out as a temporary worktree."""
    if args.base_tree:
        yield args.base_tree.resolve()
        return
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(path), args.base], check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=False)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when TVM's thread pool starts
    sys.path[:0] = [str(REPO), str(REPO / "scripts")]
    import tvm
    from tvm import relax

    from bench_untuned import model_channels
    from tvm_lowrank.build import time_vm

    base_name = args.base or str(args.base_tree)
    with tempfile.TemporaryDirectory() as tmp, base_checkout(args, Path(tmp) / "base") as base:
        for cell in args.cells:
            model, size = cell.split(":")[0], int(cell.split(":")[1])
            libraries = {name: build_library(repo, model, size, args.method, args.rank,
                                             Path(tmp) / f"{name}-{model}-{size}.so")
                         for name, repo in (("old", base), ("new", REPO))}
            vms = {name: relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
                   for name, path in libraries.items()}
            x = np.random.default_rng(0).standard_normal((1, model_channels(model), size, size)).astype("float32")
            outputs = {name: vm["main"](tvm.runtime.tensor(x)).numpy() for name, vm in vms.items()}
            difference = float(np.abs(outputs["new"] - outputs["old"]).max() / np.abs(outputs["old"]).max())
            if difference > 1e-5:
                raise SystemExit(f"{cell}: the two builds disagree (relative difference {difference:.1e})")
            number = 20 if size < 100 else 2
            seconds = {name: [] for name in vms}
            for _ in range(args.rounds):
                for name, vm in vms.items():
                    seconds[name].append(float(np.median(time_vm(vm, x, repeat=5, number=number))))
            old, new = (float(np.median(seconds[name])) * 1e3 for name in ("old", "new"))
            faster = sum(n < o for n, o in zip(seconds["new"], seconds["old"]))
            print(f"{cell} {args.method}: {base_name} {old:.4f} ms, working tree {new:.4f} ms, new/old "
                  f"{new / old:.3f} (faster in {faster} of {args.rounds} rounds; outputs differ by {difference:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
