"""Tai (scratch, closed form + fine-tune), Astrid & Lee's iterative CP, DeepTwist end to end: each
builds the structure its policy names, learns, and (DeepTwist) decomposes without loss."""

import pytest
import torch
from torch import nn

from tvm_lowrank.errors import TrainingError
from tvm_lowrank.nn import CPConv2d, Im2colConv2d, LowRankConv2d, LowRankLinear
from tvm_lowrank.train import (MethodOptions, TrainSettings, decompose_then_finetune, model_cost, policy_ranks,
                               run_method, tai_scratch_model, train_cp_iterative, train_deeptwist)

FINETUNE = TrainSettings(epochs=1, batch_size=64, lr=1e-3)


def test_dense_baseline_learns(trained_tiny):
    assert trained_tiny.accuracy > 0.8  # chance is 0.1


def test_tai_scratch_model_has_fresh_vbnh_pairs_at_the_policy_ranks(digits, tiny_vgg):
    dense = tiny_vgg()
    ranks = policy_ranks(dense, "tai", "macs:0.5", digits.example)
    model = tai_scratch_model(dense, "macs:0.5", digits.example)
    pairs = {name: m for name, m in model.named_modules() if isinstance(m, LowRankConv2d)}
    assert set(pairs) == set(ranks) and len(pairs) == 6
    assert all(pair.bn_between and pair.rank == ranks[name] for name, pair in pairs.items())
    assert model_cost(model, digits.example).macs <= 0.55 * model_cost(dense, digits.example).macs


def test_tai_scratch_learns(digits, tiny_vgg):
    result = run_method("tai-scratch", tiny_vgg, digits, TrainSettings(epochs=3, batch_size=64),
                        MethodOptions(rank="macs:0.5"))
    assert result.accuracy > 0.5


def test_decompose_then_finetune_recovers(digits, trained_tiny):
    result = decompose_then_finetune(trained_tiny.model, digits, TrainSettings(2, 64, 1e-3), "tai", "macs:0.5")
    assert all(type(m) is not nn.Conv2d or m.kernel_size[0] == 1 or m.kernel_size[1] == 1
               for m in result.model.modules())  # every k×k conv is now a V/H pair
    assert result.accuracy > 0.5
    assert result.accuracy > result.history["accuracy_before_finetune"] + 0.1  # fine-tuning recovered
    assert trained_tiny.model.features[0][0].kernel_size == (3, 3)  # the trained model is untouched


def test_cp_iterative_decomposes_every_layer_in_order(digits, trained_tiny):
    result = train_cp_iterative(trained_tiny.model, digits, FINETUNE, "macs:0.6", steps_per_layer=10,
                                svd_policy="macs:0.6")
    decomposed = [step["layer"] for step in result.history["steps"]]
    assert decomposed == list(result.history["ranks"])
    modules = dict(result.model.named_modules())
    convs = [name for name in decomposed if name.startswith("features")]
    assert len(convs) == 6 and all(isinstance(modules[name], CPConv2d) for name in convs)
    assert isinstance(modules["classifier.2"], LowRankLinear)  # hybrid: SVD for the linear layer
    assert all(modules[name].rank == rank for name, rank in result.history["ranks"].items())
    assert result.accuracy > 0.4
    assert result.cost.macs < 0.65 * trained_tiny.cost.macs


def test_cp_iterative_with_a_policy_that_keeps_everything_dense_errors(digits, trained_tiny):
    from tvm_lowrank.decompose import PerLayerRank

    with pytest.raises(TrainingError, match="decomposes no layer"):
        train_cp_iterative(trained_tiny.model, digits, FINETUNE, PerLayerRank({}), svd_policy=None)


@pytest.mark.parametrize("form, layer", [("tai", LowRankConv2d), ("im2col", Im2colConv2d)])
def test_deeptwist_ends_exactly_low_rank(digits, trained_tiny, form, layer):
    result = train_deeptwist(trained_tiny.model, digits, FINETUNE, form, "macs:0.3", period=5)
    assert result.history["max_decomposition_error"] < 1e-5  # the last distortion left them low-rank
    assert result.accuracy == pytest.approx(result.history["accuracy_dense_distorted"], abs=0.005)
    replaced = [m for m in result.model.modules() if isinstance(m, layer)]
    assert len(replaced) == len(result.history["ranks"]) > 0
    assert result.accuracy > 0.4


def test_fine_tuning_methods_need_a_trained_model(digits, tiny_vgg):
    with pytest.raises(TrainingError, match="trained dense model"):
        run_method("deeptwist", tiny_vgg, digits, FINETUNE)
    with pytest.raises(TrainingError, match="unknown training method 'svd'"):
        run_method("svd", tiny_vgg, digits, FINETUNE)


def test_unknown_dataset_is_rejected():
    from tvm_lowrank.train import load_dataset

    with pytest.raises(TrainingError, match="cifar"):
        load_dataset("cifar")


def test_model_cost_counts_the_deployed_chain(digits):
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(4 * 64, 10))
    cost = model_cost(model, digits.example)
    assert cost.macs == 4 * 9 * 64 + 4 * 64 * 10 and cost.params == 36 + 2560
    torch.manual_seed(0)
    pair = LowRankConv2d(1, 4, 3, 2, padding=1, bias=False)
    cost = model_cost(nn.Sequential(pair, nn.Flatten(), nn.Linear(4 * 64, 10)), digits.example)
    assert cost.macs == pair.flops((8, 8)) + 4 * 64 * 10
