"""Rank-1 filters (ATCD): per-filter sums of T outer products and their 1-D chain."""

import numpy as np
import pytest

from tvm_lowrank.decompose import compose_rank1, get_method, rank1_chain, rank1_factors
from tvm_lowrank.errors import DecompositionError, RankError

RANK1 = get_method("rank1")


@pytest.mark.parametrize("shape, bound", [((4, 3, 3, 3), 9), ((4, 2, 3, 3), 6), ((4, 5, 1, 3), 3)])
def test_max_rank_is_the_per_filter_tensor_rank_bound(shape, bound):
    assert RANK1.max_rank(shape) == bound  # min(kh·kw, C·kh, C·kw)


def test_factors_have_filter_term_axis_shapes_and_compose_to_the_chain(rng):
    weight = rng.standard_normal((5, 4, 3, 2))
    channel, vertical, horizontal = rank1_factors(weight, 2)
    assert (channel.shape, vertical.shape, horizontal.shape) == ((5, 2, 4), (5, 2, 3), (5, 2, 2))
    np.testing.assert_allclose(compose_rank1(channel, vertical, horizontal),
                               RANK1.decompose(weight, 2).compose(), atol=1e-12)


def test_rank_one_chain_has_three_stages_and_sums_terms_only_above_one(rng):
    weight = rng.standard_normal((5, 4, 3, 3))
    assert [(s.weight.shape, s.groups, s.axes) for s in RANK1.decompose(weight, 1).stages] == [
        ((5, 4, 1, 1), 1, ""), ((5, 1, 3, 1), 5, "h"), ((5, 1, 1, 3), 5, "w")]
    summed = RANK1.decompose(weight, 3).stages
    assert [(s.weight.shape, s.groups, s.axes) for s in summed] == [
        ((15, 4, 1, 1), 1, ""), ((15, 1, 3, 1), 15, "h"), ((15, 1, 1, 3), 15, "w"), ((5, 3, 1, 1), 5, "")]
    assert np.all(summed[-1].weight == 1)


def test_rank_one_filters_are_recovered_exactly(rng, relative_error):
    channel, vertical, horizontal = (rng.standard_normal((6, 1, size)) for size in (4, 3, 3))
    weight = compose_rank1(channel, vertical, horizontal)
    assert relative_error(weight, RANK1.decompose(weight, 1)) < 1e-10


def test_each_term_scale_is_split_evenly_over_its_three_factors(rng):
    channel, vertical, horizontal = rank1_factors(rng.standard_normal((5, 4, 3, 3)), 2)
    norms = [np.linalg.norm(factor, axis=2) for factor in (channel, vertical, horizontal)]
    np.testing.assert_allclose(norms[0], norms[1])
    np.testing.assert_allclose(norms[0], norms[2])


def test_decompose_is_deterministic(rng):
    weight = rng.standard_normal((5, 4, 3, 3))
    for first, second in zip(rank1_factors(weight, 3, als_iters=2), rank1_factors(weight.copy(), 3, als_iters=2)):
        assert np.array_equal(first, second)


def test_als_refinement_does_not_raise_the_error(rng, relative_error):
    weight = rng.standard_normal((5, 4, 3, 3))
    greedy = relative_error(weight, RANK1.decompose(weight, 3))
    assert relative_error(weight, RANK1.decompose(weight, 3, als_iters=10)) <= greedy + 1e-12


def test_chain_from_inconsistent_factors_is_rejected(rng):
    with pytest.raises(DecompositionError, match="disagree"):
        rank1_chain(rng.standard_normal((5, 2, 4)), rng.standard_normal((5, 1, 3)), rng.standard_normal((5, 2, 3)))


def test_factors_reject_a_bad_term_count_naming_the_layer(rng):
    with pytest.raises(RankError, match=r"blocks\.0.*rank1.*10"):
        rank1_factors(rng.standard_normal((4, 3, 3, 3)), 10, layer="blocks.0")
