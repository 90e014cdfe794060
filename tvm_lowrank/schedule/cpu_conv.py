"""Direct-convolution (and pooling) CPU schedule for the PrimFuncs that Relax legalization + fusion emit.

What the schedule works on. `LegalizeOps` turns `relax.nn.conv2d` (NCHW/OIHW) into TOPI's
`conv` compute, and FuseOps/FuseTIR then put the ops after it into the same PrimFunc:

    pad_temp        (SSSS)      zero-padded copy of the input (a plain copy when nothing is padded)
    conv2d_nchw     (SSSSRRR)   n, f, y, x | rc, ry, rx; "group_conv2d_nchw" when groups > 1
    T_add, compute  (SSSS)      bias add, ReLU, residual add, ...: the fused epilogue, if any

and `max_pool2d`/`avg_pool2d` into `pool_max` or `pool_sum` (SSSS RR; n, c, y, x | ry, rx) after an
optional `pad_temp`, with `pool_avg` as the epilogue of an average pool. Blocks are matched by
structure (iterator kinds and buffer accesses), not by name.

The schedule (classic direct convolution, one output tile in registers):

    parallel  for n, f_outer, y_outer          (fused; one task = a block of output channels x rows;
                                                serial below MIN_PARALLEL_WORK multiply-adds)
      for x_outer                               (serial; 1 iteration unless the row is very wide)
        acc[f_inner, y_inner, x] = 0            (init, vectorized)
        for rc, ry, rx                          (reduction outside the register tile)
          unroll f_inner, y_inner, x_chunk; vectorize x_lane:
            acc[...] += input[rc, y*s + ry*d, x*s + rx*d] * weight[f, rc, ry, rx]
        epilogue on acc tile -> output          (bias/ReLU/residual, vectorized; acc never hits memory)

`acc` is a buffer of oc_block x row_block x (x_chunks x x_chunk) floats (on the stack:
`register_accumulator`, `stack_buffers`) whose indices are all constant after unrolling, so LLVM keeps it in vector
registers: each input vector load feeds `oc_block` FMAs and each broadcast weight feeds `row_block x
x_chunks` FMAs. The padding block stays a separate pass over the input (vectorized; a zero fill plus
a copy of the interior, or for medium sizes one parallel pass with bounds checks, or for pads of
rows only a copy whose row loop is split at the input's rows: `_schedule_padding`), measured
faster than both alternatives: inlining its bounds checks into the
reduction (2.5-6x slower for a 3x1 conv, even with row-only padding) and computing each task's
padded rows inside the parallel loop (recomputed once per output-channel block).

Tile sizes (`plan_tile`), for L vector lanes and A = 3/4 of the vector registers (24 on AVX-512,
12 on AVX2, 24 on NEON):

- x_chunk: the output width when it fits one vector (W <= L); else the largest divisor of W in
  [L/2, L] (28 -> 14 on AVX-512, 56 -> 14, 64 -> 16); else W itself up to 2L lanes (LLVM splits the
  vector; a prime width such as 17 runs ~5x slower per multiply-add than an aligned one, yet 2.5x
  faster than scalar code), else the largest divisor <= L. Never a tail: a predicated tail
  scalarizes the whole loop (measured 7x slower). Non-power-of-two chunks (7, 14) cost split
  loads (LLVM splits 14 lanes into 8 + 4 + 2). When the conv is one kernel column wide with unit
  strides and its input rows are as wide as its output rows (k x 1 and 1 x 1 convs: the V half of
  a Tai pair), pixel p = y * W + x reads input pixel p + ry * W, so rows and columns become one
  flat pixel axis and the vectors run across row ends, full width (`plan_flat_tile`; ResNet-18's
  56- and 28-wide 3x1 convs 10-20% faster). Computing a padded width for the other convs would
  need another conv compute than TOPI's, so it is left out.
- Budgets below count vectors of x_chunk lanes, each ceil(x_chunk / L) registers.
- oc_block: the largest divisor of the output channels per group that is <= min(16, A), when one
  input vector is shared by several output channels (dense or grouped conv); 1 for depthwise
  convs and pooling, where each output channel reads its own input. (16 rather than 8: 10-13%
  faster on the 7- to 28-wide maps of the Fashion-MNIST models, equal at 64x64.)
- x_chunks per tile: as many of the row's chunks as fit A / oc_block accumulators (a divisor).
- row_block: all rows when oc_block x rows x chunks <= A (a 7x7 depthwise or pooling map in one
  tile), else up to 4 rows (a divisor of the output height) within A, so narrow maps still fill
  the registers.
- then shrink row_block, then oc_block, until there are at least 4 parallel tasks per thread.
- on AVX2, whose FMAs cannot broadcast a weight from memory, a one-row tile is then reshaped to the
  (oc_block, x_chunks) with the most FMAs per loaded register (`_fewest_loads`: 4 x 2 rather than
  8 x 1 on a 224-wide map).

A window read with a column stride (x * 2 + rx) would gather its vector lane by lane; when it
reads through a real padding pass, that pass stores the padded input as column phases instead
(`_split_column_phases`), so every tap reads one contiguous vector (ResNet-18's 1x7 stride-2 stem
half: 1.22 -> 0.35 ms in the model). That pass copies the columns that read the input in every
phase apart from the border columns, so they need no bounds check and vectorize into one strided
load (a dense load and a shuffle: `strided_loads`); with a bounds check per lane, LLVM got scalar
code (ResNet-18's 224x224 max pool: 223 -> 100 us).

A kernel whose output feeds a padded conv writes that conv's zero-bordered input itself
(`passes.pad_at_producer`): its epilogue ends in a copy to the interior of the bordered map,
inlined like any epilogue (the writer stores at a row/column offset; with a column offset the
vectors stop at row ends, so the tile is not flat), and border blocks that store zeros and declare
no access (`WindowBlocks.border_fills`) run after the parallel loop, a vector per row.

Maps narrower than a vector (the last stages of a CNN at 32x32 are 4, 2 and 1 pixels wide) leave
most lanes of a row vector empty, and a 1-wide map runs scalar. For those, the build's Relax pass
`ChannelsLastNarrowConvWeights` stores the constant weight as IHWO, and this rule, seeing the weight
read contiguous along output channels, puts channels in the vector lanes instead
(`schedule_channel_window`: per tap, one broadcast input value times one weight vector per group
of channels; accumulators channel-innermost). ResNet-18 at 32x32, Tai: 0.65 -> 0.41 ms; at 224x224
(7- and 14-wide late stages), wider maps too: on AVX2, which has no broadcast operand for the row
tile's weights and splits the 7-lane vectors of 28-, 14- and 7-wide rows into 3 loads, and on
AVX-512, maps up to 56 wide take the channel tile (`CPUVectorInfo.channel_vector_width`; with the
register limits of `_channel_tile_registers`, ResNet-18 224x224 untuned on a Zen 3: 9.6 -> 8.2 ms
whole model, side by side). There, a tile whose weights overflow L1 runs in passes
over input channels (`_reduction_block`). On every CPU, the schedule stores an IHWO weight blocked by
the tile's channels, [O/F, I, KH, KW, F], so a tile's weights are one contiguous run, not F floats
every O (`_block_weight_by_tile`; the build folds this into the constant, tuning does not time it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.s_tir.schedule import ScheduleError
from tvm.sym.pattern import detect_linear_equation
from tvm.target import Target
from tvm.tirx import IndexMap

from ._blocks import (divisors, epilogue_chain, has_trivial_binding, int_value, iter_kinds, largest_divisor,
                      register_accumulator, uses, vectorize_innermost, vectorized_init)
from ._cpu import CPUVectorInfo, cpu_vector_info

_IF_THEN_ELSE = tvm.ir.Op.get("prim.if_then_else")
# MetaSchedule's mark on a block that only changes a constant input's layout (its RewriteLayout
# postproc): Relax's SplitLayoutRewritePreproc moves it out of the kernel, tuning does not time it
LAYOUT_REWRITE_PREPROC = "meta_schedule.layout_rewrite_preproc"

MAX_OC_BLOCK = 16
MAX_ROW_BLOCK = 4
TASKS_PER_THREAD = 4
# a channel tile shrunk to 4 tasks per thread on a 1- to 4-pixel map keeps 1-2 accumulators, one FMA
# per load; with 2 tasks per thread it keeps 3x more (ResNet-18 at 32x32, Tai: 5-6% faster)
CHANNEL_TASKS_PER_THREAD = 2
PARALLEL_PAD_ELEMENTS = 1 << 15  # 128 KiB of float32: from here a zero fill + copy, both parallel
SINGLE_PASS_PAD_ELEMENTS = 1 << 12  # 16 KiB: from here one parallel pass with the bounds check
MIN_PARALLEL_WORK = 1 << 18  # multiply-adds (or window reads); ~2 us on one core, less than a fork-join
# channel-vectorized convs on tiny maps read each weight once or a few times: bound by streaming the
# weights, which two cores do faster than one from a smaller size (ResNet-18 1x1-map conv, 98K MACs:
# 12 us serial, 3.7 us on 2 threads)
MIN_PARALLEL_CHANNEL_WORK = 1 << 15


@dataclass(frozen=True)
class WindowShape:
    """Output and reduction extents of a conv or pooling block (NCHW output n, c, y, x).

    `in_per_group`: reduction extent over input channels (0 for pooling); `out_per_group`: output
    channels that share one input group, the channels a register tile may block (1: depthwise or
    pooling).
    """

    batch: int
    channels: int
    out_h: int
    out_w: int
    in_per_group: int
    out_per_group: int
    kernel: tuple[int, int]
    channels_last_weight: bool = False  # weight[rc, ry, rx, f] (IHWO): vectorize across channels
    # output pixel p = y * out_w + x reads input pixel p + ry * dilation * out_w (unit strides, one
    # kernel column, input rows as wide as the output's): a vector may run across row ends
    flat_pixels: bool = False
    column_stride: int = 1  # input columns per output column (x * stride + rx * dilation)

    @property
    def work(self) -> int:
        """Multiply-adds of a conv, input reads of a pooling window: the size of the job."""
        return (self.batch * self.channels * self.out_h * self.out_w * max(self.in_per_group, 1)
                * self.kernel[0] * self.kernel[1])


@dataclass(frozen=True)
class Tile:
    """The register tile: `oc_block` channels x `row_block` rows x `x_chunks` vectors of `x_chunk` lanes.

    `flat`: rows and columns are one pixel axis (see `WindowShape.flat_pixels`), the vectors run
    along it across row ends, and `row_block` is 1.
    """

    oc_block: int
    row_block: int
    x_chunk: int
    x_chunks: int
    flat: bool = False

    @property
    def accumulators(self) -> int:
        return self.oc_block * self.row_block * self.x_chunks


def choose_x_chunk(width: int, lanes: int) -> int:
    """Lanes of one vector along the output row: a divisor of `width`, so no loop has a tail."""
    if width <= lanes:
        return width
    best = largest_divisor(width, lanes)
    if best * 2 >= lanes:
        return best
    return width if width <= 2 * lanes else best


def plan_tile(shape: WindowShape, vec: CPUVectorInfo) -> Tile:
    """Register tile for `shape` on a CPU with `vec` (the heuristic in the module docstring)."""
    lanes = vec.lanes()
    if shape.flat_pixels and shape.out_w % lanes and (shape.out_h * shape.out_w) % lanes == 0:
        return plan_flat_tile(shape, vec)
    x_chunk = choose_x_chunk(shape.out_w, lanes)
    budget = vec.accumulators // -(-x_chunk // vec.lanes())  # in vectors of x_chunk lanes
    row_chunks = shape.out_w // x_chunk
    oc_block = largest_divisor(shape.out_per_group, min(MAX_OC_BLOCK, budget))
    x_chunks = largest_divisor(row_chunks, budget // oc_block)
    rows_that_fit = budget // (oc_block * x_chunks)
    row_block = shape.out_h if shape.out_h <= rows_that_fit else largest_divisor(
        shape.out_h, min(MAX_ROW_BLOCK, rows_that_fit))

    def tasks() -> int:
        return shape.batch * (shape.channels // oc_block) * (shape.out_h // row_block)

    while tasks() < TASKS_PER_THREAD * vec.threads and (row_block > 1 or oc_block > 1):
        if row_block > 1:
            row_block = largest_divisor(shape.out_h, row_block - 1)
        else:
            oc_block = largest_divisor(shape.out_per_group, oc_block - 1)
    return _fewest_loads(shape, vec, Tile(oc_block, row_block, x_chunk, x_chunks), row_chunks)


def plan_flat_tile(shape: WindowShape, vec: CPUVectorInfo) -> Tile:
    """Tile of full vectors along the flat pixel axis: as many output channels as fit, then as
    many vectors; fewer vectors, then fewer channels, until there are enough parallel tasks."""
    lanes = vec.lanes()
    vectors = shape.out_h * shape.out_w // lanes
    oc_block = largest_divisor(shape.out_per_group, min(MAX_OC_BLOCK, vec.accumulators))
    x_chunks = largest_divisor(vectors, vec.accumulators // oc_block)

    def tasks() -> int:
        return shape.batch * (shape.channels // oc_block) * (vectors // x_chunks)

    while tasks() < TASKS_PER_THREAD * vec.threads and (x_chunks > 1 or oc_block > 1):
        if x_chunks > 1:
            x_chunks = largest_divisor(vectors, x_chunks - 1)
        else:
            oc_block = largest_divisor(shape.out_per_group, oc_block - 1)
    return _fewest_loads(shape, vec, Tile(oc_block, 1, lanes, x_chunks, flat=True), vectors)


def _fewest_loads(shape: WindowShape, vec: CPUVectorInfo, tile: Tile, chunks: int) -> Tile:
    """Where an FMA cannot broadcast its weight from memory (AVX2), a tile of `oc` channels x `xc`
    vectors loads oc + xc registers per oc * xc FMAs: the channel-first tile (12 x 1, 8 x 1 on a
    224-wide map) loads about once per FMA. Pick the (oc, xc) with the most FMAs per load within
    the same accumulator budget and task count (VGG-FMNIST 224², Tai: 8.2 -> 7.3 ms on a Zen 3),
    whose accumulators, input vectors (each shared by the tile's channels) and broadcast weight fit
    the register file: a 3 x 4 tile (12 + 4 + 1 of 16) spilled accumulators on every tap, 6 x 2
    ran VGG-FMNIST 224²'s 224-wide 3x1 conv in 0.64 ms instead of 0.85.
    Tiles of one row only; `chunks`: the x_chunks choices must divide it."""
    if vec.fma_broadcasts or tile.row_block > 1 or shape.out_per_group == 1:
        return tile
    registers_per_chunk = -(-tile.x_chunk // vec.lanes())
    budget = vec.accumulators // registers_per_chunk

    def tasks(oc: int, xc: int) -> int:  # a flat tile's tasks split the pixels, a row tile's the rows
        return shape.batch * (shape.channels // oc) * (chunks // xc if tile.flat else shape.out_h)

    best, best_key = tile, None
    for oc in (d for d in divisors(shape.out_per_group) if d <= min(MAX_OC_BLOCK, budget)):
        for xc in (d for d in divisors(chunks) if oc * d <= budget):
            live = (oc * xc + xc) * registers_per_chunk + 1
            if tasks(oc, xc) < TASKS_PER_THREAD * vec.threads or live > vec.registers:
                continue
            key = (oc * xc / (oc + xc), oc * xc, oc)
            if best_key is None or key > best_key:
                best, best_key = replace(tile, oc_block=oc, x_chunks=xc), key
    return best


@dataclass
class WindowBlocks:
    """The blocks of one conv/pool PrimFunc: padding producers, the window reduction, its epilogue."""

    pads: list
    window: object
    epilogue: list
    shape: WindowShape
    data_pad: object = None  # the padding producer of the input the window slides over, if any
    # blocks writing constant zeros and declaring no access: the zero border of an output padded
    # for the next conv (`passes.pad_at_producer`), disjoint from what the epilogue writes
    border_fills: list = field(default_factory=list)


def _window_shape(block: s_tir.SBlock):
    """(shape, the input buffer the window slides over) of an NCHW conv (SSSSRRR) or pooling
    (SSSSRR) block, or None for anything else."""
    kinds = iter_kinds(block)
    if kinds not in ("SSSSRRR", "SSSSRR") or len(block.writes) != 1:
        return None
    extents = [int_value(iv.dom.extent) for iv in block.iter_vars]
    if any(e is None for e in extents):
        return None  # dynamic shapes: leave to the default schedule
    n, c, y, x = (iv.var for iv in block.iter_vars[:4])
    write = block.writes[0].region
    if len(write) != 4 or any(not r.min.same_as(v) for r, v in zip(write, (n, c, y, x))):
        return None
    is_conv = kinds == "SSSSRRR"
    if len(block.reads) != (2 if is_conv else 1):
        return None
    reads = list(block.reads)  # one list: each access to block.reads makes new Python objects
    data = next((r for r in reads if len(r.region) == 4 and uses(r.region[3].min, x)), None)
    if data is None:
        return None
    # the input column must be x * stride + rx * dilation, so that x_lane walks along the row
    if len(detect_linear_equation(data.region[3].min, [x, block.iter_vars[-1].var])) != 3:
        return None
    kernel = (extents[-2], extents[-1])
    row_step = detect_linear_equation(data.region[2].min, [y])
    column_step = detect_linear_equation(data.region[3].min, [x])
    column_stride = int_value(column_step[0]) or 1
    flat = (kernel[1] == 1 and int_value(data.source.shape[3]) == extents[3]
            and int_value(row_step[0]) == 1 and column_stride == 1)
    if not is_conv:
        return WindowShape(extents[0], extents[1], extents[2], extents[3], 0, 1, kernel,
                           flat_pixels=flat, column_stride=column_stride), data.source
    in_per_group = extents[4]
    in_channels = int_value(data.source.shape[1])
    groups = (in_channels // in_per_group) if in_channels else 0
    if groups < 1 or extents[1] % groups:
        return None
    weight = next(r for r in reads if r is not data)
    channels_last = groups == 1 and len(weight.region) == 4 and weight.region[3].min.same_as(c)
    return WindowShape(extents[0], extents[1], extents[2], extents[3], in_per_group,
                       extents[1] // groups, kernel, channels_last, flat, column_stride), data.source


def match_window(sch: s_tir.Schedule) -> WindowBlocks | None:
    """The conv/pool structure of the function in `sch`, or None when it is anything else.

    Accepted: root blocks = [padding producer(s)] + one window block + a chain of injective blocks,
    each the only consumer of the previous one (the fused epilogue). Any other block shape (two
    reductions, a fan-out, dynamic extents) is left to the default schedule.
    """
    blocks, border_fills = [], []
    for rv in sch.get_child_blocks(get_root_block(sch)):
        (border_fills if _is_border_fill(sch.get(rv)) else blocks).append(rv)
    windows = [(rv, found) for rv in blocks if (found := _window_shape(sch.get(rv))) is not None]
    if len(windows) != 1:
        return None
    window, (shape, data) = windows[0]
    if not has_trivial_binding(sch, window):
        return None
    pads = [rv for rv in sch.get_producers(window) if iter_kinds(sch.get(rv)) == "SSSS"]
    epilogue = epilogue_chain(sch, window)
    if epilogue is None:
        return None
    if len(pads) + 1 + len(epilogue) != len(blocks):
        return None
    data_pad = next((pad for pad in pads if sch.get(pad).writes[0].source.same_as(data)), None)
    if shape.flat_pixels and epilogue and _writes_shifted_columns(sch.get(epilogue[-1])):
        shape = replace(shape, flat_pixels=False)  # a flat pixel run would not be contiguous there
    return WindowBlocks(pads, window, epilogue, shape, data_pad, border_fills)


def _writes_shifted_columns(block: s_tir.SBlock) -> bool:
    """Whether `block` writes column x of its iteration at another column of its output (the
    interior of a zero-bordered map: `passes.pad_at_producer`)."""
    write = block.writes[0].region
    return len(write) == 4 and not write[3].min.same_as(block.iter_vars[-1].var)


def _is_border_fill(block: s_tir.SBlock) -> bool:
    """A block that declares no access and stores a constant (`passes.pad_at_producer`'s borders)."""
    body = block.body
    return (not block.reads and not block.writes and set(iter_kinds(block)) == {"S"}
            and isinstance(body, tirx.BufferStore) and isinstance(body.value, (tirx.FloatImm, tirx.IntImm)))


def _schedule_border_fills(sch: s_tir.Schedule, blocks: WindowBlocks) -> None:
    """Zero borders run serially on the calling thread (a few rows and columns), vectorized along
    their rows."""
    for fill in blocks.border_fills:
        loops = sch.get_loops(fill)
        sch.vectorize(loops[-1])


def _schedule_padding(sch: s_tir.Schedule, pad) -> None:
    """Schedule a padding pass by its size: serial zero fill + interior copy when small, one parallel
    pass that checks bounds per element when medium, a parallel zero fill + copy when large.

    Each parallel region costs a thread-pool round trip, so a small pad (a 4x4 map) stays on the
    calling thread. A medium one (16-128 KiB: the 28-wide maps of the Fashion-MNIST VGG) is split
    over the threads in one region rather than two, which made that VGG 6-10% faster and
    ResNet-18 at 32x32 2-3% (same process, interleaved); from 128 KiB the checked pass costs more
    than the second region (VGG at 224x224 2-6% slower with it), so big pads keep the two passes.
    From the medium size, a pad of rows only is split at the input's rows instead
    (`_schedule_row_padding`).
    """
    padded_elements = _elements(sch.get(pad).writes[0].source)
    if padded_elements >= SINGLE_PASS_PAD_ELEMENTS and _schedule_row_padding(sch, pad):
        return
    loops = sch.get_loops(pad)
    if (SINGLE_PASS_PAD_ELEMENTS <= padded_elements < PARALLEL_PAD_ELEMENTS and len(loops) > 1
            and _checks_bounds(sch.get(pad))):
        sch.parallel(sch.fuse(*loops[:-1]))
        sch.vectorize(loops[-1])
        return
    try:
        parts = [sch.decompose_padding(pad, loops[0]), pad]
    except ScheduleError:  # no padding predicate: a plain copy, read in place instead
        sch.compute_inline(pad)
        return
    for block in parts:
        loops = sch.get_loops(block)
        if len(loops) > 1 and padded_elements >= PARALLEL_PAD_ELEMENTS:
            sch.parallel(sch.fuse(*loops[:-1]))
        sch.vectorize(loops[-1])


def _schedule_row_padding(sch: s_tir.Schedule, pad) -> bool:
    """A pad of rows only (a k x 1 conv's input) as one parallel pass over channels whose row
    loop is split at the input's first and last rows: the border rows store zeros, the rows between
    copy the input with no bounds check, a vector at a time. False (nothing done) for any other pad.

    The zero fill + copy that `decompose_padding` gives writes the whole buffer twice (its fill
    covers the interior too). On a Zen 3, each kernel alone, interleaved, outputs bit-identical: the
    7 kernels of ResNet-18 224² with such a pad (3x1 convs on its block outputs, used twice, so not
    padded by their producer) 1202 -> 1165 us summed (its stride-2 one on 56x56 200 -> 189 us);
    VGG-FMNIST 224²'s first conv 18.0 -> 13.9 us; ResNet-18 32²'s two 15.6 -> 15.0 us.
    """
    block = sch.get(pad)
    padded = block.writes[0].source
    source = block.reads[0].source if len(block.reads) == 1 else None
    if (source is None or len(padded.shape) != 4 or len(source.shape) != 4 or not _checks_bounds(block)
            or int_value(source.shape[3]) != int_value(padded.shape[3])):
        return False
    top = _padding_before(block, 2)
    height, padded_height = int_value(source.shape[2]), int_value(padded.shape[2])
    if top is None or height is None or padded_height is None or len(sch.get_loops(pad)) != 4:
        return False
    n, c, rows, _ = sch.get_loops(pad)
    parts = [extent for extent in (top, height, padded_height - top - height) if extent]
    sch.parallel(sch.fuse(n, c))
    row_parts = sch.loop_partition(rows, parts[:-1] + [None]) if len(parts) > 1 else [rows]
    for part in row_parts:  # each part holds one block under its row loop: vectorize its columns
        sch.vectorize(sch.get_loops(_leaf_block(sch, part))[-1])
    return True


def _leaf_block(sch: s_tir.Schedule, loop):
    """The innermost block under `loop` (loop_partition wraps each part in a block of its own)."""
    block = sch.get_child_blocks(loop)[0]
    while children := sch.get_child_blocks(block):
        block = children[0]
    return block


def _checks_bounds(pad_block) -> bool:
    """Whether a padding block really pads (its value is an if_then_else on the bounds), rather than
    copying its input unchanged."""
    value = pad_block.body.value
    return isinstance(value, tvm.ir.Call) and value.op.same_as(_IF_THEN_ELSE)


def schedule_window(sch: s_tir.Schedule, blocks: WindowBlocks, tile: Tile) -> None:
    """Apply the direct-convolution schedule of the module docstring to `blocks` in `sch`."""
    window = blocks.window
    writer = register_accumulator(sch, window, blocks.epilogue)
    if tile.flat:
        _schedule_flat_window(sch, blocks, writer, tile)
        return
    pads = blocks.pads
    if blocks.data_pad is not None and _split_column_phases(sch, blocks.data_pad, blocks.shape.column_stride):
        pads = [pad for pad in pads if pad is not blocks.data_pad]  # scheduled with its phases
    loops = sch.get_loops(window)
    n, f, y, x = loops[:4]
    reduction = loops[4:]
    f_outer, f_inner = sch.split(f, [None, tile.oc_block])
    y_outer, y_inner = sch.split(y, [None, tile.row_block])
    x_outer, x_chunk, x_lane = sch.split(x, [None, tile.x_chunks, tile.x_chunk])
    sch.reorder(n, f_outer, y_outer, x_outer, *reduction, f_inner, y_inner, x_chunk, x_lane)
    tasks = sch.fuse(n, f_outer, y_outer)
    if blocks.shape.work >= MIN_PARALLEL_WORK:
        sch.parallel(tasks)
    sch.reverse_compute_at(writer, x_outer)
    for loop in (reduction[-1], f_inner, y_inner, x_chunk):
        sch.unroll(loop)
    sch.vectorize(x_lane)
    vectorized_init(sch, window, reduction[0], tile_depth=2)  # below the task loop and x_outer
    vectorize_innermost(sch, writer, tile.x_chunk)
    for pad in pads:
        _schedule_padding(sch, pad)
    _schedule_border_fills(sch, blocks)


def _split_column_phases(sch: s_tir.Schedule, pad, stride: int) -> bool:
    """Store a padded input that the window reads with a column stride s > 1 as s phases, column x at
    [x % s, x // s], and schedule its padding pass; False (nothing done) when it does not apply.

    Tap rx of output column x then reads phase rx % s at x + rx // s: contiguous in x, so a vector
    of outputs is one load instead of a lane-by-lane gather. The gather moves to the padding pass,
    which reads each input value once (a 1x7 stride-2 stem conv: 0.62 -> 0.30 ms). Only a pass
    that really pads is split: a plain copy is read in place (a 1x1 stride-2 conv reads a quarter
    of its input, and a phase copy would write all of it).
    """
    block = sch.get(pad)
    padded, source = block.writes[0].source, block.reads[0].source if len(block.reads) == 1 else None
    width = int_value(padded.shape[-1])
    if (stride < 2 or source is None or len(padded.shape) != 4 or width is None or width % stride
            or int_value(source.shape[-1]) == width):
        return False
    left = _padding_before(block, 3)
    phases = IndexMap.from_func(lambda n, c, y, x: (n, c, y, x % stride, x // stride))
    sch.transform_layout(pad, ("write", 0), phases)
    sch.transform_block_layout(pad, phases)
    *rows, _phase, columns = sch.get_loops(pad)
    if _elements(padded) >= PARALLEL_PAD_ELEMENTS:
        sch.parallel(sch.fuse(*rows))
    # phase columns [first, last) read the input in every phase: no bounds check, one strided
    # vector load (`strided_loads`); the bounds-checked border columns around them stay scalar
    parts = [columns]
    if left is not None:
        first = -(-left // stride)
        last = (left + int_value(source.shape[-1]) - stride) // stride + 1
        if 0 < first < last < width // stride:
            parts = sch.loop_partition(columns, [first, last - first, None])
    for part in parts:
        sch.vectorize(part)
    return True


def _padding_before(pad_block, axis: int) -> int | None:
    """Padding before the input along NCHW `axis` of a padding block (2: rows above, 3: columns to
    the left; output index i reads i - padding), or None when the read is not such a shift."""
    index = pad_block.iter_vars[axis].var
    coeffs = detect_linear_equation(pad_block.reads[0].region[axis].min, [index])
    if len(coeffs) != 2 or int_value(coeffs[0]) != 1 or int_value(coeffs[1]) is None:
        return None
    return -int_value(coeffs[1])


def _elements(buffer) -> int:
    count = 1
    for extent in buffer.shape:
        count *= int_value(extent) or 1
    return count


def _flatten_pixels(sch: s_tir.Schedule, block, width: int) -> None:
    """Make (y, x) of `block` one iterator y * width + x (a bijection: no work is added)."""
    iterators = len(sch.get(block).iter_vars)
    sch.transform_block_layout(block, IndexMap.from_func(
        lambda n, f, y, x, *reduction: (n, f, y * width + x, *reduction), ndim=iterators))


def _schedule_flat_window(sch: s_tir.Schedule, blocks: WindowBlocks, writer, tile: Tile) -> None:
    """schedule_window along one pixel axis: tasks are channel blocks x runs of whole vectors.

    Both the reduction and the output writer iterate over p = y * W + x, and the register tile is
    indexed by p, so the writer's tile is one contiguous run of p below the task loop. After buffer
    flattening every access is linear in p (input p + ry * W, output p), so each vector is one
    load or store: a 56-wide row is 3.5 vectors of 16, which by rows would be 4 of 14 lanes each,
    split by LLVM into 8 + 4 + 2 (ResNet-18's 3x1 conv on 56x56: 0.25 -> 0.20 ms).
    """
    window, width = blocks.window, blocks.shape.out_w
    if len(sch.get(writer).iter_vars) != 4:
        raise ScheduleError("the fused epilogue does not write an NCHW map")
    sch.transform_layout(window, ("write", 0), lambda n, f, y, x: (n, f, y * width + x))
    _flatten_pixels(sch, window, width)
    _flatten_pixels(sch, writer, width)
    n, f, pixels, *reduction = sch.get_loops(window)
    f_outer, f_inner = sch.split(f, [None, tile.oc_block])
    p_outer, p_chunk, p_lane = sch.split(pixels, [None, tile.x_chunks, tile.x_chunk])
    sch.reorder(n, f_outer, p_outer, *reduction, f_inner, p_chunk, p_lane)
    tasks = sch.fuse(n, f_outer, p_outer)
    if blocks.shape.work >= MIN_PARALLEL_WORK:
        sch.parallel(tasks)
    sch.reverse_compute_at(writer, tasks)
    for loop in (reduction[-1], f_inner, p_chunk):
        sch.unroll(loop)
    sch.vectorize(p_lane)
    vectorized_init(sch, window, reduction[0], tile_depth=1)
    *out_channels, out_pixels = sch.get_loops(writer)[1:]  # a 1-channel tile has no channel loop
    out_vector, out_lane = sch.split(out_pixels, [None, tile.x_chunk])
    for loop in (*out_channels, out_vector):
        sch.unroll(loop)
    sch.vectorize(out_lane)
    for pad in blocks.pads:
        _schedule_padding(sch, pad)
    _schedule_border_fills(sch, blocks)


@dataclass(frozen=True)
class ChannelTile:
    """Register tile of a channel-vectorized conv: `f_vectors` vectors of `f_chunk` output channels
    x `row_block` rows x `x_block` columns."""

    f_chunk: int
    f_vectors: int
    row_block: int
    x_block: int
    parallel: bool  # tasks run on the thread pool
    # input channels per pass over the task's pixels (`_reduction_block`); 0: the whole reduction
    # in one pass, tasks are channel blocks x rows
    rc_block: int = 0


def plan_channel_tile(shape: WindowShape, vec: CPUVectorInfo) -> ChannelTile:
    """Tile for a conv whose weight is output-channel-last (see `channels_last_weight`).

    The pixels of the tile (rows x columns, whole rows when they fit: `_channel_tile_columns`) share
    each weight vector load, the channel vectors share each broadcast input value; over the register
    file, one row or one channel vector fewer, whichever keeps more accumulators; then, if the conv
    runs in parallel, fewer rows, then fewer channel vectors, until there are
    CHANNEL_TASKS_PER_THREAD tasks per thread. A serial conv keeps its whole tile: with 4
    accumulators instead of 16, a ResNet-18 1x1-map conv ran 3x slower than MetaSchedule's best.
    """
    f_chunk = vector_chunk(shape.channels, vec.lanes())
    budget = vec.accumulators // -(-f_chunk // vec.lanes())
    chunks = shape.channels // f_chunk
    x_block = _channel_tile_columns(shape.out_w, budget)
    row_block = largest_divisor(shape.out_h, max(budget // (2 * x_block), 1))
    f_vectors = largest_divisor(chunks, budget // (row_block * x_block))
    while (f_vectors > 1 or row_block > 1) and _channel_tile_registers(f_vectors, row_block, x_block) > vec.registers:
        fewer_rows = largest_divisor(shape.out_h, row_block - 1) if row_block > 1 else 0
        fewer_vectors = largest_divisor(chunks, f_vectors - 1) if f_vectors > 1 else 0
        if fewer_rows * f_vectors > row_block * fewer_vectors:  # keep the tile with more accumulators
            row_block = fewer_rows
        else:
            f_vectors = fewer_vectors

    def tasks() -> int:
        return shape.batch * (chunks // f_vectors) * (shape.out_h // row_block) * (shape.out_w // x_block)

    parallel = shape.work >= MIN_PARALLEL_CHANNEL_WORK
    while parallel and tasks() < CHANNEL_TASKS_PER_THREAD * vec.threads and (row_block > 1 or f_vectors > 1):
        if row_block > 1:
            row_block = largest_divisor(shape.out_h, row_block - 1)
        else:
            f_vectors = largest_divisor(chunks, f_vectors - 1)
    rc_block = _reduction_block(shape, vec, f_chunk * f_vectors, chunks // f_vectors)
    return ChannelTile(f_chunk, f_vectors, row_block, x_block, parallel, rc_block)


def _reduction_block(shape: WindowShape, vec: CPUVectorInfo, channels: int, channel_tasks: int) -> int:
    """Input channels per pass when a tile's weights (`channels` output channels x every tap)
    overflow L1 (`CPUVectorInfo.l1_weight_bytes`), else 0.

    The tile rereads its weights for every group of pixels; from L2 they cost more than the FMAs
    (ResNet-18 224²'s 3x1 convs with 128-512 input channels ran at 106-131 GFLOP/s). In passes of
    input channels whose weights fit half of L1, a task (one channel block, every pixel) keeps
    them in L1 across its pixels and its partial sums in a buffer on the stack. On a Zen 3,
    each kernel alone: those convs 15-27% faster (3x1, 256 -> 96 channels on 14x14: 0.23 -> 0.18
    ms). Only with a task per channel block for every thread; unmeasured where FMAs broadcast
    (AVX-512, NEON), so only for AVX2 (`l1_weight_bytes` is 0 elsewhere).
    """
    bytes_per_input_channel = channels * shape.kernel[0] * shape.kernel[1] * 4  # float32 weights
    if (not vec.l1_weight_bytes or bytes_per_input_channel * shape.in_per_group <= vec.l1_weight_bytes
            or channel_tasks * shape.batch < vec.threads):
        return 0
    block = largest_divisor(shape.in_per_group, max(vec.l1_weight_bytes // (2 * bytes_per_input_channel), 1))
    return 0 if block == shape.in_per_group else block


def _channel_tile_registers(f_vectors: int, rows: int, columns: int) -> int:
    """Vector registers live in a channel tile's tap loop: the accumulators, the weight vectors (kept
    in registers when several pixels share them), the broadcast input value, and one more when
    the tile spans rows. Over the register file LLVM spills accumulators to the stack on every
    tap; on AVX2 (16 registers) 3 vectors x 2x2 pixels spilled (47 stack moves per tap loop:
    ResNet-18's 14-wide 3x1 conv 0.35 ms, 2 vectors 0.24 ms), as did 6 x 1x2, not 3 x 1x4."""
    pixels = rows * columns
    return f_vectors * pixels + (f_vectors if pixels > 1 else 0) + 1 + (rows > 1)


def _channel_tile_columns(width: int, budget: int) -> int:
    """Columns of a channel tile: a divisor of the row within half the budget (room for two channel
    vectors), or the whole row where that divisor is under half of it and the row fits the budget.

    Each tile streams its channels' weights once, so a one-column tile of a 7-wide map (7 is prime;
    AVX2's budget/2 is 6) reads the weights once per pixel: ResNet-18's 512 -> 192 3x1 conv on 7x7
    reread 1.2 MB per pixel from L3 (0.76 ms on a Zen 3); a whole-row tile of one channel vector
    rereads them once per row (0.26 ms).
    """
    columns = largest_divisor(width, max(budget // 2, 1))
    return width if columns * 2 < width <= budget else columns


def vector_chunk(extent: int, lanes: int) -> int:
    """Lanes of one vector along an axis of `extent`: a power-of-two share of the register that
    divides it when there is one (1000 -> 8 on AVX-512), else `choose_x_chunk`'s divisor."""
    for share in (lanes, lanes // 2, lanes // 4):
        if share >= 4 and extent % share == 0:
            return share
    return choose_x_chunk(extent, lanes)


def _block_weight_by_tile(sch: s_tir.Schedule, window, channels: int) -> None:
    """Store an IHWO weight parameter as [o // channels, i, h, w, o % channels], so the weights of
    a tile's `channels` output channels are one contiguous run; IHWO is kept where a block of the
    function computes the weight or `channels` does not divide its output channels.

    In IHWO a tile reads `channels` floats per tap, a stride of all output channels apart; with 512
    (a power of two) every tap of a tile lands in the same two sets of a 32 KiB 8-way L1, so the
    tile's weights thrash L1 and L2 (ResNet-18 224²'s 1x3 conv, 192 -> 512 channels on 7x7, alone
    on a Zen 3: 247 us, with 520 channels of storage 208 us, blocked 170 us). The layout change is
    a block annotated as MetaSchedule's layout-rewrite preprocessing, which the build splits out of
    the kernel and folds into the constant weight (`build.compile_pipeline`), and tuning leaves out
    of what it measures, as for MetaSchedule's own RewriteLayout.
    """
    block = sch.get(window)
    channel = block.iter_vars[1].var
    index, weight = next(((i, r) for i, r in enumerate(block.reads)
                          if len(r.region) == 4 and r.region[3].min.same_as(channel)), (None, None))
    if weight is None or any(sch.get(producer).writes[0].source.same_as(weight.source)
                             for producer in sch.get_producers(window)):
        return
    out_channels = int_value(weight.source.shape[3])
    if out_channels is None or out_channels % channels or out_channels == channels:
        return
    preproc = sch.cache_read(window, index, "global")
    sch.annotate(preproc, LAYOUT_REWRITE_PREPROC, 1)  # 1, not True: a trace read back from a database holds 1
    sch.transform_layout(window, ("read", index),
                         lambda i, h, w, o: (o // channels, i, h, w, o % channels))


def schedule_channel_window(sch: s_tir.Schedule, blocks: WindowBlocks, tile: ChannelTile) -> None:
    """The direct convolution with output channels in the vector lanes (weight read contiguous, one
    broadcast input value per tap): rows of 1-4 pixels leave x-vectors mostly empty. With
    `tile.rc_block`, a task is one channel block over every pixel, in passes of input channels
    (`_reduction_block`), its partial sums in the task's accumulator buffer."""
    window = blocks.window
    _block_weight_by_tile(sch, window, tile.f_chunk * tile.f_vectors)
    writer = register_accumulator(sch, window, blocks.epilogue)
    # the accumulator tile channel-innermost, so each vector of channels is one register
    sch.transform_layout(window, ("write", 0), lambda n, f, y, x: (n, y, x, f))
    n, f, y, x, rc, *taps = sch.get_loops(window)
    f_outer, f_vec, f_lane = sch.split(f, [None, tile.f_vectors, tile.f_chunk])
    y_outer, y_inner = sch.split(y, [None, tile.row_block])
    x_outer, x_inner = sch.split(x, [None, tile.x_block])
    if tile.rc_block:
        rc_outer, rc_inner = sch.split(rc, [None, tile.rc_block])
        sch.reorder(n, f_outer, rc_outer, y_outer, x_outer, rc_inner, *taps, y_inner, x_inner, f_vec, f_lane)
        tasks = sch.fuse(n, f_outer)
        tile_top = tasks
    else:
        sch.reorder(n, f_outer, y_outer, x_outer, rc, *taps, y_inner, x_inner, f_vec, f_lane)
        tasks = sch.fuse(n, f_outer, y_outer)
        tile_top = x_outer
    if tile.parallel:
        sch.parallel(tasks)
    sch.reverse_compute_at(writer, tile_top)
    for loop in ((taps or [rc])[-1], y_inner, x_inner, f_vec):
        sch.unroll(loop)
    sch.vectorize(f_lane)
    if tile.rc_block:  # the task's partial sums: zeroed and written out in loops, a vector at a time
        init = sch.decompose_reduction(window, rc_outer)
        sch.vectorize(sch.get_loops(init)[-1])
    else:
        vectorized_init(sch, window, rc, tile_depth=2)
    # the writer's tile loops (unit extents have none): channels first, moved innermost
    writer_loops = sch.get_loops(writer)
    below = next(i for i, loop in enumerate(writer_loops) if sch.get(loop).same_as(sch.get(tile_top))) + 1
    out_f, *out_pixels = writer_loops[below:]
    if out_pixels:
        sch.reorder(*out_pixels, out_f)
    out_vec, out_lane = sch.split(out_f, [None, tile.f_chunk])
    for loop in ([] if tile.rc_block else out_pixels) + [out_vec]:
        sch.unroll(loop)
    sch.vectorize(out_lane)
    for pad in blocks.pads:
        _schedule_padding(sch, pad)
    _schedule_border_fills(sch, blocks)


class DirectConv2D(CPUScheduleRule):
    """dlight rule: the direct-convolution schedule for NCHW conv2d (any kernel, stride, dilation,
    groups, depthwise) and 2-D pooling PrimFuncs with their fused epilogues, on llvm CPU targets.

    Returns None (leave the function to the next rule) for any other function, and for a conv
    whose structure the schedule primitives reject.
    """

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        blocks = match_window(sch)
        if blocks is None:
            return None
        vec = cpu_vector_info(target)
        try:
            if blocks.shape.channels_last_weight:
                schedule_channel_window(sch, blocks, plan_channel_tile(blocks.shape, vec))
            else:
                schedule_window(sch, blocks, plan_tile(blocks.shape, vec))
        except RuntimeError:  # ScheduleError or a TVM internal error: TVM's default schedule stays
            return None
        return sch
