"""Our CPU schedules: every conv/pool shape is scheduled (parallel + vectorized) and still exact.

All cases live in one Relax module (one call per case, each fused into its own PrimFunc), so the
whole set is compiled once per target; outputs are checked against PyTorch to 1e-4.
"""

import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from tvm import relax, s_tir
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.meta_schedule.arg_info import ArgInfo

from tvm_lowrank.build import build, compile_pipeline, fuse, run_vm
from tvm_lowrank.frontend import load_model, to_relax
from tvm_lowrank.models import create_model
from tvm_lowrank.passes import DecomposeConv2D
from tvm_lowrank.reference import lowrank_reference
from tvm_lowrank.schedule import cpu_vector_info, match_window, plan_tile
from tvm_lowrank.schedule.cpu_conv import (LAYOUT_REWRITE_PREPROC, MIN_PARALLEL_CHANNEL_WORK, MIN_PARALLEL_WORK,
                                           plan_channel_tile)
from tvm_lowrank.targets import TargetSpec, load_target


@dataclass(frozen=True)
class ConvCase:
    name: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    hw: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: int = 1
    groups: int = 1
    epilogue: str = "bias_relu"  # "none", "bias_relu", "residual" (bias + residual add + relu)


@dataclass(frozen=True)
class PoolCase:
    name: str
    kind: str  # "max" or "avg"
    channels: int
    hw: tuple[int, int]
    kernel: int
    stride: int
    padding: int = 0


CONV_CASES = [
    ConvCase("kxk", 16, 32, (3, 3), (16, 16), padding=(1, 1, 1, 1)),
    ConvCase("kx1", 32, 12, (3, 1), (28, 28), padding=(1, 0, 1, 0)),
    ConvCase("1xk", 12, 16, (1, 3), (7, 7), padding=(0, 1, 0, 1)),
    ConvCase("1xk_wide", 24, 64, (1, 3), (14, 14), padding=(0, 1, 0, 1)),
    ConvCase("1x1", 16, 24, (1, 1), (10, 10)),
    ConvCase("5x5", 4, 8, (5, 5), (9, 9), padding=(2, 2, 2, 2)),
    ConvCase("7x1", 6, 8, (7, 1), (14, 14), padding=(3, 0, 3, 0)),
    ConvCase("depthwise", 16, 16, (3, 3), (14, 14), padding=(1, 1, 1, 1), groups=16),
    ConvCase("depthwise_kx1", 16, 16, (3, 1), (9, 9), padding=(1, 0, 1, 0), groups=16),
    ConvCase("depthwise_1xk", 16, 16, (1, 3), (9, 9), padding=(0, 1, 0, 1), groups=16),
    ConvCase("grouped", 8, 16, (3, 3), (8, 8), padding=(1, 1, 1, 1), groups=4),
    ConvCase("strided", 8, 16, (3, 3), (15, 15), stride=2, padding=(1, 1, 1, 1)),
    ConvCase("strided_1x1", 8, 16, (1, 1), (14, 14), stride=2),
    ConvCase("dilated", 8, 8, (3, 3), (12, 12), padding=(2, 2, 2, 2), dilation=2),
    ConvCase("padded_asymmetric", 8, 8, (3, 3), (11, 13), padding=(0, 1, 2, 1)),
    ConvCase("wide_row", 4, 8, (1, 3), (5, 40), padding=(0, 1, 0, 1)),
    ConvCase("prime_row", 4, 8, (1, 3), (3, 37), padding=(0, 1, 0, 1)),
    ConvCase("single_channel", 1, 1, (3, 1), (28, 28), padding=(1, 0, 1, 0), epilogue="none"),
    ConvCase("no_epilogue", 8, 16, (3, 3), (12, 12), padding=(1, 1, 1, 1), epilogue="none"),
    ConvCase("residual", 16, 16, (3, 3), (8, 8), padding=(1, 1, 1, 1), epilogue="residual"),
    # narrower than a vector: channel-last weights, channels in the vector lanes (+ dead taps trimmed)
    ConvCase("map_1x1_kx1", 32, 48, (3, 1), (1, 1), padding=(1, 0, 1, 0)),
    ConvCase("map_2x2_residual", 16, 16, (3, 3), (2, 2), padding=(1, 1, 1, 1), epilogue="residual"),
    ConvCase("narrow_odd_channels", 8, 12, (1, 3), (5, 5), padding=(0, 1, 0, 1)),
    ConvCase("narrow_no_epilogue", 16, 32, (3, 3), (3, 3), padding=(1, 1, 1, 1), epilogue="none"),
    ConvCase("narrow_strided", 64, 64, (3, 3), (8, 8), stride=2, padding=(1, 1, 1, 1)),
    # on AVX2, 98 KiB of weights per tile: passes of 32 input channels (`_reduction_block`)
    ConvCase("narrow_reduction_passes", 256, 64, (3, 1), (7, 14), padding=(1, 0, 1, 0)),
    # one kernel column, unit strides, rows not a whole number of vectors: one flat pixel axis
    ConvCase("flat_kx1_residual", 16, 16, (3, 1), (12, 28), padding=(1, 0, 1, 0), epilogue="residual"),
    ConvCase("flat_1x1_no_epilogue", 8, 12, (1, 1), (6, 24), epilogue="none"),
    ConvCase("flat_depthwise_kx1", 16, 16, (3, 1), (12, 12), padding=(1, 0, 1, 0), groups=16),
    # column stride 2 through a padding pass: the padded input stored as two column phases
    ConvCase("phases_1xk_strided", 4, 16, (1, 7), (6, 40), stride=2, padding=(0, 3, 0, 3)),
]

POOL_CASES = [
    PoolCase("maxpool_2x2", "max", 16, (14, 14), 2, 2),
    PoolCase("maxpool_3x3_padded", "max", 8, (15, 15), 3, 2, padding=1),
    PoolCase("avgpool_3x3", "avg", 8, (12, 12), 3, 1, padding=1),
    PoolCase("maxpool_3x3_phases", "max", 8, (16, 36), 3, 2, padding=1),
]


def _conv_args(case: ConvCase, rng):
    x = rng.standard_normal((1, case.in_channels, *case.hw)).astype("float32")
    weight = rng.standard_normal((case.out_channels, case.in_channels // case.groups, *case.kernel)).astype("float32")
    bias = rng.standard_normal((1, case.out_channels, 1, 1)).astype("float32")
    return x, weight, bias


def _torch_conv(case: ConvCase, x, weight, bias):
    top, left, bottom, right = case.padding
    xt = F.pad(torch.from_numpy(x), (left, right, top, bottom))
    y = F.conv2d(xt, torch.from_numpy(weight), stride=case.stride, dilation=case.dilation, groups=case.groups)
    if case.epilogue == "none":
        return y
    y = y + torch.from_numpy(bias)
    if case.epilogue == "residual":
        y = y + torch.from_numpy(x)
    return torch.relu(y)


def _out_width(case: ConvCase) -> int:
    kernel_extent = (case.kernel[1] - 1) * case.dilation + 1
    return (case.hw[1] + case.padding[1] + case.padding[3] - kernel_extent) // case.stride + 1


def _relax_conv(bb, case: ConvCase, x_var, weight, bias):
    y = bb.emit(relax.op.nn.conv2d(x_var, relax.const(weight), strides=case.stride, padding=case.padding,
                                   dilation=case.dilation, groups=case.groups))
    if case.epilogue == "none":
        return y
    y = bb.emit(relax.op.add(y, relax.const(bias)))
    if case.epilogue == "residual":
        y = bb.emit(relax.op.add(y, x_var))
    return bb.emit(relax.op.nn.relu(y))


def _torch_pool(case: PoolCase, x):
    pool = F.max_pool2d if case.kind == "max" else F.avg_pool2d
    return pool(torch.from_numpy(x), case.kernel, case.stride, case.padding)


def _relax_pool(bb, case: PoolCase, x_var):
    pool = relax.op.nn.max_pool2d if case.kind == "max" else relax.op.nn.avg_pool2d
    return bb.emit(pool(x_var, case.kernel, case.stride, case.padding, count_include_pad=True)
                   if case.kind == "avg" else pool(x_var, case.kernel, case.stride, case.padding))


@pytest.fixture(scope="module")
def all_cases():
    """(Relax module with one output per case, its inputs, the PyTorch outputs)."""
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    inputs, expected, params, emit = [], [], [], []
    for case in CONV_CASES:
        x, weight, bias = _conv_args(case, rng)
        inputs.append(x)
        expected.append(_torch_conv(case, x, weight, bias).numpy())
        params.append(relax.Var(f"x_{case.name}", relax.TensorType(x.shape, "float32")))
        emit.append(lambda var, case=case, weight=weight, bias=bias: _relax_conv(bb, case, var, weight, bias))
    for case in POOL_CASES:
        x = rng.standard_normal((1, case.channels, *case.hw)).astype("float32")
        inputs.append(x)
        expected.append(_torch_pool(case, x).numpy())
        params.append(relax.Var(f"x_{case.name}", relax.TensorType(x.shape, "float32")))
        emit.append(lambda var, case=case: _relax_pool(bb, case, var))
    with bb.function("main", params):
        with bb.dataflow():
            outputs = [emit_case(var) for emit_case, var in zip(emit, params)]
            result = bb.emit_output(relax.Tuple(outputs))
        bb.emit_func_output(result)
    return bb.get(), inputs, expected


def _host_target(name):
    target = load_target(name)
    if not target.runs_on_host():
        pytest.skip(f"this CPU lacks {name}'s ISA ({', '.join(target.cpu_flags)})")
    return target


@pytest.mark.parametrize("target_name", ["x86-avx2", "x86-avx512"])
def test_scheduled_build_matches_pytorch(target_name, all_cases):
    mod, inputs, expected = all_cases
    vm = relax.VirtualMachine(build(mod, _host_target(target_name)), tvm.cpu())
    outputs = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    names = [case.name for case in CONV_CASES + POOL_CASES]
    for name, output, want in zip(names, outputs, expected):
        np.testing.assert_allclose(output.numpy(), want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_every_conv_and_pool_is_scheduled_parallel_and_vectorized(all_cases):
    """Every kernel is vectorized; parallel unless too small to pay for a fork-join."""
    target = load_target("x86-avx512")
    lowered = compile_pipeline(target)(all_cases[0])
    fused = fuse(all_cases[0], target)  # the same kernels, before scheduling
    kernels = [gv.name_hint for gv, func in fused.functions_items()
               if isinstance(func, tvm.tirx.PrimFunc) and ("conv2d" in gv.name_hint or "pool" in gv.name_hint)]
    assert len(kernels) == len(CONV_CASES) + len(POOL_CASES), sorted(kernels)
    shapes = {name: match_window(s_tir.Schedule(fused[name])).shape for name in kernels}
    vec = cpu_vector_info(target.tvm_target())  # channel tiles: maps narrower than a vector, or whole channel vectors
    narrow = [case for case in CONV_CASES if case.groups == 1 and (_out_width(case) < vec.lanes() or (
        _out_width(case) < vec.channel_vector_width and case.out_channels % vec.lanes() == 0))]
    assert sum(shape.channels_last_weight for shape in shapes.values()) == len(narrow)
    parallel = 0
    for name in kernels:
        work = shapes[name].work
        func = lowered[name]
        text = func.script()
        assert int(func.attrs["tirx.is_scheduled"]) == 1, name
        assert "T.vectorized(" in text, name
        parallel_from = MIN_PARALLEL_CHANNEL_WORK if shapes[name].channels_last_weight else MIN_PARALLEL_WORK
        sch = s_tir.Schedule(func)
        window_parallel = any(_in_parallel_loop(sch, block) for block in _blocks(sch)
                              if not sch.get(block).name_hint.startswith("pad_temp"))
        assert window_parallel == (work >= parallel_from), name
        parallel += work >= parallel_from
    assert parallel >= 3


def _blocks(sch: s_tir.Schedule) -> list:
    """Every block of a scheduled kernel, nested ones (init, update) included."""
    found, stack = [], sch.get_child_blocks(get_root_block(sch))
    while stack:
        block = stack.pop()
        found.append(block)
        stack.extend(sch.get_child_blocks(block))
    return found


def _in_parallel_loop(sch: s_tir.Schedule, block) -> bool:
    return any(sch.get(loop).kind == tvm.tirx.ForKind.PARALLEL for loop in sch.get_loops(block))


def _allocated_shapes(func) -> dict[str, tuple[int, ...]]:
    sch = s_tir.Schedule(func)
    return {buffer.name: tuple(int(extent) for extent in buffer.shape)
            for buffer in sch.get(get_root_block(sch)).alloc_buffers}


def test_flat_pixels_and_column_phases_change_the_layouts_they_should(all_cases):
    """A flat tile keeps a (n, c, y * W + x) accumulator; a strided read through real padding makes
    the padded input (n, c, y, phase, x // stride), copied in border and interior columns; every
    other kernel keeps NCHW buffers."""
    target = load_target("x86-avx512")
    lowered = compile_pipeline(target)(all_cases[0])
    fused = fuse(all_cases[0], target)
    vec = cpu_vector_info(target.tvm_target())
    seen = {"flat": 0, "phases": 0}
    for gv, func in fused.functions_items():
        sch = s_tir.Schedule(func) if isinstance(func, tvm.tirx.PrimFunc) else None
        blocks = sch and match_window(sch)
        if not blocks or blocks.shape.channels_last_weight:
            continue
        shapes = _allocated_shapes(lowered[gv.name_hint])
        flat = plan_tile(blocks.shape, vec).flat
        accumulator = next(shape for name, shape in shapes.items() if not name.startswith("pad_temp"))
        assert len(accumulator) == (3 if flat else 4), gv.name_hint
        phases = [shape for name, shape in shapes.items() if name.startswith("pad_temp") and len(shape) == 5]
        stride, pad = blocks.shape.column_stride, blocks.pads and sch.get(blocks.pads[0])
        in_width, padded_width = (int(pad.reads[0].source.shape[3]), int(pad.writes[0].source.shape[3])) if pad else (0, 0)
        splits = stride > 1 and padded_width > in_width and padded_width % stride == 0
        assert len(phases) == splits, gv.name_hint
        if phases:
            assert phases[0][3] == blocks.shape.column_stride
            # the phase copy's columns in three loops: the middle one, reading the input in every
            # phase, is a vector load with no bounds check
            assert lowered[gv.name_hint].script().count('_partition")') == 3, gv.name_hint
        seen["flat"] += flat
        seen["phases"] += len(phases)
    # among the cases left with row tiles: maps from 64 wide, or channels that leave a vector part-empty
    assert seen == {"flat": 4, "phases": 1}


def test_schedules_false_keeps_tvm_default_loops(all_cases):
    lowered = compile_pipeline(load_target("x86-avx512"), schedules=False)(all_cases[0])
    texts = [func.script() for _, func in lowered.functions_items() if isinstance(func, tvm.tirx.PrimFunc)]
    assert not any("T.parallel(" in text or "T.vectorized(" in text for text in texts)


def _single_conv_module(width: int, channels: int = 16, height: int = 8, kernel: tuple[int, int] = (3, 1)):
    padding = (kernel[0] // 2, kernel[1] // 2) * 2
    case = ConvCase("probe", channels, 32, kernel, (height, width), padding=padding)
    x, weight, bias = _conv_args(case, np.random.default_rng(1))
    bb = relax.BlockBuilder()
    x_var = relax.Var("x", relax.TensorType(x.shape, "float32"))
    with bb.function("main", [x_var]):
        with bb.dataflow():
            out = bb.emit_output(_relax_conv(bb, case, x_var, weight, bias))
        bb.emit_func_output(out)
    return bb.get()


def _pad_loops(kernel) -> dict[str, list[int]]:
    """{padding block: extents of every loop around it, through the blocks that enclose it}."""
    sch = s_tir.Schedule(kernel)
    blocks = _blocks(sch)
    parent = {sch.get(child).name_hint: block for block in blocks for child in sch.get_child_blocks(block)}
    loops = {}
    for block in blocks:
        name = sch.get(block).name_hint
        if name.startswith("pad_temp"):
            extents, scope = [], block
            while scope is not None:
                extents = [int(sch.get(loop).extent) for loop in sch.get_loops(scope)] + extents
                scope = parent.get(sch.get(scope).name_hint)
            loops[name] = extents
    return loops


@pytest.mark.parametrize("channels, size, kernel, expected", [
    (4, 8, (3, 3), {"pad_temp": False, "pad_temp_pad_const": False}),  # 400 floats: serial fill + copy
    (32, 28, (3, 3), {"pad_temp": True}),  # 29K: one parallel pass with bounds checks
    (64, 56, (3, 3), {"pad_temp": True, "pad_temp_pad_const": True}),  # 215K: parallel fill + parallel copy
    (4, 8, (3, 1), {"pad_temp": False, "pad_temp_pad_const": False}),  # rows only, but small
], ids=["small", "medium", "large", "small_rows"])
def test_padding_pass_is_scheduled_by_its_size(channels, size, kernel, expected):
    """{padding block: whether it runs in a parallel loop}, by padded size (PARALLEL_PAD_ELEMENTS,
    SINGLE_PASS_PAD_ELEMENTS), for pads of rows and columns."""
    lowered = compile_pipeline(load_target("x86-avx512"))(_single_conv_module(size, channels, size, kernel))
    kernel = next(func for gv, func in lowered.functions_items() if "conv2d" in gv.name_hint)
    sch = s_tir.Schedule(kernel)
    pads = {sch.get(block).name_hint: _in_parallel_loop(sch, block) for block in _blocks(sch)
            if sch.get(block).name_hint.startswith("pad_temp")}
    assert pads == expected


@pytest.mark.parametrize("channels, size", [(32, 28), (64, 56)], ids=["medium", "large"])
def test_row_padding_is_split_at_the_input_rows(channels, size):
    """From SINGLE_PASS_PAD_ELEMENTS, a pad of rows only (a k x 1 conv's input) runs in one parallel
    loop over channels whose rows are three loops: the zero row above, the input's rows (a plain
    copy once the loop bounds simplify its check away), the zero row below."""
    lowered = compile_pipeline(load_target("x86-avx512"))(_single_conv_module(size, channels, size))
    kernel = next(func for gv, func in lowered.functions_items() if "conv2d" in gv.name_hint)
    leaves = {name: extents for name, extents in _pad_loops(kernel).items()
              if not name.endswith(("_partition", "_common"))}
    assert sorted(leaves.values()) == sorted([[channels, 1, size], [channels, size, size], [channels, 1, size]])
    sch = s_tir.Schedule(kernel)
    common = next(block for block in _blocks(sch) if sch.get(block).name_hint.endswith("_common"))
    assert _in_parallel_loop(sch, common)


def test_register_tile_is_not_a_workspace_buffer():
    """The register tile lives on the stack, the kernel's only TVMBackendAllocWorkspace is its
    padded input (a workspace tile next to it costs ~2x, see `register_accumulator`): a tile of 16
    channels x 16 pixels is 1 KiB, which TVM alone would put in the workspace
    (`stack_buffers.StackScratchBuffers`); 16 channels x 30 x 28 floats of padding are over its
    limit."""
    executable = build(_single_conv_module(width=28, channels=16, height=28), load_target("x86-avx512"))
    llvm_ir = executable.mod.imports[0].inspect_source("ll")
    workspace = re.findall(r"%(\w+) = tail call ptr %\w+\(i32 1, i32 %\w+, i64 (\d+)", llvm_ir)
    assert workspace == [("pad_temp", str(16 * 30 * 28 * 4))]


AARCH64_NEON = TargetSpec("aarch64-neon", "cross build, assembly only", {
    "kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}, None, None, None, (), "aarch64")


@pytest.mark.parametrize("target, vector_fma", [
    ("x86-avx2", lambda line: "vfmadd" in line and "ps" in line and "%ymm" in line),
    ("x86-avx512", lambda line: "vfmadd" in line and "ps" in line and "%zmm" in line),
    (AARCH64_NEON, lambda line: "fmla" in line and ".4s" in line),
], ids=["avx2", "avx512", "neon"])
def test_generated_code_has_full_width_vector_fma(target, vector_fma):
    """Assembly only (nothing runs), so every ISA is checked on any host."""
    spec = load_target(target) if isinstance(target, str) else target
    asm = build(_single_conv_module(width=32), spec).mod.imports[0].inspect_source("asm")
    assert any(vector_fma(line) for line in asm.splitlines()), f"no full-width vector FMA for {spec.name}"


@pytest.mark.parametrize("model_name, method", [("resnet-fmnist", "dense"), ("mobilenet-fmnist", "cp")])
def test_bundled_models_match_pytorch(model_name, method):
    """Residual adds, strided 1x1 shortcuts, depthwise convs and CP chains, end to end."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 28, 28)
    source = load_model(create_model(model_name, pretrained=False), x)
    mod, reference = to_relax(source), source.run
    if method != "dense":
        rewrite = DecomposeConv2D(method=method, policy="macs:0.5")
        mod = rewrite(mod)
        reference = lowrank_reference(source, rewrite.records)
    vm = relax.VirtualMachine(build(mod, _host_target("x86-avx2")), tvm.cpu())
    np.testing.assert_allclose(run_vm(vm, x.numpy()), reference(x.numpy()), rtol=1e-4, atol=1e-5)


def test_channel_tile_weights_are_folded_into_blocks_of_the_tile(all_cases):
    """A channel-vector conv reads each tile's weights as one block: the build stores the constant
    as [O/F, I, KH, KW, F] (F: the tile's channels) and no kernel is left copying it."""
    target = load_target("x86-avx2")
    lowered = compile_pipeline(target)(all_cases[0])
    fused = fuse(all_cases[0], target)
    vec = cpu_vector_info(target.tvm_target())
    blocked = 0
    for gv, func in fused.functions_items():
        blocks = match_window(s_tir.Schedule(func)) if isinstance(func, tvm.tirx.PrimFunc) else None
        if blocks is None or not blocks.shape.channels_last_weight:
            continue
        tile = plan_channel_tile(blocks.shape, vec)
        channels, kernel = tile.f_chunk * tile.f_vectors, blocks.shape.kernel
        in_channels, out_channels = blocks.shape.in_per_group, blocks.shape.channels
        shapes = [tuple(int(d) for d in arg.shape) for arg in ArgInfo.from_prim_func(lowered[gv.name_hint])]
        if out_channels > channels:
            assert (out_channels // channels, in_channels, *kernel, channels) in shapes, gv.name_hint
            blocked += 1
        else:
            assert (in_channels, *kernel, out_channels) in shapes, gv.name_hint
    assert blocked >= 3
    assert not any(LAYOUT_REWRITE_PREPROC in func.script() for _, func in lowered.functions_items()
                   if isinstance(func, tvm.tirx.PrimFunc))
