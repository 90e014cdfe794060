"""Tucker-2: compress only the two channel modes, keep the kh×kw spatial core.

W ≈ G ×_out U_out ×_in U_in runs as a 1×1 conv C→R_in (U_inᵀ), the kh×kw core R_in→R_out and a 1×1
conv R_out→N (U_out). HOSVD takes the leading singular vectors of the two channel unfoldings; HOOI
sweeps (``hooi_iters``) re-fit each basis to the other's projection and never raise the error.

A single rank r means (min(r, N), min(r, C)), so r = max(N, C) keeps both full bases (exact);
``ranks=(r_out, r_in)`` sets the two separately and the chain records max(r_out, r_in).
"""

from __future__ import annotations

import numpy as np

from ._chain import ConvChain, ConvStage, StageShape
from ._methods import register_method
from ._svd import rank_reaching
from ._validate import check_conv_weight, check_fraction, check_rank


def _left_singular_vectors(tensor: np.ndarray, mode: int) -> np.ndarray:
    """All left singular vectors of the mode unfolding, as a square orthonormal basis (descending)."""
    unfolded = np.moveaxis(tensor, mode, 0).reshape(tensor.shape[mode], -1)
    return np.linalg.svd(unfolded, full_matrices=unfolded.shape[0] > unfolded.shape[1])[0]


def tucker2_factors(weight, ranks: tuple[int, int], hooi_iters: int = 0):
    """(output basis (N, R_out), core (R_out, R_in, kh, kw), input basis (C, R_in)); ranks up to (N, C)."""
    weight = check_conv_weight(weight)
    out_rank, in_rank = ranks
    output_basis = _left_singular_vectors(weight, 0)[:, :out_rank]
    input_basis = _left_singular_vectors(weight, 1)[:, :in_rank]
    for _ in range(hooi_iters):
        output_basis = _left_singular_vectors(np.einsum("ncij,cs->nsij", weight, input_basis), 0)[:, :out_rank]
        input_basis = _left_singular_vectors(np.einsum("ncij,nr->rcij", weight, output_basis), 1)[:, :in_rank]
    core = np.einsum("ncij,nr,cs->rsij", weight, output_basis, input_basis, optimize=True)
    return output_basis, core, input_basis


@register_method
class Tucker2Method:
    """Options: ``ranks=(r_out, r_in)`` (overrides `rank`), ``hooi_iters`` (HOOI sweeps after HOSVD)."""

    name = "tucker2"
    needs_spatial_kernel = True  # on a 1×1 conv it is three 1×1 convs where SVD needs two

    def max_rank(self, weight_shape) -> int:
        return max(weight_shape[0], weight_shape[1])

    def _ranks(self, weight_shape, rank, ranks, layer: str = "conv") -> tuple[int, int]:
        if ranks is None:
            rank = check_rank(rank, self.max_rank(weight_shape), layer, weight_shape, self.name)
            return min(rank, weight_shape[0]), min(rank, weight_shape[1])
        out_rank, in_rank = ranks
        return (check_rank(out_rank, weight_shape[0], layer, weight_shape, f"{self.name} output"),
                check_rank(in_rank, weight_shape[1], layer, weight_shape, f"{self.name} input"))

    def layout(self, weight_shape, rank: int, ranks: tuple[int, int] | None = None) -> tuple[StageShape, ...]:
        out_channels, in_channels, kh, kw = weight_shape
        out_rank, in_rank = ranks or (min(rank, out_channels), min(rank, in_channels))
        return (StageShape(in_rank, in_channels, (1, 1)), StageShape(out_rank, in_rank, (kh, kw), axes="hw"),
                StageShape(out_channels, out_rank, (1, 1)))

    def decompose(self, weight, rank: int | None, layer: str = "conv", *, ranks: tuple[int, int] | None = None,
                  hooi_iters: int = 0) -> ConvChain:
        weight = check_conv_weight(weight, layer)
        out_rank, in_rank = self._ranks(weight.shape, rank, ranks, layer)
        output_basis, core, input_basis = tucker2_factors(weight, (out_rank, in_rank), hooi_iters)
        stages = (ConvStage(input_basis.T[:, :, None, None]), ConvStage(core, axes="hw"),
                  ConvStage(output_basis[:, :, None, None]))
        return ConvChain(self.name, max(out_rank, in_rank), stages)

    def rank_for_energy(self, weight, fraction: float, layer: str = "conv") -> int:
        """Smallest r whose HOSVD keeps `fraction` of ||W||².

        The bases are orthonormal, so the kept energy is the core's ||G||², and the HOSVD core at
        (r_out, r_in) is the leading block of the core in the full bases: one projection serves
        every r.
        """
        weight = check_conv_weight(weight, layer)
        out_channels, in_channels = weight.shape[:2]
        full_core = np.einsum("ncij,nr,cs->rsij", weight, _left_singular_vectors(weight, 0),
                              _left_singular_vectors(weight, 1), optimize=True)
        block_energy = np.cumsum(np.cumsum((full_core ** 2).sum(axis=(2, 3)), axis=0), axis=1)
        ranks = np.arange(1, self.max_rank(weight.shape) + 1)
        kept_energy = block_energy[np.minimum(ranks, out_channels) - 1, np.minimum(ranks, in_channels) - 1]
        return rank_reaching(kept_energy, float(np.sum(weight ** 2)), check_fraction(fraction)) or len(ranks)
