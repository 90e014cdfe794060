"""`LowRankLinear`: the SVD half of the hybrid CP-SVD scheme (Astrid & Lee) for linear layers."""

from __future__ import annotations

from torch import nn

from ..decompose import ConvChain, truncated_svd
from ..errors import DecompositionError
from ._chain_conv import as_float64, copy_into


class LowRankLinear(nn.Sequential):
    """W ≈ expand · project: a Linear in → `rank` without bias, then `rank` → out with the bias."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.project = nn.Linear(in_features, rank, bias=False)
        self.expand = nn.Linear(rank, out_features, bias=bias)
        self.in_features, self.out_features, self.rank = in_features, out_features, rank

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, layer: str = "linear") -> "LowRankLinear":
        """The best rank-`rank` factorisation (truncated SVD) of a trained layer; `layer` names it in errors."""
        left, right = truncated_svd(as_float64(linear.weight), rank, layer)
        return cls._from_factors(left, right, linear.bias).to(device=linear.weight.device, dtype=linear.weight.dtype)

    @classmethod
    def from_chain(cls, chain: ConvChain, bias=None) -> "LowRankLinear":
        """From the im2col chain of the weight seen as a 1×1 conv (how rank policies treat a linear layer)."""
        if chain.method != "im2col" or chain.kernel != (1, 1):
            raise DecompositionError(f"LowRankLinear needs a 1×1 im2col chain, got a {chain.method} chain "
                                     f"with kernel {chain.kernel}")
        basis, mix = (stage.weight[:, :, 0, 0] for stage in chain.stages)
        return cls._from_factors(mix, basis, bias)

    @classmethod
    def _from_factors(cls, left, right, bias) -> "LowRankLinear":
        module = cls(right.shape[1], left.shape[0], right.shape[0], bias=bias is not None)
        copy_into(module.project.weight, right)
        copy_into(module.expand.weight, left)
        if bias is not None:
            copy_into(module.expand.bias, bias)
        return module

    def to_dense(self) -> nn.Linear:
        """The dense `nn.Linear` computing the same function (product taken in float64)."""
        bias, like = self.expand.bias, self.project.weight
        linear = nn.Linear(self.in_features, self.out_features, bias=bias is not None)
        linear = linear.to(device=like.device, dtype=like.dtype)
        copy_into(linear.weight, as_float64(self.expand.weight) @ as_float64(self.project.weight))
        if bias is not None:
            copy_into(linear.bias, bias)
        return linear

    def flops(self, positions: int = 1) -> int:
        """Multiply-accumulates for one sample applied at `positions` positions (1 for a classifier)."""
        return self.rank * (self.in_features + self.out_features) * positions

    @property
    def num_parameters(self) -> int:
        """Trainable parameters, the bias included."""
        return sum(parameter.numel() for parameter in self.parameters())
