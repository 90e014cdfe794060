"""The tile heuristic and the pass's contract (which functions it touches), without running code."""

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_lowrank.build import _backend_pipeline
from tvm_lowrank.schedule import (SCHEDULED_ATTR, ApplyCPUSchedules, CPUVectorInfo, WindowShape,
                                  cpu_vector_info, plan_tile)
from tvm_lowrank.schedule.cpu_conv import CHANNEL_TASKS_PER_THREAD, choose_x_chunk, plan_channel_tile

AVX512 = CPUVectorInfo(bits=512, registers=32, threads=2)
AVX2 = CPUVectorInfo(bits=256, registers=16, threads=2, fma_broadcasts=False)


@pytest.mark.parametrize("config, bits, registers, fma_broadcasts", [
    ({"kind": "llvm", "mcpu": "haswell"}, 256, 16, False),
    ({"kind": "llvm", "mcpu": "skylake-avx512"}, 512, 32, True),
    ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}, 128, 32, True),
    ({"kind": "llvm", "mcpu": "znver5", "num-cores": 3}, 512, 32, True),
])
def test_vector_width_comes_from_the_target_not_the_host(config, bits, registers, fma_broadcasts):
    info = cpu_vector_info(tvm.target.Target(config))
    assert (info.bits, info.registers, info.fma_broadcasts) == (bits, registers, fma_broadcasts)
    if "num-cores" in config:
        assert info.threads == 3


@pytest.mark.parametrize("width, lanes, chunk", [
    (64, 16, 16), (28, 16, 14), (14, 16, 14), (7, 16, 7), (56, 16, 14), (17, 16, 17), (28, 8, 7), (12, 4, 4),
])
def test_x_chunk_divides_the_row_and_fits_a_vector(width, lanes, chunk):
    assert choose_x_chunk(width, lanes) == chunk


def _conv(channels, hw, in_per_group=32, groups=1, kernel=(3, 3)):
    return WindowShape(1, channels, hw, hw, in_per_group, channels // groups, kernel)


@pytest.mark.parametrize("shape", [
    _conv(128, 7), _conv(64, 14), _conv(32, 28), _conv(12, 28), _conv(48, 7, kernel=(3, 1)),
    _conv(64, 64), _conv(16, 14, in_per_group=1, groups=16), _conv(1, 28, in_per_group=1), _conv(64, 17),
])
@pytest.mark.parametrize("vec", [AVX512, AVX2], ids=["avx512", "avx2"])
def test_tile_fits_registers_and_divides_the_output(shape, vec):
    tile = plan_tile(shape, vec)
    registers_per_vector = -(-tile.x_chunk // vec.lanes())
    assert tile.accumulators * registers_per_vector <= vec.accumulators
    assert shape.out_per_group % tile.oc_block == 0
    assert shape.out_h % tile.row_block == 0
    assert shape.out_w % (tile.x_chunk * tile.x_chunks) == 0
    tasks = shape.channels // tile.oc_block * shape.out_h // tile.row_block
    assert tasks >= 4 * vec.threads or (tile.oc_block, tile.row_block) == (1, 1)


def test_dense_conv_blocks_channels_and_depthwise_blocks_rows():
    dense = plan_tile(_conv(64, 14), AVX512)
    assert dense.oc_block == 16 and dense.x_chunk == 14
    depthwise = plan_tile(_conv(16, 7, in_per_group=1, groups=16), AVX512)
    assert depthwise.oc_block == 1 and depthwise.row_block == 7  # the whole 7x7 map in registers


@pytest.mark.parametrize("shape, avx2_tile", [
    (_conv(32, 224, kernel=(1, 3)), (4, 2)),  # 28 row chunks: 4 x 3 does not divide
    # 12 x 1 before: 13 loads per 12 FMAs; 3 x 4 loads 7 but needs 12 + 4 + 1 registers of 16
    (_conv(12, 224, kernel=(3, 1)), (6, 2)),
    (WindowShape(1, 24, 28, 28, 64, 24, (3, 1), flat_pixels=True), (6, 2)),  # 98 flat vectors
])
def test_avx2_tile_loads_fewest_registers_per_fma(shape, avx2_tile):
    """AVX2 FMAs take no broadcast operand: each weight is a load, so the channel-first tile
    (8 or 12 channels x 1 vector) gives way to the one with the most FMAs per load; AVX-512 keeps it."""
    avx2, avx512 = plan_tile(shape, AVX2), plan_tile(shape, AVX512)
    assert (avx2.oc_block, avx2.x_chunks) == avx2_tile
    loads = lambda tile: (tile.oc_block + tile.x_chunks) / tile.accumulators  # noqa: E731
    assert loads(avx2) < loads(plan_tile(shape, CPUVectorInfo(256, 16, 2)))  # as if it could broadcast
    assert avx512.oc_block == min(16, shape.out_per_group) or avx512.x_chunks == 1
    live = avx2.accumulators + avx2.x_chunks + 1  # accumulators, shared input vectors, a weight
    assert live <= AVX2.registers


def _fused_conv_module():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 14, 14), "float32"))
    weight = relax.const(np.ones((16, 8, 3, 3), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, weight, padding=1)))
            out = bb.emit_output(relax.op.nn.max_pool2d(y, 2, 2))
        bb.emit_func_output(out)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})
    with target:
        fused = tvm.transform.Sequential(_backend_pipeline(target).legalize_passes(target))(bb.get())
    return fused, target


def test_pass_schedules_each_kernel_and_leaves_its_input_alone():
    mod, target = _fused_conv_module()
    before = {gv.name_hint: func for gv, func in mod.functions_items()}
    schedule = ApplyCPUSchedules(target)
    scheduled = schedule(mod)
    assert schedule.applied == {"fused_conv2d_relu": "DirectConv2D", "max_pool2d": "DirectConv2D"}
    for gv, func in mod.functions_items():  # dlight's own pass would have rewritten these in place
        assert func.same_as(before[gv.name_hint])
    assert all(int(scheduled[name].attrs[SCHEDULED_ATTR]) == 1 for name in schedule.applied)


def test_pass_keeps_functions_already_scheduled_and_ignores_other_targets():
    mod, target = _fused_conv_module()
    tuned = mod["max_pool2d"].with_attr(SCHEDULED_ATTR, True)  # as MetaScheduleApplyDatabase leaves it
    mod.update_func(mod.get_global_var("max_pool2d"), tuned)
    schedule = ApplyCPUSchedules(target)
    assert schedule(mod)["max_pool2d"].same_as(tuned)
    assert set(schedule.applied) == {"fused_conv2d_relu"}
    gpu = ApplyCPUSchedules(tvm.target.Target({"kind": "cuda", "arch": "sm_90"}))
    assert gpu(mod).same_as(mod) and gpu.applied == {}


@pytest.mark.parametrize("vec", [AVX512, AVX2], ids=["avx512", "avx2"])
@pytest.mark.parametrize("channels, hw", [(24, 56), (48, 28), (12, 12), (1, 28)])
def test_flat_tile_runs_whole_vectors_along_the_pixels(vec, channels, hw):
    shape = WindowShape(1, channels, hw, hw, 64, channels, (3, 1), flat_pixels=True)
    tile = plan_tile(shape, vec)
    lanes = vec.lanes()
    assert tile.flat == (hw % lanes != 0)  # rows that are whole vectors keep the row tile
    if tile.flat:
        assert tile.x_chunk == lanes and tile.row_block == 1
        assert tile.accumulators <= vec.accumulators
        assert (hw * hw) % (tile.x_chunk * tile.x_chunks) == 0 and channels % tile.oc_block == 0
        tasks = channels // tile.oc_block * hw * hw // (tile.x_chunk * tile.x_chunks)
        assert tasks >= 4 * vec.threads or (tile.oc_block, tile.x_chunks) == (1, 1)


def test_flat_tile_needs_whole_vectors_of_pixels():
    odd = WindowShape(1, 32, 14, 14, 64, 32, (3, 1), flat_pixels=True)  # 196 pixels: 12.25 vectors
    assert not plan_tile(odd, AVX512).flat and plan_tile(odd, AVX512).x_chunk == 14


def _channels_last(channels, hw, in_per_group, kernel=(3, 1)):
    return WindowShape(1, channels, hw, hw, in_per_group, channels, kernel, channels_last_weight=True)


@pytest.mark.parametrize("shape", [
    _channels_last(96, 2, 256), _channels_last(48, 4, 128), _channels_last(192, 1, 512, (1, 1)),
    _channels_last(512, 1, 192, (1, 1)), _channels_last(32, 7, 64), _channels_last(16, 14, 32),
])
@pytest.mark.parametrize("vec", [AVX512, AVX2], ids=["avx512", "avx2"])
def test_channel_tile_fits_registers_and_divides_the_output(shape, vec):
    tile = plan_channel_tile(shape, vec)
    registers = tile.f_vectors * tile.row_block * tile.x_block * -(-tile.f_chunk // vec.lanes())
    assert registers <= vec.accumulators
    assert shape.channels % (tile.f_chunk * tile.f_vectors) == 0
    assert shape.out_h % tile.row_block == 0 and shape.out_w % tile.x_block == 0
    if tile.parallel:
        tasks = (shape.channels // (tile.f_chunk * tile.f_vectors) * shape.out_h // tile.row_block
                 * shape.out_w // tile.x_block)
        assert tasks >= CHANNEL_TASKS_PER_THREAD * vec.threads or (tile.f_vectors, tile.row_block) == (1, 1)


def test_channel_tile_keeps_several_accumulators_on_a_tiny_map():
    """ResNet-18's layer-3 3x1 conv (256 -> 96 channels on a 2x2 map): split for 2 threads, the tile
    still holds 3 channel vectors x 2 pixels, so each weight load feeds 2 FMAs and each broadcast 3
    (4 tasks per thread left 1 vector x 2 pixels, 5-6% slower over the model)."""
    tile = plan_channel_tile(_channels_last(96, 2, 256), AVX512)
    assert tile.parallel and tile.f_chunk == 16
    assert tile.f_vectors * tile.row_block * tile.x_block >= 6


def test_channel_tile_on_a_prime_width_takes_the_whole_row():
    """A 7-wide map on AVX2 (half its budget is 6 columns): a one-column tile would stream the
    weights once per pixel, a whole-row tile once per row. AVX-512's tile already held the row."""
    shape = _channels_last(192, 7, 512)
    assert plan_channel_tile(shape, AVX2).x_block == 7
    assert plan_channel_tile(shape, AVX512).x_block == 7
    assert plan_channel_tile(_channels_last(16, 14, 32), AVX512).x_block == 7  # half the row: kept


@pytest.mark.parametrize("shape, most_vectors", [
    (_channels_last(96, 14, 256), 2),  # 3 vectors x 2x2 pixels: 12 + 3 weights + 2 > 16
    (WindowShape(1, 96, 7, 14, 256, 96, (3, 1), channels_last_weight=True), 4),  # 6 x 1x2: 12 + 6 + 1
])
def test_channel_tile_keeps_its_live_vectors_in_the_register_file(shape, most_vectors):
    """AVX2 has 16 vector registers: accumulators, the weight vectors the pixels share and the
    broadcast input must fit, or LLVM spills accumulators on every tap."""
    tile = plan_channel_tile(shape, AVX2)
    assert tile.f_vectors == most_vectors


def test_channel_tile_over_the_register_file_drops_what_keeps_more_accumulators():
    """VGG-FMNIST 28²'s 3x1 conv, 64 -> 24 channels on 14x14, on AVX2: 3 vectors x 2x2 pixels need
    17 registers. One vector fewer leaves 1 (24 channels are 3 vectors), 4 accumulators; a row fewer
    leaves 3 vectors x 1x2 pixels, 6 (that kernel alone 20.4 -> 16.2 us on a Zen 3)."""
    tile = plan_channel_tile(_channels_last(24, 14, 64), AVX2)
    assert (tile.f_vectors, tile.row_block, tile.x_block) == (3, 1, 2)


def test_x86_vectorizes_channels_on_maps_up_to_56_wide():
    """AVX2 and AVX-512: maps up to 56 wide (measured on both); NEON only maps narrower than a vector."""
    assert AVX512.channel_vector_width == 64
    assert AVX2.channel_vector_width == 64
    assert CPUVectorInfo(bits=128, registers=32, threads=4).channel_vector_width == 4


def test_channel_tile_splits_a_reduction_whose_weights_overflow_l1():
    """ResNet-18's 3x1 conv, 256 -> 96 channels on 14x14: 2 vectors x 768 taps of weights (48 KiB)
    per tile overflow AVX2's 32 KiB L1, so the tile runs in passes of 64 input channels (12 KiB);
    a conv whose tile weights fit keeps one pass, and AVX-512 (unmeasured) never splits."""
    shape = _channels_last(96, 14, 256)
    tile = plan_channel_tile(shape, AVX2)
    assert tile.rc_block == 64 and shape.in_per_group % tile.rc_block == 0
    assert tile.f_chunk * tile.f_vectors * tile.rc_block * 3 * 4 <= AVX2.l1_weight_bytes // 2
    assert plan_channel_tile(_channels_last(96, 14, 32), AVX2).rc_block == 0
    assert plan_channel_tile(shape, AVX512).rc_block == 0
