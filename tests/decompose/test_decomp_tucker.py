"""Tucker-2 on the two channel modes: rank mapping, explicit ranks, HOOI."""

import numpy as np
import pytest

from tvm_lowrank.decompose import get_method, tucker2_factors
from tvm_lowrank.errors import RankError

TUCKER2 = get_method("tucker2")


def test_single_rank_is_clipped_per_channel_mode(rng):
    weight = rng.standard_normal((6, 3, 3, 3))
    assert TUCKER2.max_rank(weight.shape) == 6
    chain = TUCKER2.decompose(weight, 4)
    assert [(s.weight.shape, s.axes) for s in chain.stages] == [
        ((3, 3, 1, 1), ""), ((4, 3, 3, 3), "hw"), ((6, 4, 1, 1), "")]
    assert chain.rank == 4


def test_explicit_ranks_override_the_single_rank(rng):
    weight = rng.standard_normal((6, 5, 3, 3))
    chain = TUCKER2.decompose(weight, None, ranks=(2, 4))
    assert [s.weight.shape for s in chain.stages] == [(4, 5, 1, 1), (2, 4, 3, 3), (6, 2, 1, 1)]
    assert chain.layout == TUCKER2.layout(weight.shape, None, ranks=(2, 4))
    assert chain.rank == 4
    for ranks in ((7, 2), (2, 6), (0, 2)):
        with pytest.raises(RankError, match="stem"):
            TUCKER2.decompose(weight, None, layer="stem", ranks=ranks)


def test_bases_are_orthonormal_and_hooi_does_not_raise_the_error(rng):
    weight = rng.standard_normal((8, 6, 3, 3))
    errors = []
    for iters in (0, 1, 5):
        output_basis, core, input_basis = tucker2_factors(weight, (3, 2), hooi_iters=iters)
        np.testing.assert_allclose(output_basis.T @ output_basis, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(input_basis.T @ input_basis, np.eye(2), atol=1e-12)
        approx = np.einsum("rsij,nr,cs->ncij", core, output_basis, input_basis)
        errors.append(np.linalg.norm(weight - approx))
    assert np.all(np.diff(errors) <= 1e-12)
    hooi = TUCKER2.decompose(weight, None, ranks=(3, 2), hooi_iters=5).compose()
    assert np.linalg.norm(weight - hooi) == pytest.approx(errors[-1])


def test_full_channel_ranks_are_exact_even_when_a_mode_exceeds_the_rest(rng, relative_error):
    """N = 12 > C·kh·kw = 4: the output basis must still be a full 12-dim orthonormal basis."""
    weight = rng.standard_normal((12, 4, 1, 1))
    assert relative_error(weight, TUCKER2.decompose(weight, 12)) < 1e-12
