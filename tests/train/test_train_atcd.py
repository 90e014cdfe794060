"""ATCD: the alternation really switches form, conserves the function where it must, and learns."""

import numpy as np
import pytest
import torch
from torch import nn

from tvm_lowrank.decompose import compose_rank1, rank1_factors
from tvm_lowrank.errors import TrainingError
from tvm_lowrank.nn import Rank1Conv2d
from tvm_lowrank.train import (AlternationSchedule, TrainSettings, rank1_layers, rank1_mobilenet, rank1_resnet,
                               rank1_vgg, switch_form, to_rank1, train_atcd)

SETTINGS = TrainSettings(epochs=3, batch_size=64, lr=3e-3)


def test_schedule_alternates_and_ends_decomposed():
    phases = AlternationSchedule.parse("10steps").phases(total_steps=35, steps_per_epoch=22)
    assert [steps for _, steps in phases] == [10, 10, 10, 5]
    assert [form for form, _ in phases] == ["composed", "decomposed", "composed", "decomposed"]
    odd = AlternationSchedule.parse("1epoch").phases(total_steps=66, steps_per_epoch=22)
    assert odd == [("decomposed", 22), ("composed", 22), ("decomposed", 22)]
    assert AlternationSchedule.parse("0.5epochs") == AlternationSchedule(0.5, "epochs")


@pytest.mark.parametrize("text", ["", "fast", "-3steps", "0steps", "2 weeks"])
def test_bad_schedule_is_rejected(text):
    with pytest.raises(TrainingError, match="alternation"):
        AlternationSchedule.parse(text)


def test_builders_make_rank1_nets():
    vgg = rank1_vgg((8, 16, 16))
    assert len(rank1_layers(vgg)) == 6 and not any(type(m) is nn.Conv2d for m in vgg.modules())
    resnet = rank1_resnet((8, 16, 16))
    kept = [m for m in resnet.modules() if type(m) is nn.Conv2d]
    assert len(rank1_layers(resnet)) == 7 and all(m.kernel_size == (1, 1) for m in kept)  # shortcuts stay
    mobilenet = rank1_mobilenet()
    layers = list(rank1_layers(mobilenet).values())
    assert len(layers) == 5  # the stem and one per depthwise-separable block
    assert not any(type(m) is nn.Conv2d for m in mobilenet.modules())
    assert [(m.in_channels, m.out_channels, m.geometry.stride) for m in layers[1:]] == [
        (16, 32, (1, 1)), (32, 64, (2, 2)), (64, 64, (1, 1)), (64, 128, (2, 2))]
    for model in (vgg, resnet, mobilenet):
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_to_rank1_needs_a_net_with_rank1_layers(digits):
    with pytest.raises(TrainingError, match="no Rank1Conv2d"):
        train_atcd(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, SETTINGS)


def test_switches_change_form_and_conserve_the_function(digits, tiny_vgg):
    torch.manual_seed(0)
    model = to_rank1(tiny_vgg())
    probe = torch.from_numpy(digits.train_images[:32].copy())
    assert switch_form(model, "composed", probe) < 1e-5  # composing is exact
    assert all(layer.mode == "composed" and layer.weight is not None for layer in rank1_layers(model).values())
    assert switch_form(model, "decomposed", probe) < 1e-5  # weights unmoved: the factors are kept
    layers = rank1_layers(model)
    assert all(layer.mode == "decomposed" and layer.weight is None for layer in layers.values())
    # After the composed weights moved, decomposing is the rank-1 projection of what they became.
    switch_form(model, "composed")
    with torch.no_grad():
        for layer in layers.values():
            layer.weight.add_(0.05 * torch.randn_like(layer.weight))
    moved = {name: layer.weight.detach().double().numpy().copy() for name, layer in layers.items()}
    switch_form(model, "decomposed")
    for name, layer in layers.items():
        expected = compose_rank1(*rank1_factors(moved[name], 1, name))
        np.testing.assert_allclose(layer.dense_weight(), expected, atol=1e-5)


def test_atcd_alternates_while_training_and_learns(digits, tiny_vgg):
    torch.manual_seed(0)
    result = train_atcd(to_rank1(tiny_vgg()), digits, SETTINGS, AlternationSchedule(11, "steps"))
    forms = [form for _, form, _ in result.history["switches"]]
    assert forms == ["composed", "decomposed"] * 3  # 66 steps: 6 phases, first composed, last decomposed
    for _, form, change in result.history["switches"]:
        if form == "composed":
            assert change < 1e-5
        else:
            assert change > 1e-4  # the composed phase left the rank-1 set; the switch projected back
    assert all(isinstance(m, Rank1Conv2d) and m.mode == "decomposed" for m in rank1_layers(result.model).values())
    assert result.accuracy > 0.5  # chance is 0.1


def test_fixed_baseline_never_composes(digits, tiny_vgg):
    torch.manual_seed(0)
    model = to_rank1(tiny_vgg())
    composes = []
    for layer in rank1_layers(model).values():
        layer.compose = lambda *a, _layer=layer: composes.append(_layer)
    result = train_atcd(model, digits, SETTINGS, AlternationSchedule(11, "steps"), fixed=True)
    assert result.method == "atcd-fixed" and result.history["switches"] == [] and composes == []
    assert len(result.history["phases"]) == 6  # the same phases as ATCD, for a fair comparison
    assert result.accuracy > 0.3
