"""The decomposed conv layers: exact at full rank, round trips, rank monotonicity, costs, bad input."""

import pytest
import torch
from torch import nn

from tvm_lowrank.decompose import ConvGeometry, FixedRank, get_method, select_rank
from tvm_lowrank.errors import DecompositionError, RankError
from tvm_lowrank.nn import ChainConv2d, CPConv2d, Im2colConv2d, LowRankConv2d, Rank1Conv2d, Tucker2Conv2d

LAYERS = [LowRankConv2d, CPConv2d, Tucker2Conv2d, Im2colConv2d, Rank1Conv2d]
GEOMETRIES = {
    "plain": dict(kernel_size=3),
    "stride2_pad1": dict(kernel_size=3, stride=2, padding=1),
    "dilation2": dict(kernel_size=3, padding=2, dilation=2),
    "rect": dict(kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
}


def full_rank(cls, conv: nn.Conv2d) -> int:
    return get_method(cls.method).max_rank(tuple(conv.weight.shape))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
@pytest.mark.parametrize("cls", LAYERS)
def test_full_rank_reproduces_the_dense_conv(cls, geometry, bias, rel_err):
    conv = nn.Conv2d(4, 6, bias=bias, **geometry)
    x = torch.randn(2, 4, 11, 13)
    layer = cls.from_conv(conv, full_rank(cls, conv))
    with torch.no_grad():
        assert layer(x).shape == conv(x).shape
        assert rel_err(layer(x), conv(x)) <= 1e-5
    assert (layer.output_bias() is None) == (not bias)


def test_chain_conv_runs_any_chain(rel_err):
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    chain = get_method("cp").decompose(conv.weight.detach().double().numpy(), 36)
    geometry = ConvGeometry.from_torch(conv.stride, conv.padding, conv.dilation)
    layer = ChainConv2d(chain, geometry, conv.bias.detach().numpy())
    x = torch.randn(2, 4, 9, 9)
    assert [name for name, _ in layer.named_children()] == ["0", "1", "2", "3"]
    with torch.no_grad():
        assert rel_err(layer(x), conv(x)) <= 1e-5
        assert rel_err(layer.to_dense()(x), conv(x)) <= 1e-5
    assert layer.flops((9, 9)) == chain.macs((9, 9), geometry)
    with pytest.raises(DecompositionError, match="needs a tai chain"):
        LowRankConv2d.from_chain(chain, geometry)


@pytest.mark.parametrize("cls", LAYERS)
def test_to_dense_round_trip(cls, rel_err):
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    x = torch.randn(2, 4, 10, 10)
    layer = cls.from_conv(conv, 2)
    dense = layer.to_dense()
    assert isinstance(dense, nn.Conv2d) and dense.stride == (2, 2) and dense.padding == (1, 1)
    again = cls.from_conv(dense, full_rank(cls, dense))
    with torch.no_grad():
        assert rel_err(dense(x), layer(x)) <= 1e-5
        assert rel_err(again(x), layer(x)) <= 1e-5
        assert rel_err(layer(x), conv(x)) > 0.1  # rank 2 really approximates


@pytest.mark.parametrize("cls", LAYERS)
def test_output_error_does_not_increase_with_rank(cls, rel_err):
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(16, 4, 12, 12)
    top = full_rank(cls, conv)
    ranks = sorted({1, 2, 3, 4, 6, 8, 16, top} & set(range(1, top + 1)))
    with torch.no_grad():
        errors = [rel_err(cls.from_conv(conv, rank)(x), conv(x)) for rank in ranks]
    assert all(later <= earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[0] > 0.5 and errors[-1] <= 1e-5


@pytest.mark.parametrize("cls", LAYERS)
def test_costs_match_the_rank_choice(cls):
    conv = nn.Conv2d(8, 6, 3, stride=2, padding=1)
    layer = cls.from_conv(conv, 3)
    choice = select_rank(FixedRank(3), cls.method, conv.weight.detach().numpy(), in_hw=(15, 9),
                         geometry=layer.geometry)
    assert layer.flops((15, 9)) == choice.macs_after
    fixed = sum(buffer.numel() for buffer in layer.buffers())  # rank-1's term sum: constant ones
    assert layer.num_parameters + fixed == choice.params_after + 6  # the choice counts no bias


def test_flops_and_parameters_by_hand():
    # Tai, C=4 -> K=5 -> N=6, 3×3, stride 2, padding 1, on 11×9.
    layer = LowRankConv2d(4, 6, 3, rank=5, stride=2, padding=1)
    vertical = 5 * 4 * 3 * 6 * 9  # kh×1, stride (2, 1), pad (1, 0): 6×9 outputs
    horizontal = 6 * 5 * 3 * 6 * 5  # 1×kw, stride (1, 2), pad (0, 1): 6×5 outputs
    assert layer.flops((11, 9)) == vertical + horizontal == 5940
    assert layer.num_parameters == 5 * 4 * 3 + 6 * 5 * 3 + 6
    # Rank-1, T=2 terms, no padding, on 8×8: 1×1 C→N·T, kh×1, 1×kw depthwise, then the term sum.
    rank1 = Rank1Conv2d(4, 6, 3, rank=2, bias=False)
    assert rank1.flops((8, 8)) == 12 * 4 * 64 + 12 * 3 * 6 * 8 + 12 * 3 * 6 * 6 + 6 * 2 * 36
    assert rank1.num_parameters == 6 * 2 * (4 + 3 + 3)


@pytest.mark.parametrize("cls", LAYERS)
def test_trains_from_scratch(cls):
    layer = cls(4, 6, 3, 2, stride=2, padding=1)
    x, target = torch.randn(4, 4, 8, 8), torch.randn(4, 6, 4, 4)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(layer(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    trained = [p for p in layer.parameters() if p.grad is not None]
    assert trained and all(p.grad.abs().sum() > 0 for p in trained)
    assert losses[-1] < losses[0]


def test_tucker2_takes_a_rank_pair(rel_err):
    layer = Tucker2Conv2d(8, 6, 3, rank=(2, 5), padding=1)
    assert layer.ranks == (2, 5) and layer.rank == 5
    conv = nn.Conv2d(8, 6, 3, padding=1)
    fitted = Tucker2Conv2d.from_conv(conv, None, ranks=(6, 8))
    x = torch.randn(1, 8, 7, 7)
    with torch.no_grad():
        assert fitted.ranks == (6, 8) and rel_err(fitted(x), conv(x)) <= 1e-5


def test_bn_between_trains_a_step():
    layer = LowRankConv2d(4, 6, 3, rank=3, padding=1, bn_between=True)
    assert [name for name, _ in layer.named_children()] == ["vertical", "bn", "horizontal"]
    x, target = torch.randn(8, 4, 6, 6), torch.randn(8, 6, 6, 6)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    before = layer(x)
    nn.functional.mse_loss(before, target).backward()
    assert all(p.grad.abs().sum() > 0 for p in layer.parameters())
    optimizer.step()
    assert layer.bn.num_batches_tracked == 1 and layer.bn.running_mean.abs().sum() > 0
    assert nn.functional.mse_loss(layer(x), target) < nn.functional.mse_loss(before, target)


def test_bn_between_folds_into_to_dense(rel_err):
    x = torch.randn(2, 4, 9, 9)
    unpadded = LowRankConv2d(4, 6, 3, rank=3, padding=(1, 0), bn_between=True)
    padded = LowRankConv2d(4, 6, 3, rank=3, padding=1, bn_between=True)
    with torch.no_grad():
        padded.eval()(x)
        assert rel_err(padded.to_dense()(x), padded(x)) <= 1e-5  # fresh BatchNorm: no shift yet
        for layer in (unpadded, padded):
            layer.bn.running_mean.uniform_(-1, 1)
            layer.bn.running_var.uniform_(0.5, 2)
            layer.bn.bias.uniform_(-1, 1)
        assert rel_err(unpadded.eval().to_dense()(x), unpadded(x)) <= 1e-5
    with pytest.raises(DecompositionError, match="BatchNorm"):
        padded.to_dense()


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("rank", [0, 10_000])
def test_bad_rank_names_the_layer(cls, rank):
    with pytest.raises(RankError, match=r"features\.3"):
        cls.from_conv(nn.Conv2d(4, 6, 3), rank, layer="features.3")


def test_unsupported_convs_are_refused():
    with pytest.raises(DecompositionError, match="same"):
        LowRankConv2d(4, 6, 3, rank=2, padding="same")
    with pytest.raises(DecompositionError, match="same"):
        CPConv2d.from_conv(nn.Conv2d(4, 6, 3, padding="same"), 2)
    with pytest.raises(DecompositionError, match="groups=2"):
        LowRankConv2d.from_conv(nn.Conv2d(4, 6, 3, groups=2), 2, layer="grouped")
    with pytest.raises(DecompositionError, match="reflect"):
        Im2colConv2d.from_conv(nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), 2)
