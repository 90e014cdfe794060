"""CP by the tensor power method with deflation (Astrid & Lee)."""

import numpy as np
import pytest

from tvm_lowrank.decompose import get_method

CP = get_method("cp")


@pytest.mark.parametrize("shape, bound", [
    ((8, 4, 3, 3), 36),   # C·kh·kw
    ((2, 2, 3, 3), 12),   # N·C·kw = N·C·kh beat the kernel-sized products
    ((4, 3, 1, 3), 9),    # C·kh·kw
    ((5, 4, 1, 1), 4),    # a 1×1 conv: min(N, C), the matrix rank bound
])
def test_max_rank_is_the_smallest_product_of_three_modes(shape, bound):
    assert CP.max_rank(shape) == bound


def test_chain_is_pointwise_vertical_horizontal_pointwise_with_lambda_last(rng):
    weight = rng.standard_normal((6, 4, 3, 2))
    chain = CP.decompose(weight, 5)
    assert [(s.weight.shape, s.groups, s.axes) for s in chain.stages] == [
        ((5, 4, 1, 1), 1, ""), ((5, 1, 3, 1), 5, "h"), ((5, 1, 1, 2), 5, "w"), ((6, 5, 1, 1), 1, "")]
    for stage in chain.stages[:3]:  # unit factors: the scale λ lives in the last stage only
        np.testing.assert_allclose(np.linalg.norm(stage.weight.reshape(5, -1), axis=1), 1.0)


def test_decompose_is_deterministic(rng):
    weight = rng.standard_normal((5, 4, 3, 3))
    first, second = CP.decompose(weight, 7, als_iters=3), CP.decompose(weight.copy(), 7, als_iters=3)
    for a, b in zip(first.stages, second.stages):
        assert np.array_equal(a.weight, b.weight)


def test_recovers_a_rank_one_kernel_with_one_term(rng, relative_error):
    weight = np.einsum("n,c,i,j->ncij", *(rng.standard_normal(size) for size in (6, 5, 3, 3)))
    assert relative_error(weight, CP.decompose(weight, 1)) < 1e-10


def test_greedy_terms_are_a_prefix_of_larger_ranks(rng):
    """Deflation peels the same first terms whatever the final rank, hence the monotone error."""
    weight = rng.standard_normal((5, 4, 3, 3))
    small, large = CP.decompose(weight, 3), CP.decompose(weight, 6)
    for a, b in zip(small.stages[:3], large.stages[:3]):
        np.testing.assert_allclose(a.weight, b.weight[:3])


def test_als_refinement_lowers_the_error(rng, relative_error):
    weight = rng.standard_normal((6, 5, 3, 3))
    greedy = relative_error(weight, CP.decompose(weight, 8))
    refined = [relative_error(weight, CP.decompose(weight, 8, als_iters=iters)) for iters in (1, 5, 20)]
    assert refined[0] <= greedy + 1e-12
    assert np.all(np.diff(refined) <= 1e-12)
    assert refined[-1] < greedy - 1e-3


def test_als_recovers_a_non_orthogonal_rank_two_kernel(rng, relative_error):
    """Greedy deflation cannot split two non-orthogonal terms exactly; joint ALS can."""
    factors = [rng.standard_normal((size, 2)) for size in (6, 5, 3, 3)]
    weight = np.einsum("nr,cr,ir,jr->ncij", *factors)
    assert relative_error(weight, CP.decompose(weight, 2)) > 1e-3
    assert relative_error(weight, CP.decompose(weight, 2, als_iters=300)) < 1e-6
