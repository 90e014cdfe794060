"""Rank1Conv2d's two forms (ATCD): same function, both trainable, exact switches, projection step."""

import pytest
import torch
from torch import nn

from tvm_lowrank.decompose import compose_rank1, rank1_factors
from tvm_lowrank.nn import Rank1Conv2d

FACTORS = ("channel", "vertical", "horizontal")


def make_layer(terms: int) -> Rank1Conv2d:
    return Rank1Conv2d(4, 6, 3, rank=terms, stride=2, padding=1, dilation=(1, 2))


@pytest.mark.parametrize("terms", [1, 3])
def test_composed_and_decomposed_agree_and_switching_conserves(terms, rel_err):
    layer = make_layer(terms)
    x = torch.randn(2, 4, 9, 11)
    factors = [getattr(layer, name).detach().clone() for name in FACTORS]
    with torch.no_grad():
        reference = layer(x)
        for _ in range(3):
            assert rel_err(layer.compose()(x), reference) <= 1e-5
            assert layer.mode == "composed"
            assert rel_err(layer.decompose()(x), reference) <= 1e-6
            assert layer.mode == "decomposed"
    # An untrained composed weight gives the same factors back, bit for bit.
    assert all(torch.equal(getattr(layer, name), value) for name, value in zip(FACTORS, factors))


@pytest.mark.parametrize("mode", ["composed", "decomposed"])
def test_gradients_flow_in_both_modes(mode):
    layer = make_layer(2).compose() if mode == "composed" else make_layer(2)
    layer(torch.randn(2, 4, 9, 11)).square().mean().backward()
    active = ("weight", "bias") if mode == "composed" else (*FACTORS, "bias")
    names = [name for name, _ in layer.named_parameters()]
    assert names == [*FACTORS, "weight", "bias"] if mode == "composed" else [*FACTORS, "bias"]
    for name, parameter in layer.named_parameters():
        if name in active:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name  # the factors are not used while composed
    if mode == "decomposed":  # a decomposed layer holds exactly what it deploys
        assert sum(parameter.numel() for parameter in layer.parameters()) == layer.num_parameters


def test_decompose_projects_a_trained_composed_weight(rel_err):
    layer = make_layer(2).compose()
    x, target = torch.randn(4, 4, 9, 11), torch.randn(4, 6, 5, 5)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    nn.functional.mse_loss(layer(x), target).backward()
    optimizer.step()  # the dense filters leave the rank-2 set
    trained = layer.weight.detach().double().numpy()
    layer.decompose()
    expected = compose_rank1(*rank1_factors(trained, 2))
    assert rel_err(torch.as_tensor(layer.dense_weight()), torch.as_tensor(expected)) <= 1e-5
    assert rel_err(torch.as_tensor(expected), torch.as_tensor(trained)) > 1e-4  # it was a real projection


def test_from_conv_at_full_rank_in_both_modes(rel_err):
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 8, 8)
    layer = Rank1Conv2d.from_conv(conv, 3)  # min(kh·kw, C·kh, C·kw) = 9 would be exact; 3 approximates
    exact = Rank1Conv2d.from_conv(conv, 9)
    with torch.no_grad():
        assert rel_err(exact(x), conv(x)) <= 1e-5 and rel_err(exact.compose()(x), conv(x)) <= 1e-5
        assert rel_err(layer.to_dense()(x), layer(x)) <= 1e-5
        assert rel_err(layer.compose().to_dense()(x), layer(x)) <= 1e-5


def test_mode_is_checked():
    with pytest.raises(ValueError, match="mode"):
        Rank1Conv2d(4, 6, 3, mode="dense")
