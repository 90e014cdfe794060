"""CP decomposition of the 4-way kernel (Astrid & Lee), by the tensor power method with deflation.

W[n, c, i, j] ≈ Σ_r λ_r a_r[n] b_r[c] p_r[i] q_r[j] runs as a 1×1 conv C→R (b), a kh×1 depthwise
conv (p), a 1×kw depthwise conv (q) and a 1×1 conv R→N (λ·a).

Maximum rank: the tensor rank of an N×C×kh×kw tensor is at most min over modes of the product of
the other three sizes (e.g. one term per (c, i, j) with one-hot b, p, q and a = W[:, c, i, j]); the
true maximal rank of a format is unknown in general, so this standard bound is ``max_rank``. At that
rank ``decompose`` returns that exact construction instead of running the power method.
"""

from __future__ import annotations

from ._chain import ConvChain, ConvStage, StageShape
from ._methods import register_method
from ._power import fit_terms, max_terms, terms_for_energy
from ._validate import check_conv_weight, check_decomposition_input, check_fraction


@register_method
class CPMethod:
    """Options: ``als_iters`` (0: the paper's greedy terms; >0: joint ALS refinement sweeps),
    ``power_iters`` (cap on power iterations per term)."""

    name = "cp"
    needs_spatial_kernel = True  # on a 1×1 conv it is SVD plus two useless depthwise stages

    def max_rank(self, weight_shape) -> int:
        return max_terms(weight_shape)

    def layout(self, weight_shape, rank: int) -> tuple[StageShape, ...]:
        out_channels, in_channels, kh, kw = weight_shape
        return (
            StageShape(rank, in_channels, (1, 1)),
            StageShape(rank, rank, (kh, 1), groups=rank, axes="h"),
            StageShape(rank, rank, (1, kw), groups=rank, axes="w"),
            StageShape(out_channels, rank, (1, 1)),
        )

    def decompose(self, weight, rank: int, layer: str = "conv", *, als_iters: int = 0,
                  power_iters: int = 100) -> ConvChain:
        weight, rank = check_decomposition_input(self, weight, rank, layer)
        weights, (output_factor, channel_factor, vertical_factor, horizontal_factor) = fit_terms(
            weight[None], rank, als_iters, power_iters)
        stages = (
            ConvStage(channel_factor[0].T[:, :, None, None]),
            ConvStage(vertical_factor[0].T[:, None, :, None], groups=rank, axes="h"),
            ConvStage(horizontal_factor[0].T[:, None, None, :], groups=rank, axes="w"),
            ConvStage((output_factor[0] * weights[0])[:, :, None, None]),
        )
        return ConvChain(self.name, rank, stages)

    def rank_for_energy(self, weight, fraction: float, layer: str = "conv") -> int:
        """Smallest rank whose greedy terms (default options) keep `fraction` of ||W||²."""
        return terms_for_energy(check_conv_weight(weight, layer)[None], check_fraction(fraction))
