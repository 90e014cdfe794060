"""PadConvInputsAtProducer: a conv's padding written by the kernel that produces its input.

Structure of the rewritten and fused IR, the padding copy gone from the built kernels, and
numerics against PyTorch (the rewrite must leave outputs exact).
"""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from tvm import relax

from compiler_helpers import conv_calls
from tvm_lowrank.build import build, fuse, run_vm
from tvm_lowrank.passes import ChannelsLastNarrowConvWeights, PadConvInputsAtProducer
from tvm_lowrank.passes.pad_at_producer import border_pad
from tvm_lowrank.targets import host_cpu_target, load_target

ROWS, COLUMNS = (1, 0, 1, 0), (0, 1, 0, 1)


def test_border_pad_writes_the_input_between_zero_rows():
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 5)).astype("float32")
    padded = border_pad(x.shape, (1, 3, 2, 1)).with_attr("global_symbol", "main")  # top, left, bottom, right
    kernel = tvm.compile(tvm.IRModule({"main": padded}), target="llvm")
    y = tvm.runtime.tensor(np.full((1, 3, 7, 9), np.nan, "float32"))  # every element must be written
    kernel(tvm.runtime.tensor(x), y)
    np.testing.assert_array_equal(y.numpy(), np.pad(x, ((0, 0), (0, 0), (1, 2), (3, 1))))


def _weights(rng, channels, hidden, out):
    return (rng.standard_normal((hidden, channels, 1, 3)).astype("float32"),
            rng.standard_normal((1, hidden, 1, 1)).astype("float32"),
            rng.standard_normal((out, hidden, 3, 1)).astype("float32"))


def _two_convs(x_shape, weights, padding=ROWS, producer="relu", reuse=False):
    """x -> 1x3 conv + bias -> ReLU or 2x2 max pool -> second conv with `padding` (+ its input
    again when `reuse`, so that input has two users)."""
    w1, bias, w2 = weights
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w1), padding=COLUMNS))
            y = bb.emit(relax.op.nn.relu(relax.op.add(y, relax.const(bias))))
            if producer == "pool":
                y = bb.emit(relax.op.nn.max_pool2d(y, pool_size=2, strides=2))
            z = bb.emit(relax.op.nn.conv2d(y, relax.const(w2), padding=padding))
            out = bb.emit_output(relax.op.add(z, y) if reuse else z)
        bb.emit_func_output(out)
    return bb.get()


def _torch_two_convs(x, weights, padding=ROWS, producer="relu", reuse=False):
    w1, bias, w2 = (torch.from_numpy(w) for w in weights)
    top, left, bottom, right = padding
    y = torch.relu(F.conv2d(torch.from_numpy(x), w1, padding=(0, 1)) + bias)
    if producer == "pool":
        y = F.max_pool2d(y, 2)
    z = F.conv2d(F.pad(y, (left, right, top, bottom)), w2)
    return (z + y if reuse else z).numpy()


def _border_pads(mod) -> list:
    return [binding.value for block in mod["main"].body.blocks for binding in block.bindings
            if isinstance(binding.value, relax.Call) and binding.value.op.same_as(tvm.ir.Op.get("relax.call_tir"))]


def _second_conv(weights, padding):
    """A 3x1 second conv for row padding, 1x3 for column padding: the output keeps its size."""
    return weights if padding == ROWS else weights[:2] + (weights[2].transpose(0, 1, 3, 2).copy(),)


@pytest.mark.parametrize("padding", [ROWS, COLUMNS], ids=["rows", "columns"])
@pytest.mark.parametrize("producer", ["relu", "pool"])
def test_padding_moves_into_the_producing_kernel(producer, padding):
    rng = np.random.default_rng(1)
    x, weights = rng.standard_normal((1, 2, 12, 12)).astype("float32"), _second_conv(_weights(rng, 2, 8, 8), padding)
    mod = _two_convs(x.shape, weights, padding, producer=producer)
    rewritten = PadConvInputsAtProducer()(mod)
    # the first conv reads the function's input: it keeps its padding
    assert [tuple(int(p) for p in call.attrs.padding) for call in conv_calls(rewritten)] == [COLUMNS, (0, 0, 0, 0)]
    assert len(_border_pads(rewritten)) == 1
    target = load_target(host_cpu_target())
    kernels = [gvar.name_hint for gvar, func in fuse(mod, target).functions_items() if isinstance(func, tvm.tirx.PrimFunc)]
    producer_op = "conv2d" if producer == "relu" else "max_pool2d"
    assert any(producer_op in name and "border_pad" in name for name in kernels), kernels
    assert not any(name.startswith("border_pad") for name in kernels), kernels  # no kernel of its own
    vm = relax.VirtualMachine(build(mod, target), tvm.cpu())
    expected = _torch_two_convs(x, weights, padding, producer=producer)
    np.testing.assert_allclose(run_vm(vm, x), expected, rtol=1e-5, atol=1e-4)


def test_input_with_two_users_keeps_its_padding():
    """The producer's result also feeds an add: its unpadded layout must stay."""
    rng = np.random.default_rng(2)
    x, weights = rng.standard_normal((1, 2, 8, 8)).astype("float32"), _weights(rng, 2, 8, 8)
    mod = _two_convs(x.shape, weights, reuse=True)
    rewritten = PadConvInputsAtProducer()(mod)
    assert not _border_pads(rewritten)
    assert [tuple(int(p) for p in call.attrs.padding) for call in conv_calls(rewritten)] == [COLUMNS, ROWS]
    vm = relax.VirtualMachine(build(mod, load_target(host_cpu_target())), tvm.cpu())
    np.testing.assert_allclose(run_vm(vm, x), _torch_two_convs(x, weights, reuse=True), rtol=1e-5, atol=1e-4)


def test_chains_are_padded_stage_by_stage():
    """A Tai chain's second conv reads the first's output: both pads move (two rounds of the pass)."""
    rng = np.random.default_rng(4)
    w1, bias, w2 = _weights(rng, 2, 8, 8)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 2, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(w1), padding=COLUMNS)))
            v = bb.emit(relax.op.nn.conv2d(y, relax.const(w2), padding=ROWS))
            h = bb.emit(relax.op.nn.conv2d(v, relax.const(w2.transpose(0, 1, 3, 2).copy()), padding=COLUMNS))
            out = bb.emit_output(relax.op.nn.relu(h))
        bb.emit_func_output(out)
    rewritten = PadConvInputsAtProducer()(bb.get())
    assert [tuple(int(p) for p in call.attrs.padding) for call in conv_calls(rewritten)] == [COLUMNS, (0,) * 4, (0,) * 4]
    assert len(_border_pads(rewritten)) == 2


def test_consumer_kernel_makes_no_padded_copy():
    """16 channels x 30 x 28 padded floats (53,760 bytes) were a workspace buffer of the 3x1 conv:
    with its rows written by the 1x3 conv, no kernel takes workspace memory at all."""
    rng = np.random.default_rng(3)
    x, weights = rng.standard_normal((1, 1, 28, 28)).astype("float32"), _weights(rng, 1, 16, 16)
    executable = build(_two_convs(x.shape, weights), load_target("x86-avx512"))
    llvm_ir = executable.mod.imports[0].inspect_source("ll")
    assert not re.findall(r"= tail call ptr %\w+\(i32 1, i32 %\w+, i64 \d+", llvm_ir)


def _strided_second_conv(x_shape, weights):
    """`_two_convs` with a 1x3 second conv of column stride 2 (a ResNet stem half, a downsampling H conv)."""
    w1, bias, w2 = weights
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(relax.op.add(relax.op.nn.conv2d(x, relax.const(w1), padding=COLUMNS),
                                                      relax.const(bias))))
            out = bb.emit_output(relax.op.nn.conv2d(y, relax.const(w2), strides=(1, 2), padding=COLUMNS))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("channels_last", [False, True], ids=["row-vectorized", "channel-vectorized"])
def test_column_strided_conv_keeps_its_phase_split_padding(channels_last):
    """A row-vectorized conv reading every second column pads its input itself (the padding pass
    stores column phases, so its vectors are contiguous); a channel-vectorized one reads single
    values and takes its border from the producer."""
    rng = np.random.default_rng(5)
    w1, bias, w2 = _weights(rng, 2, 8, 16)
    weights = (w1, bias, w2.transpose(0, 1, 3, 2).copy())  # 1x3
    x = rng.standard_normal((1, 2, 6, 12)).astype("float32")
    mod = _strided_second_conv(x.shape, weights)
    if channels_last:
        mod = ChannelsLastNarrowConvWeights(16)(mod)
    rewritten = PadConvInputsAtProducer()(mod)
    assert len(_border_pads(rewritten)) == int(channels_last)
    assert tuple(int(p) for p in conv_calls(rewritten)[1].attrs.padding) == ((0,) * 4 if channels_last else COLUMNS)
    target = load_target(host_cpu_target())
    vm = relax.VirtualMachine(build(mod, target), tvm.cpu())
    y = torch.relu(F.conv2d(torch.from_numpy(x), torch.from_numpy(w1), padding=(0, 1)) + torch.from_numpy(bias))
    expected = F.conv2d(y, torch.from_numpy(weights[2]), stride=(1, 2), padding=(0, 1)).numpy()
    np.testing.assert_allclose(run_vm(vm, x), expected, rtol=1e-5, atol=1e-4)
