"""Rank-1 filters (ATCD, "Rank-1 CNN"): each 3-D filter W_n as a sum of T outer products t⊗p⊗q.

T = 1 is the paper's rank-1 CNN; T > 1 sums T such terms per filter. The filters are fitted
independently (higher-order power iteration with deflation, optional ALS), all N at once.
The chain runs the N·T terms side by side: a 1×1 conv C→N·T (t), a kh×1 depthwise conv (p), a 1×kw
depthwise conv (q) and, when T > 1, a grouped 1×1 conv adding each filter's T terms.

Each term's scale λ is split evenly over its three factors (λ^(1/3) each), so the factors handed to
the composed-form training of ATCD start balanced and the chain needs no extra scale stage.

Maximum rank: a C×kh×kw filter has tensor rank at most min(kh·kw, C·kh, C·kw) (one term per index
pair of two modes); ``decompose`` and :func:`rank1_factors` return that exact construction there.
"""

from __future__ import annotations

import numpy as np

from ..errors import DecompositionError
from ._chain import ConvChain, ConvStage, StageShape
from ._methods import register_method
from ._power import fit_terms, max_terms, terms_for_energy
from ._validate import check_conv_weight, check_decomposition_input, check_fraction


def rank1_factors(weight, terms: int, layer: str = "conv", *, als_iters: int = 0, power_iters: int = 100):
    """Per-filter rank-1 terms: (channel (N, T, C), vertical (N, T, kh), horizontal (N, T, kw)).

    ``compose_rank1(*rank1_factors(w, T))`` is the rank-T approximation of `w`.
    """
    weight, terms = check_decomposition_input(_METHOD, weight, terms, layer)
    weights, factors = fit_terms(weight, terms, als_iters, power_iters)
    scale = np.cbrt(weights)[:, None, :]
    channel, vertical, horizontal = ((factor * scale).transpose(0, 2, 1) for factor in factors)
    return channel, vertical, horizontal


def compose_rank1(channel: np.ndarray, vertical: np.ndarray, horizontal: np.ndarray) -> np.ndarray:
    """The dense weight (N, C, kh, kw) = Σ_T t⊗p⊗q of each filter (ATCD's composed form)."""
    return np.einsum("ntc,nti,ntj->ncij", channel, vertical, horizontal)


def rank1_chain(channel: np.ndarray, vertical: np.ndarray, horizontal: np.ndarray) -> ConvChain:
    """The decomposed form of the given factors as a chain (ATCD's 1-D filters)."""
    channel, vertical, horizontal = (np.asarray(factor, dtype=np.float64) for factor in (channel, vertical, horizontal))
    out_channels, terms, in_channels = channel.shape
    if vertical.shape[:2] != (out_channels, terms) or horizontal.shape[:2] != (out_channels, terms):
        raise DecompositionError(
            f"rank-1 factors disagree on (N, T): channel {channel.shape}, vertical {vertical.shape}, "
            f"horizontal {horizontal.shape}"
        )
    width = out_channels * terms
    stages = [
        ConvStage(channel.reshape(width, in_channels, 1, 1)),
        ConvStage(vertical.reshape(width, 1, -1, 1), groups=width, axes="h"),
        ConvStage(horizontal.reshape(width, 1, 1, -1), groups=width, axes="w"),
    ]
    if terms > 1:
        stages.append(ConvStage(np.ones((out_channels, terms, 1, 1)), groups=out_channels))
    return ConvChain(_METHOD.name, terms, tuple(stages))


@register_method
class Rank1Method:
    """Options: ``als_iters`` (joint ALS sweeps per filter after deflation), ``power_iters``."""

    name = "rank1"
    needs_spatial_kernel = True  # a 1×1 filter is a C-vector: nothing to factor

    def max_rank(self, weight_shape) -> int:
        return max_terms(weight_shape[1:])

    def layout(self, weight_shape, rank: int) -> tuple[StageShape, ...]:
        out_channels, in_channels, kh, kw = weight_shape
        width = out_channels * rank
        stages = (
            StageShape(width, in_channels, (1, 1)),
            StageShape(width, width, (kh, 1), groups=width, axes="h"),
            StageShape(width, width, (1, kw), groups=width, axes="w"),
        )
        return stages + ((StageShape(out_channels, width, (1, 1), groups=out_channels),) if rank > 1 else ())

    def decompose(self, weight, rank: int, layer: str = "conv", *, als_iters: int = 0,
                  power_iters: int = 100) -> ConvChain:
        return rank1_chain(*rank1_factors(weight, rank, layer, als_iters=als_iters, power_iters=power_iters))

    def rank_for_energy(self, weight, fraction: float, layer: str = "conv") -> int:
        """Smallest T whose greedy terms (default options) keep `fraction` of the layer's ||W||²."""
        return terms_for_energy(check_conv_weight(weight, layer), check_fraction(fraction))


_METHOD = Rank1Method()
