"""Input checks shared by every decomposition: fail early, naming the layer and the limit."""

from __future__ import annotations

from numbers import Real

import numpy as np

from ..errors import DecompositionError, RankError, RankPolicyError


def check_conv_weight(weight, layer: str = "conv") -> np.ndarray:
    """Return `weight` as a finite float64 4-D array (N, C, kh, kw), or raise DecompositionError."""
    array = np.asarray(weight)
    if array.ndim != 4:
        raise DecompositionError(f"{layer}: expected a 4-D conv weight (N, C, kh, kw), got shape {array.shape}")
    if 0 in array.shape:
        raise DecompositionError(f"{layer}: empty weight of shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DecompositionError(f"{layer}: weight of shape {array.shape} contains NaN or Inf")
    return array.astype(np.float64)


def check_matrix(matrix, layer: str = "linear") -> np.ndarray:
    """Return `matrix` as a finite float64 2-D array, or raise DecompositionError."""
    array = np.asarray(matrix)
    if array.ndim != 2 or 0 in array.shape:
        raise DecompositionError(f"{layer}: expected a non-empty 2-D matrix, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DecompositionError(f"{layer}: matrix of shape {array.shape} contains NaN or Inf")
    return array.astype(np.float64)


def check_rank(rank, max_rank: int, layer: str, shape, method: str) -> int:
    """Return `rank` as an int in [1, max_rank], or raise RankError naming the layer and the limit."""
    if isinstance(rank, bool) or not isinstance(rank, Real) or not float(rank).is_integer():
        raise RankError(f"{layer}: rank must be an integer, got {rank!r}")
    rank = int(rank)
    if rank < 1 or rank > max_rank:
        raise RankError(
            f"{layer}: {method} rank {rank} is outside [1, {max_rank}] for weight shape {tuple(shape)}"
        )
    return rank


def check_fraction(fraction, what: str = "energy fraction") -> float:
    """Return `fraction` as a float in (0, 1], or raise RankPolicyError (a ValueError)."""
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0 < fraction <= 1:
        raise RankPolicyError(f"{what} must be a number in (0, 1], got {fraction!r}")
    return float(fraction)


def check_decomposition_input(method, weight, rank, layer: str) -> tuple[np.ndarray, int]:
    """The checks every `method.decompose` starts with: a finite 4-D weight and a rank the shape allows."""
    weight = check_conv_weight(weight, layer)
    return weight, check_rank(rank, method.max_rank(weight.shape), layer, weight.shape, method.name)
