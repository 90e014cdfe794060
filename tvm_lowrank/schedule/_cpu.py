"""What a CPU schedule needs to know about an llvm target: SIMD width, vector registers, threads.

LLVM's own query (`tvm.target.codegen.llvm_get_vector_width`) reports the *host's* width whatever
the target's mcpu (512 for a "haswell" target on an AVX-512 host), so the width is derived from the
target's CPU features instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tvm.target import Target
from tvm.target.codegen import llvm_cpu_has_features


@dataclass(frozen=True)
class CPUVectorInfo:
    """SIMD facts of one llvm target: `bits` per vector register, `registers` architectural vector
    registers, `threads` the runtime will run parallel loops on. `fma_broadcasts`: an FMA can take
    its scalar operand broadcast from memory (AVX-512's {1toN}; NEON's by-element FMLA), so a
    broadcast weight costs no load of its own; on AVX2 each one is a separate load."""

    bits: int
    registers: int
    threads: int
    fma_broadcasts: bool = True

    def lanes(self, dtype_bits: int = 32) -> int:
        return max(self.bits // dtype_bits, 1)

    @property
    def channel_vector_width(self) -> int:
        """Output maps narrower than this get channel-vector tiles (`ChannelsLastNarrowConvWeights`).

        x86 with 256-bit vectors or wider: every map up to 56 wide. On AVX2, which has no broadcast
        operand, row tiles pay a load per weight and split a 7-lane vector (28-, 14-, 7-wide maps)
        into 3 loads, while a channel tile loads whole weight vectors and broadcasts the input
        (Zen 3, untuned, kernel times summed: ResNet-18 224² 9.1 -> 7.8 ms, 32² 234 -> 208 us,
        VGG-FMNIST 28² 148 -> 130 us, 224² 6.5 -> 6.3 ms). On AVX-512 the row tiles of 28- and
        14-wide maps fill 16 lanes no better (Xeon, 2 cores: ResNet-18 224² -12 to -22%, VGG 224²
        -12 to -18%, ResNet-18 32² -2 to -11%, VGG-FMNIST 28² +2 to +3%). 112-wide maps won some
        kernels and lost others, so they keep row tiles. NEON (unmeasured): maps narrower than a
        vector, whose row vectors would run part-empty; SSE (unmeasured) as AVX2, 8 vectors.
        """
        if self.bits >= 256:
            return 64
        return self.lanes() if self.fma_broadcasts else 8 * self.lanes()

    @property
    def l1_weight_bytes(self) -> int:
        """Weight bytes a channel tile may stream per pass before it is split into passes of input
        channels (`cpu_conv._reduction_block`): L1d (32 KiB) on AVX2, where it was measured; 0
        (never split) elsewhere."""
        return 0 if self.fma_broadcasts else 32 * 1024

    @property
    def accumulators(self) -> int:
        """Vector registers a register tile may keep as accumulators: 3/4 of them, leaving the rest
        for the loaded input vectors and the broadcast weights."""
        return self.registers * 3 // 4


def _is_arm(target: Target) -> bool:
    triple = str(target.attrs.get("mtriple", ""))
    return triple.startswith(("aarch64", "arm64", "arm"))


def cpu_vector_info(target: Target) -> CPUVectorInfo:
    """SIMD width and register count of `target` (an llvm Target) and its thread count.

    x86: AVX-512 -> 512 bits and 32 registers, AVX/AVX2 -> 256 bits and 16, else SSE (128, 16).
    Arm: NEON, 128 bits and 32 registers (SVE is not assumed). Threads: the target's "num-cores"
    when it gives one, else this machine's CPU count.
    """
    cores = target.attrs.get("num-cores")
    threads = int(cores) if cores else (os.cpu_count() or 1)
    if _is_arm(target):
        return CPUVectorInfo(128, 32, threads)
    if llvm_cpu_has_features("avx512f", target):
        return CPUVectorInfo(512, 32, threads)
    if llvm_cpu_has_features("avx", target):
        return CPUVectorInfo(256, 16, threads, fma_broadcasts=False)
    return CPUVectorInfo(128, 16, threads, fma_broadcasts=False)
