"""Matrix SVD: the im2col method, the weight matricisations, and DeepTwist's distortion steps.

A conv weight becomes a matrix in two ways that matter here. *im2col* (N, C·kh·kw) is how the conv
runs after lowering, so a rank-r factor of it is a conv with r basis filters followed by a 1×1 mix
(Lee et al.'s DeepTwist target; for a 1×1 conv it is the plain SVD of the hybrid CP-SVD scheme).
*Tai* (C·kh, kw·N) pairs the vertical and horizontal axes, so a rank-K factor of it is the kh×1 then
1×kw pair of Tai et al. Both truncations are optimal in Frobenius norm (Eckart-Young).
"""

from __future__ import annotations

import numpy as np

from ._chain import ConvChain, ConvStage, StageShape
from ._methods import register_method
from ._validate import check_conv_weight, check_decomposition_input, check_fraction, check_matrix, check_rank

# Energies are sums of squares computed in different orders; this much relative slack keeps
# fraction=1.0 reachable at the numerical rank instead of only at the full rank.
_ENERGY_SLACK = 1e-12


def rank_reaching(kept_energy, total_energy: float, fraction: float) -> int | None:
    """Smallest rank r whose kept energy (`kept_energy[r-1]`, non-decreasing) is >= fraction·total.

    None when no listed rank reaches it (the caller knows its full rank, which always does).
    """
    if total_energy <= 0:
        return 1
    reached = np.nonzero(np.asarray(kept_energy) >= (fraction - _ENERGY_SLACK) * total_energy)[0]
    return int(reached[0]) + 1 if reached.size else None


def rank_keeping_singular_energy(singular_values: np.ndarray, fraction: float) -> int:
    squared = singular_values.astype(np.float64) ** 2
    return rank_reaching(np.cumsum(squared), float(squared.sum()), check_fraction(fraction))


def split_svd(matrix: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank-`rank` factors (left (M, r), right (r, Ncols)), each carrying √σ so both are balanced."""
    left, singular_values, right = np.linalg.svd(matrix, full_matrices=False)
    root = np.sqrt(singular_values[:rank])
    return left[:, :rank] * root, root[:, None] * right[:rank]


def truncated_svd(matrix, rank: int, layer: str = "linear") -> tuple[np.ndarray, np.ndarray]:
    """Best rank-`rank` factors of a matrix (a linear layer's weight, for the hybrid scheme)."""
    matrix = check_matrix(matrix, layer)
    return split_svd(matrix, check_rank(rank, min(matrix.shape), layer, matrix.shape, "svd"))


def matrix_rank_for_energy(matrix, fraction: float, layer: str = "linear") -> int:
    """Smallest rank whose truncated SVD keeps `fraction` of the matrix's squared Frobenius norm."""
    return rank_keeping_singular_energy(np.linalg.svd(check_matrix(matrix, layer), compute_uv=False), fraction)


def im2col_matrix(weight: np.ndarray) -> np.ndarray:
    """(N, C·kh·kw): one row per output filter, as the lowered conv multiplies it."""
    return weight.reshape(weight.shape[0], -1)


def _from_im2col_matrix(matrix: np.ndarray, weight_shape) -> np.ndarray:
    return matrix.reshape(weight_shape)


def tai_matrix(weight: np.ndarray) -> np.ndarray:
    """(C·kh, kw·N) with row index (c, i_h) and column index (i_w, n), Tai et al.'s Theorem 1 layout."""
    out_channels, in_channels, kh, kw = weight.shape
    return weight.transpose(1, 2, 3, 0).reshape(in_channels * kh, kw * out_channels)


def from_tai_matrix(matrix: np.ndarray, weight_shape) -> np.ndarray:
    """Inverse of :func:`tai_matrix`."""
    out_channels, in_channels, kh, kw = weight_shape
    return matrix.reshape(in_channels, kh, kw, out_channels).transpose(3, 0, 1, 2)


_MATRICISATIONS = {"im2col": (im2col_matrix, _from_im2col_matrix), "tai": (tai_matrix, from_tai_matrix)}


def _lowrank_approx(method: str, weight, rank: int, layer: str) -> np.ndarray:
    to_matrix, from_matrix = _MATRICISATIONS[method]
    weight = check_conv_weight(weight, layer)
    matrix = to_matrix(weight)
    rank = check_rank(rank, min(matrix.shape), layer, weight.shape, method)
    left, right = split_svd(matrix, rank)
    return from_matrix(left @ right, weight.shape)


def im2col_lowrank_approx(weight, rank: int, layer: str = "conv") -> np.ndarray:
    """DeepTwist distortion step: the nearest weight whose im2col matrix has rank `rank`, same shape."""
    return _lowrank_approx("im2col", weight, rank, layer)


def tai_lowrank_approx(weight, rank: int, layer: str = "conv") -> np.ndarray:
    """DeepTwist distortion step towards Tai's pair: the Tai matrix truncated to rank `rank`, same shape."""
    return _lowrank_approx("tai", weight, rank, layer)


@register_method
class Im2colMethod:
    """Lowered SVD: `rank` dense kh×kw basis filters ("hw"), then a 1×1 mix to the N outputs."""

    name = "im2col"
    needs_spatial_kernel = False

    def max_rank(self, weight_shape) -> int:
        out_channels, in_channels, kh, kw = weight_shape
        return min(out_channels, in_channels * kh * kw)

    def layout(self, weight_shape, rank: int) -> tuple[StageShape, ...]:
        out_channels, in_channels, kh, kw = weight_shape
        return StageShape(rank, in_channels, (kh, kw), axes="hw"), StageShape(out_channels, rank, (1, 1))

    def decompose(self, weight, rank: int, layer: str = "conv") -> ConvChain:
        weight, rank = check_decomposition_input(self, weight, rank, layer)
        mix, basis = split_svd(im2col_matrix(weight), rank)
        _, in_channels, kh, kw = weight.shape
        stages = (ConvStage(basis.reshape(rank, in_channels, kh, kw), axes="hw"), ConvStage(mix[:, :, None, None]))
        return ConvChain(self.name, rank, stages)

    def rank_for_energy(self, weight, fraction: float, layer: str = "conv") -> int:
        return matrix_rank_for_energy(im2col_matrix(check_conv_weight(weight, layer)), fraction, layer)
