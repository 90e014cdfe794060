"""Tai et al.'s vertical/horizontal split (ICLR 2016), in closed form.

Theorem 1: the best K-channel kh×1 then 1×kw pair (in Frobenius norm of the composed weight) is the
rank-K truncated SVD of the Tai matrix (C·kh, kw·N), so the error at rank K is exactly the norm of
the dropped singular values and the split is exact at full rank.
"""

from __future__ import annotations

import numpy as np

from ._chain import ConvChain, ConvStage, StageShape
from ._methods import register_method
from ._svd import rank_keeping_singular_energy, split_svd, tai_matrix
from ._validate import check_conv_weight, check_decomposition_input


def tai_singular_values(weight, layer: str = "conv") -> np.ndarray:
    """Singular values (descending) of the Tai matrix: rank K drops the squares of those after K."""
    return np.linalg.svd(tai_matrix(check_conv_weight(weight, layer)), compute_uv=False)


@register_method
class TaiMethod:
    """Vertical kh×1 conv C→K (owns "h"), then horizontal 1×kw conv K→N (owns "w")."""

    name = "tai"
    needs_spatial_kernel = False  # on a 1×1 conv it is the SVD of the (C, N) matrix

    def max_rank(self, weight_shape) -> int:
        out_channels, in_channels, kh, kw = weight_shape
        return min(in_channels * kh, kw * out_channels)

    def layout(self, weight_shape, rank: int) -> tuple[StageShape, ...]:
        out_channels, in_channels, kh, kw = weight_shape
        return StageShape(rank, in_channels, (kh, 1), axes="h"), StageShape(out_channels, rank, (1, kw), axes="w")

    def decompose(self, weight, rank: int, layer: str = "conv") -> ConvChain:
        weight, rank = check_decomposition_input(self, weight, rank, layer)
        out_channels, in_channels, kh, kw = weight.shape
        columns, rows = split_svd(tai_matrix(weight), rank)  # U·√D (C·kh, K), √D·Qᵀ (K, kw·N)
        vertical_filters = columns.reshape(in_channels, kh, rank).transpose(2, 0, 1)[..., None]
        horizontal_filters = rows.reshape(rank, kw, out_channels).transpose(2, 0, 1)[:, :, None, :]
        stages = (ConvStage(vertical_filters, axes="h"), ConvStage(horizontal_filters, axes="w"))
        return ConvChain(self.name, rank, stages)

    def rank_for_energy(self, weight, fraction: float, layer: str = "conv") -> int:
        return rank_keeping_singular_energy(tai_singular_values(weight, layer), fraction)
