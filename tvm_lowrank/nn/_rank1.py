"""`Rank1Conv2d`: ATCD's rank-1 filters, trainable in the composed or the decomposed form.

Each of the N filters is a sum of T = `rank` outer products t⊗p⊗q (channel, vertical, horizontal
1-D filters). ATCD trains by alternating two forms of the same layer:

- ``"decomposed"``: the 1-D chain (1×1 C→N·T, kh×1 and 1×kw depthwise, a group-sum when T > 1), the
  parameters being the factors. This is the deployed form and what the cost methods count.
- ``"composed"``: one dense conv whose parameter is the full 3-D filter bank ``weight``. It is
  over-parametrised (every entry of every filter moves under the gradient), which gives the better
  gradient flow the papers credit; it drifts off the rank-T set while it trains.

:meth:`compose` and :meth:`decompose` switch form. ``compose`` creates ``weight`` as the factors'
outer-product sum, exactly; ``decompose`` drops it, keeping the factors when ``weight`` has not moved
since (so switching back and forth conserves the function to float rounding) and otherwise refitting
them to ``weight`` by the rank-T decomposition: the projection step of ATCD. ``weight`` exists only
in the composed form, so a decomposed layer holds just what it deploys; build the optimiser after a
switch (the factors get no gradient while composed).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from ..decompose import ConvChain, ConvGeometry, compose_rank1, get_method, rank1_chain, rank1_factors
from ..errors import DecompositionError
from ._chain_conv import LowRankConvBase, as_float64, conv_geometry, copy_into, torch_padding

MODES = ("composed", "decomposed")


def _conv_args(geometry: ConvGeometry) -> dict:
    return {"stride": geometry.stride, "padding": torch_padding(geometry), "dilation": geometry.dilation}


class Rank1Conv2d(LowRankConvBase, nn.Module):
    """N filters of T = `rank` rank-1 terms each; ``channel`` (N,T,C), ``vertical`` (N,T,kh),
    ``horizontal`` (N,T,kw) are the papers' t, p, q."""

    method = "rank1"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, rank: int = 1, stride=1, padding=0,
                 dilation=1, bias: bool = True, mode: str = "decomposed"):
        if mode not in MODES:
            raise ValueError(f"Rank1Conv2d mode must be one of {MODES}, got {mode!r}")
        super().__init__()
        kh, kw = _pair(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size, self.rank = in_channels, out_channels, (kh, kw), rank
        self.geometry = conv_geometry(stride, padding, dilation)
        # Each factor ~ N(0, s²) makes a composed entry's variance T·s⁶; matching nn.Conv2d's default
        # (1 / (3·fan_in)) starts the composed and the decomposed forms at the usual scale.
        std = (3 * in_channels * kh * kw * rank) ** (-1 / 6)
        self.channel = nn.Parameter(torch.randn(out_channels, rank, in_channels) * std)
        self.vertical = nn.Parameter(torch.randn(out_channels, rank, kh) * std)
        self.horizontal = nn.Parameter(torch.randn(out_channels, rank, kw) * std)
        self.register_parameter("weight", None)  # the composed form's filters, see compose()
        bound = (in_channels * kh * kw) ** -0.5
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None
        if rank > 1:  # the chain's group-sum stage: fixed ones, not trained
            self.register_buffer("term_sum", torch.ones(out_channels, rank, 1, 1), persistent=False)
        self._dense_args = _conv_args(self.geometry)
        self._vertical_args = _conv_args(self.geometry.restricted_to("h"))
        self._horizontal_args = _conv_args(self.geometry.restricted_to("w"))
        self._mode = "decomposed"
        if mode == "composed":
            self.compose()

    @property
    def mode(self) -> str:
        """"composed" or "decomposed"; change it with compose() / decompose()."""
        return self._mode

    def composed_weight(self) -> torch.Tensor:
        """Σ_T t⊗p⊗q of each filter, (N, C, kh, kw), differentiable in the factors."""
        return torch.einsum("ntc,nti,ntj->ncij", self.channel, self.vertical, self.horizontal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._mode == "composed":
            return F.conv2d(x, self.weight, self.bias, **self._dense_args)
        width = self.out_channels * self.rank
        x = F.conv2d(x, self.channel.reshape(width, self.in_channels, 1, 1))
        x = F.conv2d(x, self.vertical.reshape(width, 1, -1, 1), groups=width, **self._vertical_args)
        last = self.rank == 1
        x = F.conv2d(x, self.horizontal.reshape(width, 1, 1, -1), self.bias if last else None, groups=width,
                     **self._horizontal_args)
        return x if last else F.conv2d(x, self.term_sum, self.bias, groups=self.out_channels)

    def compose(self) -> "Rank1Conv2d":
        """Switch to the composed form: a ``weight`` parameter holding the factors' outer-product sum."""
        if self._mode == "decomposed":
            self.weight = nn.Parameter(self.composed_weight().detach())
            self._mode = "composed"
        return self

    def decompose(self, layer: str = "conv", **options) -> "Rank1Conv2d":
        """Switch to the decomposed form, refitting the factors if ``weight`` moved since `compose`.

        `options` go to `rank1_factors` (``als_iters``, ``power_iters``) when a refit is needed.
        """
        if self._mode == "composed":
            factors = self._factors(layer, **options)
            for parameter, value in zip(self._factor_parameters(), factors):
                copy_into(parameter, value)
            self.weight = None
            self._mode = "decomposed"
        return self

    def _factors(self, layer: str = "conv", **options):
        """(t, p, q) of the current function: the factors, or the rank-T fit of a moved ``weight``."""
        with torch.no_grad():
            if self._mode == "decomposed" or torch.equal(self.weight, self.composed_weight()):
                return tuple(as_float64(factor) for factor in self._factor_parameters())
            return rank1_factors(as_float64(self.weight), self.rank, layer, **options)

    def _factor_parameters(self) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter]:
        return self.channel, self.vertical, self.horizontal

    def to_chain(self) -> ConvChain:
        """The deployed chain; in the composed form, of the rank-T fit of ``weight``."""
        return rank1_chain(*self._factors())

    @property
    def layout(self):
        return get_method(self.method).layout((self.out_channels, self.in_channels, *self.kernel_size), self.rank)

    @property
    def num_parameters(self) -> int:
        """Parameters of the deployed (decomposed) form: factors and bias, whatever the mode."""
        return sum(p.numel() for p in (*self._factor_parameters(), self.bias) if p is not None)

    def dense_weight(self) -> np.ndarray:
        if self._mode == "composed":
            return as_float64(self.weight)
        return compose_rank1(*self._factors())

    def output_bias(self) -> torch.Tensor | None:
        return self.bias

    @classmethod
    def from_chain(cls, chain: ConvChain, geometry: ConvGeometry = ConvGeometry(), bias=None, mode: str = "decomposed"):
        """From a rank-1 chain: stages 1×1, kh×1, 1×kw [, group-sum], whose weights are t, p, q [, scales]."""
        if chain.method != cls.method:
            raise DecompositionError(f"Rank1Conv2d needs a rank1 chain, got a {chain.method} chain")
        out_channels, terms, (kh, kw) = chain.out_channels, chain.rank, chain.kernel
        module = cls(chain.in_channels, out_channels, (kh, kw), terms, stride=geometry.stride,
                     padding=torch_padding(geometry), dilation=geometry.dilation, bias=bias is not None)
        channel, vertical, horizontal, *term_sum = (stage.weight for stage in chain.stages)
        horizontal = horizontal.reshape(out_channels, terms, kw)
        if term_sum:  # a weighted sum of the terms folds into the horizontal factors
            horizontal = horizontal * term_sum[0].reshape(out_channels, terms)[..., None]
        values = (channel.reshape(out_channels, terms, -1), vertical.reshape(out_channels, terms, kh), horizontal)
        for parameter, value in zip(module._factor_parameters(), values):
            copy_into(parameter, value)
        if bias is not None:
            copy_into(module.bias, bias)
        return module.compose() if mode == "composed" else module

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, rank={self.rank}, "
                f"mode={self._mode!r}, {self.geometry}")
