"""Matrix SVD, the im2col method and the DeepTwist distortion steps."""

import numpy as np
import pytest

from tvm_lowrank.decompose import (get_method, im2col_lowrank_approx, matrix_rank_for_energy, tai_lowrank_approx,
                                   truncated_svd)
from tvm_lowrank.errors import DecompositionError, RankError


def test_truncated_svd_is_the_best_balanced_rank_r_factorisation(rng):
    matrix = rng.standard_normal((7, 5))
    singular_values = np.linalg.svd(matrix, compute_uv=False)
    for rank in range(1, 6):
        left, right = truncated_svd(matrix, rank)
        assert left.shape == (7, rank) and right.shape == (rank, 5)
        error = np.linalg.norm(matrix - left @ right)
        assert error == pytest.approx(np.sqrt(np.sum(singular_values[rank:] ** 2)), abs=1e-12)
        np.testing.assert_allclose(np.linalg.norm(left, axis=0), np.sqrt(singular_values[:rank]))
        np.testing.assert_allclose(np.linalg.norm(right, axis=1), np.sqrt(singular_values[:rank]))


def test_truncated_svd_rejects_bad_rank_and_values_naming_the_layer(rng):
    matrix = rng.standard_normal((4, 6))
    for rank in (0, 5):
        with pytest.raises(RankError, match=r"classifier\.fc.*\(4, 6\)"):
            truncated_svd(matrix, rank, layer="classifier.fc")
    matrix[0, 0] = np.nan
    with pytest.raises(DecompositionError, match=r"classifier\.fc.*NaN"):
        truncated_svd(matrix, 1, layer="classifier.fc")
    with pytest.raises(DecompositionError, match=r"classifier\.fc.*2-D"):
        truncated_svd(np.ones(3), 1, layer="classifier.fc")


def test_matrix_rank_for_energy_counts_squared_singular_values():
    matrix = np.diag([3.0, 2.0, 1.0, 0.5])  # energies 9, 4, 1, 0.25 of 14.25
    assert matrix_rank_for_energy(matrix, 9 / 14.25) == 1
    assert matrix_rank_for_energy(matrix, 9.01 / 14.25) == 2
    assert matrix_rank_for_energy(matrix, 0.98) == 3  # 14 / 14.25 = 0.982
    assert matrix_rank_for_energy(matrix, 0.99) == 4
    assert matrix_rank_for_energy(matrix, 1.0) == 4


def test_im2col_error_equals_dropped_singular_values_of_the_lowered_matrix(rng):
    weight = rng.standard_normal((6, 2, 3, 3))
    singular_values = np.linalg.svd(weight.reshape(6, -1), compute_uv=False)
    im2col = get_method("im2col")
    for rank in range(1, 7):
        chain = im2col.decompose(weight, rank)
        basis, mix = chain.stages
        assert (basis.weight.shape, basis.axes) == ((rank, 2, 3, 3), "hw")
        assert (mix.weight.shape, mix.axes) == ((6, rank, 1, 1), "")
        error = np.linalg.norm(weight - chain.compose())
        assert error == pytest.approx(np.sqrt(np.sum(singular_values[rank:] ** 2)), abs=1e-9)


def test_im2col_on_a_1x1_conv_is_plain_svd(rng):
    weight = rng.standard_normal((8, 5, 1, 1))
    im2col = get_method("im2col")
    assert im2col.max_rank(weight.shape) == 5
    left, right = truncated_svd(weight[:, :, 0, 0], 3)
    np.testing.assert_allclose(im2col.decompose(weight, 3).compose()[:, :, 0, 0], left @ right, atol=1e-12)


def _tai_matricisation(weight):
    """Rows (c, i_h), columns (i_w, n), written independently of the library."""
    out_channels, in_channels, kh, kw = weight.shape
    return np.moveaxis(weight, 0, -1).reshape(in_channels * kh, kw * out_channels)


@pytest.mark.parametrize("approx, matricise", [
    (im2col_lowrank_approx, lambda weight: weight.reshape(weight.shape[0], -1)),
    (tai_lowrank_approx, _tai_matricisation),
])
def test_distortion_step_has_exactly_the_requested_rank(approx, matricise, rng):
    weight = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    full_rank = min(matricise(weight).shape)
    for rank in (1, 2, 5, full_rank):
        distorted = approx(weight, rank)
        assert distorted.shape == weight.shape
        assert np.linalg.matrix_rank(matricise(distorted)) == rank
        np.testing.assert_allclose(approx(distorted, rank), distorted, atol=1e-9)  # a projection
    np.testing.assert_allclose(approx(weight, full_rank), weight, atol=1e-5)


def test_distortion_steps_equal_the_composed_chains(rng):
    weight = rng.standard_normal((5, 3, 3, 3))
    for approx, method in ((tai_lowrank_approx, "tai"), (im2col_lowrank_approx, "im2col")):
        np.testing.assert_allclose(approx(weight, 2), get_method(method).decompose(weight, 2).compose(), atol=1e-10)


@pytest.mark.parametrize("approx, too_big", [(im2col_lowrank_approx, 6), (tai_lowrank_approx, 13)])
def test_distortion_step_rejects_bad_rank_naming_the_layer(approx, too_big, rng):
    weight = rng.standard_normal((5, 4, 3, 3))  # im2col max 5, tai max min(12, 15) = 12
    for rank in (0, too_big):
        with pytest.raises(RankError, match=r"features\.3.*\(5, 4, 3, 3\)"):
            approx(weight, rank, layer="features.3")
