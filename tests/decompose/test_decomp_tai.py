"""Tai et al.'s closed form: the Theorem 1 matricisation and its error law."""

import numpy as np
import pytest

from tvm_lowrank.decompose import get_method, tai_matrix, tai_singular_values


def test_tai_matrix_rows_are_channel_and_vertical_tap_columns_horizontal_tap_and_filter(rng):
    weight = rng.standard_normal((3, 2, 3, 2))
    matrix = tai_matrix(weight)
    out_channels, in_channels, kh, kw = weight.shape
    assert matrix.shape == (in_channels * kh, kw * out_channels)
    for n, c, i, j in np.ndindex(weight.shape):
        assert matrix[c * kh + i, j * out_channels + n] == weight[n, c, i, j]


@pytest.mark.parametrize("shape", [(6, 4, 3, 3), (5, 3, 3, 2)])
def test_error_equals_norm_of_dropped_singular_values(shape, rng):
    """Theorem 1: the rank-K pair's Frobenius error is sqrt(Σ_{k>K} σ_k²) of the Tai matrix."""
    weight = rng.standard_normal(shape)
    singular_values = tai_singular_values(weight)
    tai = get_method("tai")
    assert len(singular_values) == tai.max_rank(shape)
    for rank in range(1, tai.max_rank(shape) + 1):
        error = np.linalg.norm(weight - tai.decompose(weight, rank).compose())
        assert error == pytest.approx(np.sqrt(np.sum(singular_values[rank:] ** 2)), rel=1e-9, abs=1e-9)


def test_stages_are_vertical_then_horizontal(rng):
    weight = rng.standard_normal((6, 4, 3, 5))
    chain = get_method("tai").decompose(weight, 2)
    vertical, horizontal = chain.stages
    assert (vertical.weight.shape, vertical.axes, vertical.groups) == ((2, 4, 3, 1), "h", 1)
    assert (horizontal.weight.shape, horizontal.axes, horizontal.groups) == ((6, 2, 1, 5), "w", 1)
    assert chain.kernel == (3, 5)
    assert (chain.method, chain.rank) == ("tai", 2)


def test_max_rank_is_the_smaller_side_of_the_tai_matrix():
    tai = get_method("tai")
    assert tai.max_rank((64, 16, 3, 3)) == 48
    assert tai.max_rank((4, 16, 3, 3)) == 12
    assert tai.max_rank((4, 16, 1, 1)) == 4


def test_split_factors_are_balanced(rng):
    """U·√D and √D·Qᵀ: the k-th vertical and horizontal filters both have norm √σ_k."""
    weight = rng.standard_normal((5, 4, 3, 3))
    vertical, horizontal = get_method("tai").decompose(weight, 3).stages
    root_sigma = np.sqrt(tai_singular_values(weight)[:3])
    np.testing.assert_allclose(np.linalg.norm(vertical.weight.reshape(3, -1), axis=1), root_sigma)
    np.testing.assert_allclose(np.linalg.norm(horizontal.weight.transpose(1, 0, 2, 3).reshape(3, -1), axis=1),
                               root_sigma)
