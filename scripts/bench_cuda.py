"""CUDA benchmark: our CUDA builds against PyTorch eager on the same GPU, batch 1.

    python scripts/bench_cuda.py [--cells vgg-fmnist:28 vgg-fmnist:224 resnet18:224 resnet18:32]
                                 [--rank macs:0.25] [--target cuda-sm90] [--out reports/bench-cuda]
                                 [--database DIR]

For every (model, input size), the dense program and the low-rank one (Tai chains at --rank, as our
pass chose them) are compiled by `compile_model` for the target (TVM's GPU schedules, dlight's,
untuned; with `--database`, a tuning database's records applied), verified on the GPU against
PyTorch, and timed: TVM by its evaluator (`time_artifact`, 15 samples of 20 runs), PyTorch eager
on the same GPU by wall clock around 20 calls and a synchronize (15 samples); medians. PyTorch
eager at batch 1 is bound by its per-op launch cost on the CPU, so it moves with the host's load:
compare within one run. Writes OUT/bench-cuda.json and
OUT/bench-cuda.md; exits 2 with the reason where no CUDA GPU can run the target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", metavar="MODEL:SIZE",
                        default=["vgg-fmnist:28", "vgg-fmnist:224", "resnet18:224", "resnet18:32"])
    parser.add_argument("--rank", default="macs:0.25", help="rank policy of the low-rank builds")
    parser.add_argument("--target", default="cuda-sm90")
    parser.add_argument("--out", default="reports/bench-cuda")
    parser.add_argument("--database", help="apply this tuning database (default: none, untuned)")
    return parser.parse_args(argv)


def torch_ms(module, x, calls: int = 20, samples: int = 15) -> float:
    """Median milliseconds per call of `module` on the GPU (after 20 warm-up calls)."""
    import torch

    module, x = module.to("cuda"), x.to("cuda")
    with torch.no_grad():
        for _ in range(20):
            module(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            for _ in range(calls):
                module(x)
            torch.cuda.synchronize()
            times.append((time.perf_counter() - start) / calls * 1e3)
    return float(np.median(times))


def bench_cell(model: str, size: int, method: str, args) -> dict:
    import torch

    from bench_untuned import prepare_sized
    from tvm_lowrank.api import compile_model, time_artifact
    from tvm_lowrank.reference import lowrank_program
    from tvm_lowrank.report import rows_from_records, totals

    start = time.time()
    prepared = prepare_sized(model, size, method, args.rank)
    out = Path(args.out) / "builds" / f"{model}-{size}-{method}"
    result = compile_model(prepared, target=args.target, method=method, out=out, min_top1_agreement=0.0,
                           num_random_inputs=4, database=args.database)
    build_s = time.time() - start
    timing = time_artifact(out, repeat=15, number=20)
    program = (lowrank_program(prepared.source, prepared.records) if method != "dense"
               else prepared.source.program)
    x = torch.from_numpy(np.asarray(prepared.source.example_input))
    return {"model": model, "size": size, "method": method, "build_s": round(build_s, 1),
            "verified": result.verification.passed,
            "max_rel_error_vs_pytorch": result.verification.vs_lowrank_reference.max_rel_error,
            "tvm_ms": timing.median_s * 1e3, "torch_ms": torch_ms(program, x),
            "kernels": result.artifact.manifest.get("cuda"), "database": args.database,
            "device": timing.placement.describe(),
            "conv_macs": totals(rows_from_records(prepared.records))["conv_macs_after"]}


def markdown(rows: list[dict]) -> str:
    by_cell: dict = {}
    for row in rows:
        by_cell.setdefault((row["model"], row["size"]), {})[row["method"]] = row
    lines = ["| cell | TVM dense ms | TVM low-rank ms | PyTorch dense ms | PyTorch low-rank ms | "
             "TVM LR × PyTorch LR | TVM dense / LR | MAC ratio |", "|---|---|---|---|---|---|---|---|"]
    for (model, size), cell in by_cell.items():
        dense, lowrank = cell.get("dense"), next((r for m, r in cell.items() if m != "dense"), None)
        if dense is None or lowrank is None:
            continue
        lines.append(f"| {model} {size}² | {dense['tvm_ms']:.3f} | {lowrank['tvm_ms']:.3f} | "
                     f"{dense['torch_ms']:.3f} | {lowrank['torch_ms']:.3f} | "
                     f"{lowrank['torch_ms'] / lowrank['tvm_ms']:.2f} | {dense['tvm_ms'] / lowrank['tvm_ms']:.2f} | "
                     f"{dense['conv_macs'] / lowrank['conv_macs']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    from tvm_lowrank.runner import local_unavailable_reason
    from tvm_lowrank.targets import load_target

    reason = local_unavailable_reason(load_target(args.target))
    if reason is not None:
        print(f"bench_cuda: {reason}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for cell in args.cells:
        model, size = cell.split(":")
        for method in ("dense", "tai"):
            rows.append(bench_cell(model, int(size), method, args))
            print(json.dumps(rows[-1], default=str), flush=True)
            (out / "bench-cuda.json").write_text(json.dumps(rows, indent=1, default=str))
    (out / "bench-cuda.md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
