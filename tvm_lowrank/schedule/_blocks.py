"""Block-structure queries the CPU rules share: iterator kinds, constant extents, fused epilogues."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis.common_analysis import get_sblockrealize
from tvm.sym.pattern import detect_linear_equation


def iter_kinds(block: s_tir.SBlock) -> str:
    """"S"/"R"/"O" per block iterator: spatial, reduction, other."""
    kinds = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(kinds.get(iv.iter_type, "O") for iv in block.iter_vars)


def int_value(expr) -> int | None:
    """The value of a constant integer expression, None for anything symbolic."""
    return int(expr.value) if isinstance(expr, tirx.IntImm) else None


def uses(expr, var) -> bool:
    """Whether `expr` depends on `var` (its linear coefficient is not a constant 0)."""
    coeffs = detect_linear_equation(expr, [var])
    return not (len(coeffs) == 2 and int_value(coeffs[0]) == 0)


def has_trivial_binding(sch: s_tir.Schedule, block_rv) -> bool:
    """Whether each of the block's iterators is bound to its own loop, in loop order."""
    loops = sch.get_loops(block_rv)
    values = get_sblockrealize(sch, block_rv).iter_values
    return len(loops) == len(values) and all(
        value.same_as(sch.get(loop).loop_var) for value, loop in zip(values, loops))


def epilogue_chain(sch: s_tir.Schedule, block_rv) -> list | None:
    """The injective blocks fused after `block_rv`, each the only consumer of the one before;
    None when its result fans out or feeds another reduction (not a chain an epilogue can inline)."""
    epilogue, current = [], block_rv
    while len(consumers := sch.get_consumers(current)) == 1:
        current = consumers[0]
        if set(iter_kinds(sch.get(current))) != {"S"}:
            return None
        epilogue.append(current)
    return None if consumers else epilogue


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in divisors(n) if d <= max(at_most, 1))


ACCUMULATOR_SCOPE = "global"


def register_accumulator(sch: s_tir.Schedule, block_rv, epilogue: list):
    """Give the reduction `block_rv` its own accumulator buffer (the register tile) and return the
    block that writes the function's output: the epilogue's last block, with the rest of the
    epilogue inlined into it, or a copy-out block when there is no epilogue.

    The buffer's scope is "global", not "local": TVM puts a "global" buffer under 1 KiB on the
    stack, where LLVM keeps the tile in registers, but every "local" one in
    TVMBackendAllocWorkspace memory, which LLVM cannot tell from the kernel's other workspace
    buffers (a padded input): it then reloads and stores the accumulators around every input load
    (VGG-FMNIST's 1->32 1x3 conv at 28x28: 9.7 us, 4.7 us with the padded input passed in as an
    argument). Same process, interleaved: VGG-FMNIST 28x28 Tai 7-12% faster, ResNet-18 32x32 3-4%,
    the 224x224 models 0-3% (x86-avx512, 2 threads). Tiles of 1 KiB or more (16 channels x 16
    lanes on AVX-512) stay on the stack through our TIR pipeline (`stack_buffers`).
    """
    if not epilogue:
        return sch.cache_write(block_rv, 0, ACCUMULATOR_SCOPE)
    for block in epilogue[:-1]:
        sch.compute_inline(block)
    sch.set_scope(block_rv, 0, ACCUMULATOR_SCOPE)
    return epilogue[-1]


def vectorized_init(sch: s_tir.Schedule, block_rv, reduction_loop, tile_depth: int) -> None:
    """Split the reduction's zero-init out before `reduction_loop`; its loops below the first
    `tile_depth` (the task loops) are the register tile: unrolled, the innermost vectorized."""
    init = sch.decompose_reduction(block_rv, reduction_loop)
    *tile_loops, lane = sch.get_loops(init)[tile_depth:]
    for loop in tile_loops:
        sch.unroll(loop)
    sch.vectorize(lane)


def vectorize_innermost(sch: s_tir.Schedule, block_rv, lanes: int) -> None:
    """Vectorize a tile-local elementwise block's innermost loop, `lanes` at a time when that
    loop is a longer multiple of them."""
    inner = sch.get_loops(block_rv)[-1]
    extent = int_value(sch.get(inner).extent)
    if extent is not None and extent > lanes and extent % lanes == 0:
        inner = sch.split(inner, [None, lanes])[1]
    sch.vectorize(inner)
