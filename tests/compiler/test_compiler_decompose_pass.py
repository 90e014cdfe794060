"""DecomposeConv2D: IR structure, geometry, records, policies, existing chains, and numerics."""

import numpy as np
import pytest
import tvm
from tvm import relax

import compiler_models
from compiler_helpers import MODELS, build_and_run, conv_calls, kernel_shape, relative_error
from tvm_lowrank.decompose import FixedRank, MacRatioRank, PerLayerRank, get_method
from tvm_lowrank.errors import RankError
from tvm_lowrank.passes import DecomposeConv2D, weight_fingerprint

FULL_RANK = FixedRank(10**6)  # clamped to each layer's maximum: the exact chain
X = compiler_models.example_input().numpy()


def single_conv_module(weight, stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), in_hw=(12, 12),
                       constant_weight=True):
    """main(x) = relu(conv2d(x, W) + b), built directly in Relax (asymmetric padding included)."""
    rng = np.random.default_rng(3)
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, weight.shape[1], *in_hw), "float32"))
    w = relax.const(weight) if constant_weight else relax.Var("w", relax.TensorType(weight.shape, "float32"))
    params = [x] if constant_weight else [x, w]
    with builder.function("main", params):
        with builder.dataflow():
            y = builder.emit(relax.op.nn.conv2d(x, w, strides=stride, padding=padding, dilation=dilation))
            bias = relax.const(rng.standard_normal((1, weight.shape[0], 1, 1)).astype("float32"))
            out = builder.emit_output(relax.op.nn.relu(relax.op.add(y, bias)))
        builder.emit_func_output(out)
    return builder.get()


def _weight(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _stage_summary(mod):
    return [(kernel_shape(call), int(call.attrs.groups)) for call in conv_calls(mod)]


@pytest.mark.parametrize("method, expected", [
    ("tai", [((2, 8, 3, 1), 1), ((16, 2, 1, 3), 1)]),
    ("cp", [((2, 8, 1, 1), 1), ((2, 1, 3, 1), 2), ((2, 1, 1, 3), 2), ((16, 2, 1, 1), 1)]),
    ("rank1", [((32, 8, 1, 1), 1), ((32, 1, 3, 1), 32), ((32, 1, 1, 3), 32), ((16, 2, 1, 1), 16)]),
    ("tucker2", [((2, 8, 1, 1), 1), ((2, 2, 3, 3), 1), ((16, 2, 1, 1), 1)]),
    ("im2col", [((2, 8, 3, 3), 1), ((16, 2, 1, 1), 1)]),
])
def test_chain_stages_per_method(method, expected):
    weight = _weight((16, 8, 3, 3))
    mod = single_conv_module(weight)
    rewrite = DecomposeConv2D(method, FixedRank(2))
    new = rewrite(mod)
    assert _stage_summary(new) == expected
    layout = get_method(method).layout(weight.shape, 2)
    assert [(stage.weight_shape, stage.groups) for stage in layout] == expected
    assert [int(s) for s in new["main"].ret_ty.shape] == [int(s) for s in mod["main"].ret_ty.shape]
    (record,) = rewrite.records
    assert (record.name, record.action, record.method, record.rank) == ("conv0", "decomposed", method, 2)
    assert record.has_bias and record.weight_fingerprint == weight_fingerprint(weight)


def test_geometry_split_with_asymmetric_padding_and_bias_after_last_stage():
    weight = _weight((12, 6, 3, 5))
    geometry = dict(stride=(2, 1), padding=(1, 2, 0, 1), dilation=(1, 2))
    mod = single_conv_module(weight, **geometry, in_hw=(11, 13))
    new = DecomposeConv2D("tai", FULL_RANK, only_if_cheaper=False)(mod)
    vertical, horizontal = conv_calls(new)
    assert ([int(v) for v in vertical.attrs.strides], [int(v) for v in vertical.attrs.padding],
            [int(v) for v in vertical.attrs.dilation]) == ([2, 1], [1, 0, 0, 0], [1, 1])
    assert ([int(v) for v in horizontal.attrs.strides], [int(v) for v in horizontal.attrs.padding],
            [int(v) for v in horizontal.attrs.dilation]) == ([1, 1], [0, 2, 0, 1], [1, 2])
    bindings = new["main"].body.blocks[0].bindings
    last_stage = next(b.var for b in bindings if b.value.same_as(horizontal))
    bias_add = next(b.value for b in bindings if getattr(b.value.op, "name", "") == "relax.add")
    assert bias_add.args[0].same_as(last_stage)
    x = np.random.default_rng(0).standard_normal((1, 6, 11, 13)).astype("float32")
    assert relative_error(build_and_run(new, x), build_and_run(mod, x)) < 1e-4


def test_cp_one_by_one_stages_take_no_geometry():
    mod = single_conv_module(_weight((8, 4, 3, 3)), stride=(2, 2), padding=(0, 1, 2, 1))
    new = DecomposeConv2D("cp", FULL_RANK, only_if_cheaper=False)(mod)
    calls = conv_calls(new)
    assert [[int(v) for v in call.attrs.padding] for call in calls] == [[0, 0, 0, 0], [0, 0, 2, 0], [0, 1, 0, 1],
                                                                        [0, 0, 0, 0]]
    assert [[int(v) for v in call.attrs.strides] for call in calls] == [[1, 1], [2, 1], [1, 2], [1, 1]]
    x = np.random.default_rng(0).standard_normal((1, 4, 12, 12)).astype("float32")
    assert relative_error(build_and_run(new, x), build_and_run(mod, x)) < 1e-4


def test_non_constant_weight_is_kept():
    rewrite = DecomposeConv2D("tai", FULL_RANK, only_if_cheaper=False)
    new = rewrite(single_conv_module(_weight((8, 4, 3, 3)), constant_weight=False))
    assert len(conv_calls(new)) == 1
    (record,) = rewrite.records
    assert record.action == "kept" and "not a constant" in record.reason


@pytest.mark.parametrize("name, kind, method", [
    ("vgg", "torch", "tai"), ("vgg", "onnx", "cp"), ("resnet", "torch", "tai"), ("resnet", "onnx", "tai"),
    ("mobilenet", "torch", "tai"), ("lowrank", "torch", "tai"), ("lowrank", "onnx", "tai"),
])
def test_full_rank_rewrite_matches_pytorch(name, kind, method, relax_modules):
    new = DecomposeConv2D(method, FULL_RANK, only_if_cheaper=False)(relax_modules(name, kind))
    expected = compiler_models.make(MODELS[name])(compiler_models.example_input()).detach().numpy()
    assert relative_error(build_and_run(new, X), expected) < 1e-4
    left = [call for call in conv_calls(new)
            if int(call.attrs.groups) == 1 and min(kernel_shape(call)[2:]) > 1]
    assert not left, "an eligible k×k conv was left dense"


def test_records_say_why_layers_were_kept(relax_modules):
    rewrite = DecomposeConv2D("tai", FixedRank(3))
    rewrite(relax_modules("mobilenet"))
    summary = [(r.name, r.action, r.weight_shape, r.groups) for r in rewrite.records]
    assert summary == [("conv0", "decomposed", (8, 3, 3, 3), 1), ("conv1", "kept", (8, 1, 3, 3), 8),
                       ("conv2", "kept", (16, 8, 1, 1), 1), ("conv3", "kept", (16, 1, 3, 3), 16),
                       ("conv4", "decomposed", (16, 16, 3, 3), 1)]
    reasons = [r.reason for r in rewrite.records]
    assert "depthwise" in reasons[1] and "depthwise" in reasons[3] and "1×1" in reasons[2]
    assert rewrite.records[0].in_hw == (16, 16) and rewrite.records[0].geometry.stride == (2, 2)

    rewrite(relax_modules("resnet"))  # the records describe the last module only
    downsample = [r for r in rewrite.records if r.weight_shape == (16, 8, 1, 1)]
    assert len(rewrite.records) == 4 and downsample[0].action == "kept" and "1×1" in downsample[0].reason


@pytest.mark.parametrize("kind", ["torch", "onnx"])
def test_existing_chains_are_recognised_and_left_intact(kind, relax_modules):
    mod = relax_modules("lowrank", kind)
    rewrite = DecomposeConv2D("tai", FixedRank(3))
    new = rewrite(mod)
    summary = [(r.name, r.action, r.method, r.rank) for r in rewrite.records]
    assert summary == [("conv0", "decomposed", "tai", 3), ("conv1", "pre-decomposed", "tai", 4),
                       ("conv3", "pre-decomposed", "cp", 5), ("conv7", "kept", None, None)]
    assert "already 1-D" in rewrite.records[3].reason
    assert rewrite.records[1].weight_shape == (8, 8, 3, 3) and rewrite.records[2].weight_shape == (8, 8, 3, 3)
    original = [weight_fingerprint(call.args[1].value.numpy()) for call in conv_calls(mod)]
    rewritten = [weight_fingerprint(call.args[1].value.numpy()) for call in conv_calls(new)]
    assert rewritten[2:] == original[1:], "the existing chains and the lone conv must be untouched"


def test_fixed_rank_sets_the_inner_channels(relax_modules):
    rewrite = DecomposeConv2D("tai", FixedRank(3))
    new = rewrite(relax_modules("vgg"))
    calls = conv_calls(new)
    assert len(calls) == 2 * len(rewrite.records)
    assert [kernel_shape(call)[0] for call in calls[0::2]] == [3, 3, 3, 3]
    assert [kernel_shape(call)[2:] for call in calls[0::2]] == [(3, 1)] * 4
    assert kernel_shape(calls[-1])[2:] == (1, 5)  # the 3×5 conv's horizontal stage


def test_per_layer_and_mac_ratio_policies(relax_modules):
    mod = relax_modules("vgg")
    per_layer = DecomposeConv2D("tai", PerLayerRank({"conv1": 2}))
    new = per_layer(mod)
    assert [r.action for r in per_layer.records] == ["kept", "decomposed", "kept", "kept"]
    assert "policy" in per_layer.records[0].reason and per_layer.records[1].rank == 2
    assert len(conv_calls(new)) == 5

    by_macs = DecomposeConv2D("cp", MacRatioRank(0.3))
    by_macs(mod)
    for record in by_macs.records:
        assert record.choice.macs_after <= 0.3 * record.choice.macs_before or record.rank == 1


def test_rank_too_large_raises_rank_error(relax_modules):
    with pytest.raises(RankError, match="conv1"):
        DecomposeConv2D("tai", PerLayerRank({"conv1": 999}))(relax_modules("vgg"))


def test_policy_text_and_method_name_are_checked():
    assert DecomposeConv2D("cp", "energy:0.9").policy.fraction == 0.9
    with pytest.raises(Exception, match="unknown decomposition method"):
        DecomposeConv2D("svd-ish")


def test_chain_costing_more_than_dense_is_kept(relax_modules):
    """By default a conv stays dense when its chain at the chosen rank would need more MACs."""
    rewrite = DecomposeConv2D("tai", FULL_RANK)
    rewrite(relax_modules("vgg"))
    first = rewrite.records[0]  # 8×3×3×3: the full-rank Tai chain costs more than the conv itself
    assert first.action == "kept" and "not fewer than dense" in first.reason
    forced = DecomposeConv2D("tai", FULL_RANK, only_if_cheaper=False)
    forced(relax_modules("vgg"))
    assert forced.records[0].action == "decomposed"
    assert forced.records[0].choice.macs_after >= forced.records[0].choice.macs_before
