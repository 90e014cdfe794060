"""The Relax rewrites before legalization: dead-tap trimming and channel-last weights of narrow convs.

Structure of the rewritten IR and numerics against PyTorch (both passes must leave outputs exact).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tvm import relax

from compiler_helpers import build_and_run, conv_calls, kernel_shape
from tvm_lowrank.passes import ChannelsLastNarrowConvWeights, TrimDeadConvTaps
from tvm_lowrank.passes.trim_conv_taps import live_taps


def _conv_module(x_shape, weight, padding, stride=1, dilation=1, groups=1, relu=True):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), strides=stride, padding=padding,
                                           dilation=dilation, groups=groups))
            out = bb.emit_output(relax.op.nn.relu(y) if relu else y)  # without: `out = y`, a var re-bound
        bb.emit_func_output(out)
    return bb.get()


def _torch_conv(x, weight, padding, stride=1, dilation=1, groups=1, relu=True):
    top, left, bottom, right = padding
    xt = F.pad(torch.from_numpy(x), (left, right, top, bottom))
    y = F.conv2d(xt, torch.from_numpy(weight), stride=stride, dilation=dilation, groups=groups)
    return (torch.relu(y) if relu else y).numpy()


def _case(rng, in_ch, out_ch, kernel, hw, groups=1):
    x = rng.standard_normal((1, in_ch, *hw)).astype("float32")
    weight = rng.standard_normal((out_ch, in_ch // groups, *kernel)).astype("float32")
    return x, weight


@pytest.mark.parametrize("in_size, out_size, kernel, stride, dilation, pad, live", [
    (1, 1, 3, 1, 1, 1, range(1, 2)),  # 1x1 map: only the centre tap reads the input
    (2, 2, 3, 1, 1, 1, range(0, 3)),  # every tap reads something
    (1, 1, 5, 1, 1, 2, range(2, 3)),
    (2, 1, 3, 2, 1, 1, range(1, 3)),  # stride 2: tap 0 only reads the top padding
    (1, 1, 3, 1, 2, 2, range(1, 2)),  # dilated
    (4, 4, 1, 1, 1, 0, range(0, 1)),
])
def test_live_taps(in_size, out_size, kernel, stride, dilation, pad, live):
    assert live_taps(in_size, out_size, kernel, stride, dilation, pad) == live


@pytest.mark.parametrize("kernel, hw, padding, stride, want_kernel, want_padding", [
    ((3, 3), (1, 1), (1, 1, 1, 1), 1, (1, 1), (0, 0, 0, 0)),
    ((3, 1), (1, 1), (1, 0, 1, 0), 1, (1, 1), (0, 0, 0, 0)),
    ((1, 3), (1, 4), (0, 1, 0, 1), 1, (1, 3), (0, 1, 0, 1)),  # the 4-wide row keeps all 3 columns
    ((3, 3), (2, 2), (1, 1, 1, 1), 2, (2, 2), (0, 0, 1, 1)),  # stride 2: the first row/column read padding only
])
def test_trim_crops_taps_that_read_only_padding(kernel, hw, padding, stride, want_kernel, want_padding):
    x, weight = _case(np.random.default_rng(0), 8, 12, kernel, hw)
    mod = _conv_module(x.shape, weight, padding, stride)
    trimmed = TrimDeadConvTaps()(mod)
    (call,) = conv_calls(trimmed)
    assert kernel_shape(call)[2:] == want_kernel
    assert tuple(int(p) for p in call.attrs.padding) == want_padding
    np.testing.assert_allclose(build_and_run(trimmed, x), _torch_conv(x, weight, padding, stride), rtol=1e-5, atol=1e-5)


def test_trim_leaves_convs_whose_taps_all_read_input():
    x, weight = _case(np.random.default_rng(1), 4, 4, (3, 3), (8, 8))
    mod = _conv_module(x.shape, weight, (1, 1, 1, 1))
    (call,) = conv_calls(TrimDeadConvTaps()(mod))
    assert kernel_shape(call) == (4, 4, 3, 3)


@pytest.mark.parametrize("hw, groups, rewritten", [
    ((4, 4), 1, True), ((1, 1), 1, True), ((6, 15), 1, True),
    ((6, 16), 1, False),  # as wide as a vector: rows vectorize well
    ((4, 4), 4, False),  # grouped: a channel vector would gather its inputs
])
def test_narrow_convs_get_channel_last_weights(hw, groups, rewritten):
    x, weight = _case(np.random.default_rng(2), 8, 16, (3, 1), hw, groups)
    padding = (1, 0, 1, 0)
    mod = _conv_module(x.shape, weight, padding, groups=groups)
    packed = ChannelsLastNarrowConvWeights(16)(mod)
    (call,) = conv_calls(packed)
    if not rewritten:
        assert call.attrs.kernel_layout == "OIHW" and kernel_shape(call) == weight.shape
        return
    assert call.attrs.kernel_layout == "IHWO"
    np.testing.assert_array_equal(call.args[1].value.numpy(), weight.transpose(1, 2, 3, 0))
    np.testing.assert_allclose(build_and_run(packed, x), _torch_conv(x, weight, padding, groups=groups),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width, out_channels, rewritten", [
    (4, 12, True),  # narrower than a vector: always
    (28, 16, True), (56, 8, True),  # up to max_width when the channels fill whole vectors
    (28, 12, False),  # 12 channels: a part-empty channel vector, the rows stay
    (64, 16, False),  # as wide as max_width
])
def test_channel_last_weights_up_to_max_width_need_whole_channel_vectors(width, out_channels, rewritten):
    """AVX2's setting (8 lanes, maps up to 64 wide: `CPUVectorInfo.channel_vector_width`)."""
    x, weight = _case(np.random.default_rng(4), 4, out_channels, (1, 3), (2, width))
    packed = ChannelsLastNarrowConvWeights(8, max_width=64)(_conv_module(x.shape, weight, (0, 1, 0, 1)))
    (call,) = conv_calls(packed)
    assert (call.attrs.kernel_layout == "IHWO") == rewritten


@pytest.mark.parametrize("hw, changed", [((1, 4), True), ((6, 16), False)])
@pytest.mark.parametrize("graph_pass", [TrimDeadConvTaps(), ChannelsLastNarrowConvWeights(16)])
def test_graph_passes_handle_a_conv_whose_result_is_rebound(graph_pass, hw, changed):
    """`out = conv(...)` bound again to a variable: the pattern matches that variable as well."""
    x, weight = _case(np.random.default_rng(3), 8, 12, (3, 1), hw)
    padding = (1, 0, 1, 0)
    rewritten = graph_pass(_conv_module(x.shape, weight, padding, relu=False))
    (call,) = conv_calls(rewritten)
    assert (kernel_shape(call) != weight.shape) == changed  # trimmed to 1x1 taps / packed as IHWO
    np.testing.assert_allclose(build_and_run(rewritten, x), _torch_conv(x, weight, padding, relu=False),
                               rtol=1e-5, atol=1e-5)
