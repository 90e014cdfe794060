"""Rank policies: each picks the rank it promises, records clamping and costs, and rejects bad input."""

import json

import numpy as np
import pytest

from tvm_lowrank.decompose import (ConvGeometry, EnergyRank, FixedRank, MacRatioRank, ParamRatioRank, PerLayerRank,
                                   check_decomposable, decompose_conv, get_method, list_methods, load_rank_file,
                                   parse_rank_policy, select_rank)
from tvm_lowrank.errors import DecompositionError, RankError, RankPolicyError

PADDED = ConvGeometry(padding=(1, 1, 1, 1))


@pytest.fixture
def weight(rng):
    return rng.standard_normal((8, 4, 3, 3))


def test_tai_costs_match_hand_counts(weight):
    """V: 2·4·3 MACs per output pixel, H: 8·2·3; stride 2 halves H's rows in V and both axes in H."""
    choice = select_rank(FixedRank(2), "tai", weight, "conv1", in_hw=(10, 10), geometry=PADDED)
    assert (choice.macs_before, choice.macs_after) == (8 * 4 * 9 * 100, 2 * 4 * 3 * 100 + 8 * 2 * 3 * 100)
    assert (choice.params_before, choice.params_after) == (288, 24 + 48)
    assert choice.mac_ratio == pytest.approx(7200 / 28800)
    assert choice.param_ratio == pytest.approx(72 / 288)
    strided = ConvGeometry(stride=(2, 2), padding=(1, 1, 1, 1))
    choice = select_rank(FixedRank(2), "tai", weight, "conv1", in_hw=(10, 10), geometry=strided)
    assert (choice.macs_before, choice.macs_after) == (8 * 4 * 9 * 25, 2 * 4 * 3 * 5 * 10 + 8 * 2 * 3 * 25)


def test_cp_costs_match_hand_counts(weight):
    choice = select_rank(FixedRank(3), "cp", weight, "conv1", in_hw=(10, 10), geometry=PADDED)
    assert choice.macs_after == (3 * 4 + 3 * 3 + 3 * 3 + 8 * 3) * 100
    assert choice.params_after == 12 + 9 + 9 + 24


def test_in_hw_defaults_to_32_by_32_and_is_recorded(weight):
    choice = select_rank(FixedRank(2), "im2col", weight)
    assert choice.in_hw == (32, 32)
    assert choice.macs_before == 8 * 4 * 9 * 30 * 30
    assert (choice.layer, choice.method, choice.weight_shape) == ("conv", "im2col", (8, 4, 3, 3))


def test_fixed_rank_above_the_maximum_is_clamped_and_recorded(weight):
    choice = select_rank(FixedRank(50), "tucker2", weight, "layer1.0.conv2")
    assert (choice.rank, choice.requested, choice.clamped, choice.max_rank) == (8, 50, True, 8)
    inside = select_rank(FixedRank(5), "tucker2", weight, "layer1.0.conv2")
    assert (inside.rank, inside.requested, inside.clamped) == (5, 5, False)


def test_fixed_rank_without_clamping_or_below_one_raises_naming_the_layer(weight):
    with pytest.raises(RankError, match=r"layer1\.0\.conv2.*50.*\[1, 8\]"):
        select_rank(FixedRank(50, clamp=False), "tucker2", weight, "layer1.0.conv2")
    for clamp in (True, False):
        with pytest.raises(RankError, match=r"layer1\.0\.conv2"):
            select_rank(FixedRank(0, clamp=clamp), "tucker2", weight, "layer1.0.conv2")


@pytest.mark.parametrize("method", list_methods())
def test_energy_rank_meets_the_threshold_and_one_less_does_not(method, weight):
    choice = select_rank(EnergyRank(0.8), method, weight, "conv")
    decomposer = get_method(method)

    def kept(rank):
        approx = decomposer.decompose(weight, rank).compose()
        return 1 - np.sum((weight - approx) ** 2) / np.sum(weight ** 2)

    assert kept(choice.rank) >= 0.8 - 1e-9
    assert choice.rank == 1 or kept(choice.rank - 1) < 0.8
    assert not choice.clamped


@pytest.mark.parametrize("method", list_methods())
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.6])
def test_mac_ratio_takes_the_largest_rank_within_budget(method, ratio, weight):
    choice = select_rank(MacRatioRank(ratio), method, weight, "conv", in_hw=(12, 12), geometry=PADDED)
    if choice.rank > 1:
        assert choice.macs_after <= ratio * choice.macs_before
    if choice.rank < choice.max_rank:
        bigger = select_rank(FixedRank(choice.rank + 1), method, weight, "conv", in_hw=(12, 12), geometry=PADDED)
        assert bigger.macs_after > ratio * choice.macs_before


@pytest.mark.parametrize("method", list_methods())
def test_param_ratio_takes_the_largest_rank_within_budget(method, weight):
    choice = select_rank(ParamRatioRank(0.4), method, weight, "conv")
    if choice.rank > 1:
        assert choice.params_after <= 0.4 * choice.params_before
    if choice.rank < choice.max_rank:
        assert select_rank(FixedRank(choice.rank + 1), method, weight).params_after > 0.4 * choice.params_before


def test_a_budget_below_rank_one_still_gives_rank_one(weight):
    assert select_rank(MacRatioRank(1e-6), "tai", weight).rank == 1
    assert select_rank(ParamRatioRank(1e-6), "cp", weight).rank == 1


def test_per_layer_ranks_default_and_dense(weight):
    policy = PerLayerRank({"features.0": 3, "features.3": 100})
    assert select_rank(policy, "tai", weight, "features.0").rank == 3
    assert select_rank(policy, "tai", weight, "classifier") is None
    assert decompose_conv(weight, "tai", policy, "classifier") is None
    with pytest.raises(RankError, match=r"features\.3.*100"):  # listed ranks are never clamped
        select_rank(policy, "tai", weight, "features.3")
    with_default = PerLayerRank({"features.0": 3}, default=FixedRank(50))
    choice = select_rank(with_default, "tai", weight, "classifier")
    assert (choice.rank, choice.clamped) == (12, True)


def test_geometry_never_prevents_decomposition(weight):
    odd = ConvGeometry(stride=(2, 1), padding=(2, 0, 2, 0), dilation=(2, 3))
    for method in list_methods():
        assert select_rank(FixedRank(2), method, weight, geometry=odd, in_hw=(16, 16)).rank == 2


def test_grouped_and_1x1_convs(rng):
    with pytest.raises(DecompositionError, match=r"blocks\.2\.dw.*groups=4"):
        check_decomposable((8, 1, 3, 3), 4, "blocks.2.dw")
    with pytest.raises(DecompositionError, match=r"blocks\.2\.dw.*groups=4"):
        select_rank(FixedRank(1), "tai", rng.standard_normal((8, 2, 3, 3)), "blocks.2.dw", groups=4)
    for method in ("cp", "rank1", "tucker2"):
        with pytest.raises(DecompositionError, match=r"blocks\.2\.pw.*im2col"):
            check_decomposable((8, 4, 1, 1), 1, "blocks.2.pw", method)
    for method in ("im2col", "tai"):
        check_decomposable((8, 4, 1, 1), 1, "blocks.2.pw", method)
        assert select_rank(FixedRank(2), method, rng.standard_normal((8, 4, 1, 1))).rank == 2
    check_decomposable((8, 4, 1, 3), 1, "conv", "cp")  # one spatial axis is enough


def test_decompose_conv_records_choice_and_error(weight, relative_error):
    result = decompose_conv(weight, "cp", EnergyRank(0.7), "layer3", in_hw=(8, 8), als_iters=2)
    assert result.choice.rank == result.chain.rank
    assert result.chain.layout == get_method("cp").layout(weight.shape, result.choice.rank)
    assert result.relative_error == pytest.approx(relative_error(weight, result.chain), abs=1e-12)
    assert result.relative_error ** 2 <= 0.3 + 1e-9  # ALS only improves on the greedy terms
    exact = decompose_conv(weight, "tucker2", FixedRank(100), "layer3")
    assert exact.relative_error < 1e-12 and exact.choice.clamped


@pytest.mark.parametrize("text, policy", [
    ("16", FixedRank(16)), (" 4 ", FixedRank(4)), ("energy:0.95", EnergyRank(0.95)), ("ENERGY:1", EnergyRank(1.0)),
    ("macs:0.25", MacRatioRank(0.25)), ("params:0.3", ParamRatioRank(0.3)), ("macs:1.5", MacRatioRank(1.5)),
])
def test_parse_rank_policy(text, policy):
    assert parse_rank_policy(text) == policy


@pytest.mark.parametrize("text", ["", "abc", "0", "-3", "16.5", "energy:", "energy:0", "energy:1.5", "energy:nan",
                                  "macs:-1", "macs:0", "macs:inf", "params:x", "flops:0.3", "energy=0.9"])
def test_parse_rank_policy_rejects_bad_text_listing_the_accepted_forms(text):
    with pytest.raises(ValueError, match="accepted forms") as caught:
        parse_rank_policy(text)
    assert isinstance(caught.value, RankPolicyError)


def test_policy_parameters_are_checked_on_construction():
    for bad in (0, -0.5, 1.01, True):
        with pytest.raises(RankPolicyError):
            EnergyRank(bad)
    for bad in (0, -1, float("inf")):
        with pytest.raises(RankPolicyError):
            MacRatioRank(bad)
        with pytest.raises(RankPolicyError):
            ParamRatioRank(bad)


def test_load_rank_file(tmp_path, weight):
    path = tmp_path / "ranks.json"
    path.write_text(json.dumps({"features.0": 3, "features.3": 5, "default": "energy:0.9"}))
    policy = load_rank_file(path)
    assert policy == PerLayerRank({"features.0": 3, "features.3": 5}, EnergyRank(0.9))
    assert select_rank(policy, "tai", weight, "features.3").rank == 5
    path.write_text(json.dumps({"features.0": 3}))
    assert load_rank_file(str(path)).default is None


@pytest.mark.parametrize("content, message", [
    ("{\"features.0\": 3,", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ("{\"features.0\": \"3\"}", "integers"),
    ("{\"features.0\": 0}", "integers >= 1"),
    ("{\"features.0\": 2.5}", "integers"),
    ("{\"features.0\": true}", "integers"),
    ("{\"default\": \"energy:2\"}", "default"),
])
def test_bad_rank_file_raises_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad_ranks.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as caught:
        load_rank_file(path)
    assert "bad_ranks.json" in str(caught.value) and isinstance(caught.value, RankPolicyError)


def test_missing_rank_file_raises_naming_the_file(tmp_path):
    with pytest.raises(RankPolicyError, match="nowhere.json"):
        load_rank_file(tmp_path / "nowhere.json")
