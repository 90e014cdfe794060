"""convert(): which layers are replaced, which skipped and why, costs, and the model's function."""

import json

import pytest
import torch
from torch import nn

from tvm_lowrank.decompose import DEFAULT_IN_HW, FixedRank, MacRatioRank, PerLayerRank
from tvm_lowrank.errors import RankError, RankPolicyError
from tvm_lowrank.nn import Im2colConv2d, LowRankConv2d, LowRankLinear, convert, layer_class

FULL = FixedRank(10_000)  # clamped to each layer's maximum: exact decompositions


def small_vgg() -> nn.Module:
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),  # 0: k×k
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # 3: depthwise
        nn.Conv2d(8, 12, 1), nn.ReLU(),  # 4: 1×1
        nn.Conv2d(12, 12, 3, stride=2, padding=1, bias=False), nn.ReLU(),  # 6: k×k, stride 2
        nn.Conv2d(12, 12, (1, 3), padding=(0, 1)),  # 8: already 1-D
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
    )
    model = nn.Sequential()
    model.features, model.classifier = features, nn.Linear(48, 10)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.features[1].running_mean.uniform_(-0.5, 0.5)
        model.features[1].running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.fixture
def model():
    return small_vgg()


@pytest.fixture
def x():
    return torch.randn(2, 3, 16, 16)


def test_replaces_kxk_convs_and_says_why_others_stay(model, x, rel_err):
    new, report = convert(model, "tai", FULL, example_input=x)
    assert [layer.name for layer in report.replaced] == ["features.0", "features.6"]
    assert isinstance(new.features[0], LowRankConv2d) and isinstance(new.features[6], LowRankConv2d)
    assert isinstance(model.features[0], nn.Conv2d)  # the original is untouched
    reasons = {layer.name: layer.skipped for layer in report.skipped}
    assert reasons == {
        "features.3": "depthwise conv (groups=8)",
        "features.4": "1x1 conv (hybrid=True factors it by SVD)",
        "features.8": "already a 1-D kernel (1x3)",
        "classifier": "linear layer (hybrid=True factors it by SVD)",
    }
    with torch.no_grad():
        assert rel_err(new(x), model(x)) <= 1e-5

    first = report.layers[0]
    assert first.in_hw == (16, 16) and first.rank == 9 and first.clamped and first.requested == 10_000
    assert first.macs_before == 8 * 3 * 9 * 16 * 16 and first.params_before == 8 * 3 * 9
    assert first.macs_after == new.features[0].flops((16, 16))
    assert first.relative_error < 1e-6
    stride2 = report.layers[3]
    assert stride2.in_hw == (16, 16) and stride2.macs_before == 12 * 12 * 9 * 8 * 8
    depthwise = report.layers[1]
    assert depthwise.macs_before == depthwise.macs_after == 8 * 9 * 16 * 16
    assert report.layers[-1].macs_before == 10 * 48 and report.layers[-1].in_hw == (1, 1)

    totals = report.totals
    assert totals["macs_before"] == sum(layer.macs_before for layer in report.layers)
    assert totals["macs_after"] == sum(layer.macs_after for layer in report.layers)
    assert totals["mac_ratio"] == pytest.approx(totals["macs_after"] / totals["macs_before"])
    assert (totals["replaced"], totals["skipped"]) == (2, 4)


@pytest.mark.parametrize("method", ["tai", "cp", "rank1", "tucker2", "im2col"])
def test_every_method_at_full_rank_keeps_the_function(method, model, x, rel_err):
    new, report = convert(model, method, FULL, example_input=x)
    assert {type(new.features[0]), type(new.features[6])} == {layer_class(method)}
    assert all(layer.method == method for layer in report.replaced)
    with torch.no_grad():
        assert rel_err(new(x), model(x)) <= 1e-5


def test_hybrid_factors_pointwise_and_linear_layers(model, x, rel_err):
    new, report = convert(model, "cp", "10000", example_input=x, hybrid=True)
    assert isinstance(new.features[4], Im2colConv2d) and isinstance(new.classifier, LowRankLinear)
    assert {layer.name: layer.method for layer in report.replaced} == {
        "features.0": "cp", "features.4": "im2col", "features.6": "cp", "classifier": "im2col"}
    assert [layer.name for layer in report.skipped] == ["features.3", "features.8"]
    with torch.no_grad():
        assert rel_err(new(x), model(x)) <= 1e-5
    linear = report.layers[-1]
    assert linear.kind == "linear" and linear.rank == 10 and linear.macs_after == 10 * (48 + 10)


def test_mac_budget_and_per_layer_ranks(model, x):
    _, report = convert(model, "tai", MacRatioRank(0.5), example_input=x)
    assert all(layer.macs_after <= 0.5 * layer.macs_before for layer in report.replaced)
    assert report.totals["mac_ratio"] < 1

    new, report = convert(model, "tai", PerLayerRank({"features.6": 4}), example_input=x)
    assert [layer.name for layer in report.replaced] == ["features.6"] and report.replaced[0].rank == 4
    assert next(layer for layer in report.layers if layer.name == "features.0").skipped == \
        "the rank policy leaves it dense"
    assert new.features[6].rank == 4 and isinstance(new.features[0], nn.Conv2d)


def test_without_example_input_convs_are_counted_at_the_default_size(model):
    _, report = convert(model, "tai", "energy:0.9")
    assert not report.measured
    assert report.layers[0].in_hw == DEFAULT_IN_HW
    assert report.layers[0].macs_before == 8 * 3 * 9 * DEFAULT_IN_HW[0] * DEFAULT_IN_HW[1]


def test_report_renders(model, x):
    _, report = convert(model, "tai", 4, example_input=x)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["totals"]["replaced"] == 2 and data["layers"][1]["skipped"] == "depthwise conv (groups=8)"
    table = report.as_table()
    assert "features.6" in table and "skipped: depthwise conv (groups=8)" in table and table.count("\n") == 9


def test_impossible_fixed_rank_names_the_layer(model):
    with pytest.raises(RankError, match=r"features\.0"):
        convert(model, "tai", FixedRank(100, clamp=False))


def test_converting_twice_leaves_decomposed_layers_alone(model, x):
    once, _ = convert(model, "cp", 4, example_input=x)
    twice, report = convert(once, "cp", 4, example_input=x, hybrid=True)
    assert [layer.name for layer in report.layers] == ["features.3", "features.4", "features.8", "classifier"]
    assert twice.features[0] is not once.features[0] and type(twice.features[0]) is type(once.features[0])


def test_per_layer_ranks_must_name_real_layers(model):
    with pytest.raises(RankPolicyError, match="features.5"):
        convert(model, "tai", PerLayerRank({"features.0": 2, "features.5": 2}))
