"""Properties every registered method must have: exact at max rank, monotone error, honest layout,
rank_for_energy picking the smallest sufficient rank, and input checks naming the layer."""

import numpy as np
import pytest

from tvm_lowrank.decompose import get_method, list_methods
from tvm_lowrank.decompose._compose import dense_weight
from tvm_lowrank.errors import DecompositionError, RankError, RankPolicyError

METHODS = list_methods()
SHAPES = [(4, 3, 2, 3), (5, 2, 3, 1), (3, 4, 1, 3), (6, 3, 3, 3)]


def test_all_five_methods_are_registered():
    assert set(METHODS) >= {"tai", "im2col", "cp", "rank1", "tucker2"}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", METHODS)
def test_exact_at_max_rank(method, shape, rng, relative_error):
    weight = rng.standard_normal(shape)
    decomposer = get_method(method)
    chain = decomposer.decompose(weight, decomposer.max_rank(shape))
    assert relative_error(weight, chain) <= 1e-5


@pytest.mark.parametrize("method", METHODS)
def test_error_does_not_grow_with_rank(method, rng, relative_error):
    weight = rng.standard_normal((4, 3, 2, 3))
    decomposer = get_method(method)
    errors = [relative_error(weight, decomposer.decompose(weight, rank))
              for rank in range(1, decomposer.max_rank(weight.shape) + 1)]
    assert len(errors) > 1
    assert np.all(np.diff(errors) <= 1e-9), errors
    assert errors[0] > 0.1  # a random weight is far from rank 1 in every sense


@pytest.mark.parametrize("method", METHODS)
def test_layout_equals_decomposed_chain_layout(method, rng):
    weight = rng.standard_normal((6, 3, 3, 3))
    decomposer = get_method(method)
    for rank in sorted({1, 2, decomposer.max_rank(weight.shape) // 2, decomposer.max_rank(weight.shape)}):
        assert decomposer.layout(weight.shape, rank) == decomposer.decompose(weight, rank).layout


@pytest.mark.parametrize("method", METHODS)
def test_direct_composition_equals_impulse_probing(method, rng):
    weight = rng.standard_normal((6, 3, 3, 2))
    chain = get_method(method).decompose(weight, 2)
    np.testing.assert_allclose(dense_weight(chain), chain.compose(), atol=1e-12)


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("method", METHODS)
def test_rank_for_energy_is_the_smallest_rank_keeping_the_fraction(method, fraction, rng, relative_error):
    """Keeping fraction f of ||W||² means relative error² <= 1 - f, for every method alike."""
    weight = rng.standard_normal((6, 4, 3, 3))
    decomposer = get_method(method)
    rank = decomposer.rank_for_energy(weight, fraction)
    assert 1 <= rank <= decomposer.max_rank(weight.shape)
    assert relative_error(weight, decomposer.decompose(weight, rank)) ** 2 <= 1 - fraction + 1e-9
    if rank > 1:
        assert relative_error(weight, decomposer.decompose(weight, rank - 1)) ** 2 > 1 - fraction


@pytest.mark.parametrize("method", METHODS)
def test_rank_for_energy_of_a_low_rank_weight(method, rng):
    """A weight that is exactly one rank-1 term needs rank 1 for all of its energy, in every method."""
    vectors = [rng.standard_normal(size) for size in (5, 4, 3, 3)]
    weight = np.einsum("n,c,i,j->ncij", *vectors)
    assert get_method(method).rank_for_energy(weight, 1.0) == 1


@pytest.mark.parametrize("method", METHODS)
def test_zero_weight_gives_a_finite_zero_chain(method):
    weight = np.zeros((4, 3, 3, 3))
    decomposer = get_method(method)
    assert decomposer.rank_for_energy(weight, 0.9) == 1
    composed = decomposer.decompose(weight, 1).compose()
    assert np.all(composed == 0)


@pytest.mark.parametrize("method", METHODS)
def test_float32_weight_is_accepted(method, rng, relative_error):
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    decomposer = get_method(method)
    assert relative_error(weight, decomposer.decompose(weight, decomposer.max_rank(weight.shape))) <= 1e-5


@pytest.mark.parametrize("method", METHODS)
def test_bad_inputs_raise_naming_the_layer(method, rng):
    decomposer = get_method(method)
    weight = rng.standard_normal((4, 3, 3, 3))
    too_big = decomposer.max_rank(weight.shape) + 1
    for rank in (0, -1, too_big):
        with pytest.raises(RankError, match=rf"layer2\.conv.*{rank}.*\(4, 3, 3, 3\)"):
            decomposer.decompose(weight, rank, layer="layer2.conv")
    with pytest.raises(RankError, match="layer2.conv"):
        decomposer.decompose(weight, 1.5, layer="layer2.conv")
    with pytest.raises(DecompositionError, match=r"layer2\.conv.*4-D.*\(4, 3, 3\)"):
        decomposer.decompose(weight[:, :, :, 0], 1, layer="layer2.conv")
    for bad_value in (np.nan, np.inf):
        broken = weight.copy()
        broken[1, 2, 0, 1] = bad_value
        with pytest.raises(DecompositionError, match=r"layer2\.conv.*NaN or Inf"):
            decomposer.decompose(broken, 1, layer="layer2.conv")
        with pytest.raises(DecompositionError, match=r"layer2\.conv.*NaN or Inf"):
            decomposer.rank_for_energy(broken, 0.9, layer="layer2.conv")
    for fraction in (0, 1.5, float("nan")):
        with pytest.raises(RankPolicyError, match="fraction"):
            decomposer.rank_for_energy(weight, fraction)
