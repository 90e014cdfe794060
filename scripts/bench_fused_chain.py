"""Would one kernel for a Tai pair beat two? A hand-written fused 3x1 -> 1x3 chain against our build's kernels.

    OMP_NUM_THREADS=1 python scripts/bench_fused_chain.py [--threads 2] [--h-tile 4,2] [--rounds 9]

The pair is VGG-FMNIST 28² Tai's second-stage chain: 64 -> 24 channels 3x1, then 24 -> 64 1x3 with
bias and ReLU, on 14x14 (`fused_conv2d6_border_pad8` and `fused_conv2d7_add1_relu1` of our build).
The fused kernel (TVMScript, below) runs one output row per parallel task: the 3x1 conv for that
row into a zero-bordered [column, channel] buffer on the stack (one channel vector x `--v-pixels`
pixels per register tile, stored a vector at a time), then the 1x3 conv reading it (`--h-tile`
channel vectors x pixels), so the intermediate never leaves L1. Both sides are checked against
numpy, then timed interleaved in one process: the fused kernel against the two kernels of our build,
each alone (their weights blocked as the build folds them), summed. The boundary between two
kernels in a model (1-4 us, `bench_kernel_sequence.py`) is not in the sum.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

C, K, N, H, W = 64, 24, 64, 14, 14  # in, middle, out channels; output rows, columns
LANES = 8  # AVX2 float32
PAIR = ("fused_conv2d6_border_pad8", "fused_conv2d7_add1_relu1")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--v-pixels", type=int, default=7, help="pixels of the 3x1 tile (divides 14)")
    parser.add_argument("--h-tile", default="4,2", help="channel vectors,pixels of the 1x3 tile")
    parser.add_argument("--rounds", type=int, default=9)
    return parser.parse_args(argv)


def fused_chain(v_pixels: int, h_vectors: int, h_pixels: int):
    """The fused PrimFunc: X (1, C, H+2, W) row-padded, WV [K/8, C, 3, 8], WH [N/8, K, 3, 8] (weights
    blocked by channel vector), B (1, N, 1, 1) -> O (1, N, H, W)."""
    from tvm.script import tirx as T

    @T.prim_func
    def chain(X: T.Buffer((1, C, H + 2, W), "float32"), WV: T.Buffer((K // LANES, C, 3, LANES), "float32"),
              WH: T.Buffer((N // LANES, K, 3, LANES), "float32"), B: T.Buffer((1, N, 1, 1), "float32"),
              O: T.Buffer((1, N, H, W), "float32")):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for y in T.parallel(H):
            mid = T.alloc_buffer((W + 2, K), "float32")  # the 3x1 conv's row, zero column at each end
            for k in T.vectorized(K):
                mid[0, k] = T.float32(0)
                mid[W + 1, k] = T.float32(0)
            for kv, xb in T.grid(K // LANES, W // v_pixels):
                acc = T.alloc_buffer((v_pixels, LANES), "float32")
                for px in T.unroll(v_pixels):
                    for lane in T.vectorized(LANES):
                        acc[px, lane] = T.float32(0)
                for c, ry in T.grid(C, 3):
                    for px in T.unroll(v_pixels):
                        for lane in T.vectorized(LANES):
                            acc[px, lane] = acc[px, lane] + X[0, c, y + ry, xb * v_pixels + px] * WV[kv, c, ry, lane]
                for px in T.unroll(v_pixels):
                    for lane in T.vectorized(LANES):
                        mid[xb * v_pixels + px + 1, kv * LANES + lane] = acc[px, lane]
            for fb, xb in T.grid(N // LANES // h_vectors, W // h_pixels):
                acc2 = T.alloc_buffer((h_vectors, h_pixels, LANES), "float32")
                for v, px in T.grid(h_vectors, h_pixels):
                    for lane in T.vectorized(LANES):
                        acc2[v, px, lane] = T.float32(0)
                for k in range(K):
                    for rx in T.unroll(3):
                        for v in T.unroll(h_vectors):
                            for px in T.unroll(h_pixels):
                                for lane in T.vectorized(LANES):
                                    acc2[v, px, lane] = (acc2[v, px, lane] + mid[xb * h_pixels + px + rx, k]
                                                         * WH[fb * h_vectors + v, k, rx, lane])
                for v in T.unroll(h_vectors):
                    for px in T.unroll(h_pixels):
                        for lane in T.vectorized(LANES):  # the channel written out twice: bound to a
                            # name (a Let in a vectorized loop), TVM 0.27 stored wrong values
                            O[0, (fb * h_vectors + v) * LANES + lane, y, xb * h_pixels + px] = T.max(
                                acc2[v, px, lane] + B[0, (fb * h_vectors + v) * LANES + lane, 0, 0], T.float32(0))

    return chain


def reference(x, wv, wh, b):
    """numpy: x (1, C, H+2, W), wv (C, 3, K), wh (K, 3, N), b (1, N, 1, 1) -> (N, H, W)."""
    mid = np.zeros((K, H, W + 2), "float32")
    for ry in range(3):
        mid[:, :, 1:W + 1] += np.einsum("chw,ck->khw", x[0, :, ry:ry + H, :], wv[:, ry, :])
    out = np.zeros((N, H, W), "float32")
    for rx in range(3):
        out += np.einsum("khw,kn->nhw", mid[:, :, rx:rx + W], wh[:, rx, :])
    return np.maximum(out + b[0], 0)


def our_kernels(target):
    """[(library, argument tensors)] of the pair as our build schedules it, on random inputs."""
    import tvm
    from tvm import s_tir
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from bench_untuned import prepare_sized
    from tvm_lowrank.build import fuse
    from tvm_lowrank.schedule import ApplyCPUSchedules
    from tvm_lowrank.schedule.tir_pipeline import tir_pipeline

    tvm_target = target.tvm_target()
    fused = fuse(prepare_sized("vgg-fmnist", 28, "tai", "macs:0.25").mod, target)
    rng = np.random.default_rng(1)
    kernels = []
    for name in PAIR:
        mod = tvm.IRModule({"main": fused[name].with_attr("global_symbol", "main")})
        with tvm_target:
            scheduled = ApplyCPUSchedules(tvm_target)(mod)
        build_mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(scheduled)
        library = tvm.tirx.build(build_mod, target=tvm_target, pipeline=tir_pipeline(tvm_target))
        infos = ArgInfo.from_entry_func(s_tir.Schedule(scheduled).mod, remove_preproc=True)
        args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in info.shape]).astype("float32"))
                for info in infos]
        kernels.append((library, args))
    return kernels


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when TVM's thread pool starts
    import tvm

    from tvm_lowrank.schedule.tir_pipeline import tir_pipeline
    from tvm_lowrank.targets import load_target

    target = load_target("x86-avx2")
    tvm_target = target.tvm_target()
    h_vectors, h_pixels = (int(v) for v in args.h_tile.split(","))
    chain = fused_chain(args.v_pixels, h_vectors, h_pixels)
    library = tvm.tirx.build(tvm.IRModule({"main": chain}), target=tvm_target, pipeline=tir_pipeline(tvm_target))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, C, H + 2, W)).astype("float32")
    x[:, :, 0] = x[:, :, -1] = 0  # the zero rows its producer writes
    wv = rng.standard_normal((C, 3, K)).astype("float32")
    wh = rng.standard_normal((K, 3, N)).astype("float32")
    b = rng.standard_normal((1, N, 1, 1)).astype("float32")
    blocked_v = wv.reshape(C, 3, K // LANES, LANES).transpose(2, 0, 1, 3).copy()
    blocked_h = wh.reshape(K, 3, N // LANES, LANES).transpose(2, 0, 1, 3).copy()
    tensors = [tvm.runtime.tensor(a) for a in (x, blocked_v, blocked_h, b, np.zeros((1, N, H, W), "float32"))]
    library["main"](*tensors)
    want = reference(x, wv, wh, b)
    error = float(np.abs(tensors[-1].numpy()[0] - want).max() / np.abs(want).max())
    if error > 1e-5:
        raise SystemExit(f"the fused kernel disagrees with numpy: relative error {error:.2e}")
    pair = our_kernels(target)

    def seconds(lib, tensors_) -> float:
        return min(lib.time_evaluator("main", tvm.cpu(), number=200, repeat=3)(*tensors_).results)

    fused_s, pair_s = [], []
    for _ in range(args.rounds):
        fused_s.append(seconds(library, tensors))
        pair_s.append(sum(seconds(lib, tensors_) for lib, tensors_ in pair))
    fused_us, pair_us = np.median(fused_s) * 1e6, np.median(pair_s) * 1e6
    print(f"{args.threads} thread(s), 3x1 tile 1 vector x {args.v_pixels} px, 1x3 tile {h_vectors} x {h_pixels}; "
          f"relative error {error:.1e}")
    print(f"fused {fused_us:.2f} us, our two kernels {pair_us:.2f} us (each alone, summed): "
          f"fused / pair {fused_us / pair_us:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
