"""Rank-1 terms of tensors: the tensor power method with deflation, ALS, and exact constructions.

Shared by CP (Astrid & Lee: one 4-way kernel) and rank-1 filters (ATCD: N independent 3-way
filters), so everything works on a batch of tensors (B, I_1, ..., I_d); CP is the batch of one.
Factors are stored as (B, I_mode, R) arrays and weights (the λ of each term) as (B, R).

No random numbers are drawn: each term's power iteration starts from the leading singular vectors
of the residual's unfoldings (the HOSVD start), so every call gives the same terms.
"""

from __future__ import annotations

import numpy as np

from ._svd import rank_reaching

_INDEX_LETTERS = "abcdefgh"


def _unfold(tensor: np.ndarray, mode: int) -> np.ndarray:
    """(B, I_mode, product of the other modes in their order)."""
    moved = np.moveaxis(tensor, mode + 1, 1)
    return moved.reshape(moved.shape[0], moved.shape[1], -1)


def _kronecker(vectors: list) -> np.ndarray:
    """Per batch item, the flattened outer product of the vectors: matches :func:`_unfold`'s columns."""
    product = vectors[0]
    for vector in vectors[1:]:
        product = (product[:, :, None] * vector[:, None, :]).reshape(product.shape[0], -1)
    return product


def best_rank1(tensor: np.ndarray, power_iters: int, tol: float = 1e-8):
    """Higher-order power iteration: alternately update each unit vector with the others fixed.

    Returns (weights (B,), vectors [(B, I_k)]) with weight = <T, v_1∘...∘v_d> >= 0, so subtracting
    the term lowers ||T||² by exactly weight² (what makes deflation's error non-increasing).
    """
    order = tensor.ndim - 1
    unfoldings = [_unfold(tensor, mode) for mode in range(order)]
    grams = [unfolded @ unfolded.transpose(0, 2, 1) for unfolded in unfoldings[1:]]
    vectors = [None] + [np.linalg.eigh(gram)[1][..., -1] for gram in grams]  # HOSVD start
    weights = np.zeros(tensor.shape[0])
    for _ in range(max(power_iters, 1)):
        previous = weights
        for mode in range(order):
            others = _kronecker([vectors[k] for k in range(order) if k != mode])
            updated = np.matmul(unfoldings[mode], others[:, :, None])[..., 0]
            weights = np.linalg.norm(updated, axis=1)
            vectors[mode] = updated / np.where(weights > 0, weights, 1.0)[:, None]
        if np.all(np.abs(weights - previous) <= tol * weights):
            break
    return weights, vectors


def compose_terms(weights: np.ndarray, factors: list) -> np.ndarray:
    """Σ_r λ_r v_1r ∘ ... ∘ v_dr per batch item: (B, I_1, ..., I_d)."""
    letters = _INDEX_LETTERS[:len(factors)]
    spec = "zr" + "".join(f",z{letter}r" for letter in letters) + "->z" + letters
    return np.einsum(spec, weights, *factors, optimize=True)


def deflate(tensor: np.ndarray, terms: int, power_iters: int, stop_fraction: float | None = None):
    """Peel rank-1 terms off the residual one at a time (the tensor power method with deflation).

    Returns (weights (B, R), factors [(B, I_k, R)], kept_energy (R,)), where kept_energy[r] is
    ||T||² - ||residual after r+1 terms||² summed over the batch. With `stop_fraction` it stops at
    the first term count keeping that fraction, so R may be below `terms`.
    """
    residual = tensor.copy()
    total_energy = float(np.sum(tensor ** 2))
    weights, factors, kept_energy = [], [], []
    for _ in range(terms):
        weight, vectors = best_rank1(residual, power_iters)
        residual -= compose_terms(weight[:, None], [vector[:, :, None] for vector in vectors])
        weights.append(weight)
        factors.append(vectors)
        kept_energy.append(total_energy - float(np.sum(residual ** 2)))
        if stop_fraction is not None and rank_reaching(kept_energy[-1:], total_energy, stop_fraction):
            break
    stacked = [np.stack([vectors[mode] for vectors in factors], axis=-1) for mode in range(tensor.ndim - 1)]
    return np.stack(weights, axis=-1), stacked, np.array(kept_energy)


def normalize_terms(factors: list) -> tuple[np.ndarray, list]:
    """Move each term's scale into a weight, leaving unit-norm factor columns (zero stays zero)."""
    norms = [np.linalg.norm(factor, axis=1) for factor in factors]  # each (B, R)
    unit = [factor / np.where(norm > 0, norm, 1.0)[:, None, :] for factor, norm in zip(factors, norms)]
    return np.prod(norms, axis=0), unit


def als_refine(tensor: np.ndarray, weights: np.ndarray, factors: list, iters: int):
    """Alternating least squares on all terms jointly, starting from the given ones.

    Each sweep solves exactly for one mode's factor with the others fixed, so the error never
    rises; it corrects what greedy deflation cannot (terms that are not mutually orthogonal).
    """
    factors = [factors[0] * weights[:, None, :]] + [factor.copy() for factor in factors[1:]]
    letters = _INDEX_LETTERS[:len(factors)]
    for _ in range(iters):
        for mode in range(len(factors)):
            others = [k for k in range(len(factors)) if k != mode]
            spec = "z" + letters + "".join(f",z{letters[k]}r" for k in others) + f"->z{letters[mode]}r"
            projected = np.einsum(spec, tensor, *(factors[k] for k in others), optimize=True)
            gram = np.prod([factors[k].transpose(0, 2, 1) @ factors[k] for k in others], axis=0)
            factors[mode] = projected @ np.linalg.pinv(gram, hermitian=True)
    return normalize_terms(factors)


def exact_terms(tensor: np.ndarray) -> tuple[np.ndarray, list]:
    """An exact decomposition into min_k Π_{j≠k} I_j rank-1 terms (the standard tensor-rank bound).

    Leave out the mode k whose complement is smallest: every index tuple of the other modes gives a
    term of one-hot vectors on those modes times the tensor's fiber along mode k.
    """
    dims = tensor.shape[1:]
    complements = [int(np.prod(dims)) // size for size in dims]
    kept_mode = int(np.argmin(complements))
    others = [k for k in range(len(dims)) if k != kept_mode]
    fibers = np.moveaxis(tensor, kept_mode + 1, -1).reshape(tensor.shape[0], -1, dims[kept_mode])
    index_tuples = np.indices([dims[k] for k in others]).reshape(len(others), -1)  # same C order
    factors = [None] * len(dims)
    factors[kept_mode] = fibers.transpose(0, 2, 1)
    for position, mode in enumerate(others):
        one_hot = np.eye(dims[mode])[:, index_tuples[position]]
        factors[mode] = np.broadcast_to(one_hot, (tensor.shape[0], *one_hot.shape)).copy()
    return normalize_terms(factors)


def max_terms(dims) -> int:
    """The rank at which :func:`exact_terms` is exact: min over modes of the other modes' product."""
    return min(int(np.prod(dims)) // size for size in dims)


def fit_terms(tensor: np.ndarray, terms: int, als_iters: int = 0, power_iters: int = 100):
    """`terms` rank-1 terms per batch item: deflation (+ ALS), or the exact construction at the bound."""
    if terms >= max_terms(tensor.shape[1:]):
        return exact_terms(tensor)
    weights, factors, _ = deflate(tensor, terms, power_iters)
    return als_refine(tensor, weights, factors, als_iters) if als_iters else (weights, factors)


def terms_for_energy(tensor: np.ndarray, fraction: float, power_iters: int = 100) -> int:
    """Smallest term count whose :func:`fit_terms` (no ALS) keeps `fraction` of ||T||² over the batch."""
    bound = max_terms(tensor.shape[1:])
    if bound == 1:
        return 1
    _, _, kept_energy = deflate(tensor, bound - 1, power_iters, stop_fraction=fraction)
    return rank_reaching(kept_energy, float(np.sum(tensor ** 2)), fraction) or bound
