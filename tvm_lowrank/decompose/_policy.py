"""Rank selection: turn one rank policy into a rank per layer, with the cost of that choice.

The same policy text (CLI ``--rank 16`` / ``energy:0.95`` / ``macs:0.25`` / ``params:0.3``, or a
JSON rank file) must give the same ranks in the nn layers, the Relax pass and the reports, so the
choice is made here once and recorded as a :class:`RankChoice` (what was asked, what was taken,
whether it was clamped, and the MACs/parameters before and after).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import isfinite
from numbers import Integral, Real
from pathlib import Path
from types import MappingProxyType
from typing import Union

import numpy as np

from ..errors import DecompositionError, RankPolicyError
from ._chain import ConvChain, ConvGeometry, StageShape, chain_macs, conv_macs
from ._compose import dense_weight
from ._methods import get_method
from ._validate import check_conv_weight, check_fraction, check_rank

DEFAULT_IN_HW = (32, 32)  # input size MACs are counted at when the caller does not know it

_POLICY_FORMS = ("an integer rank >= 1 ('16'), 'energy:F' with 0 < F <= 1, 'macs:R' or 'params:R' with R > 0 "
                 "(a fraction of the dense layer's MACs or parameters)")


def _check_ratio(ratio, what: str) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, Real) or not (isfinite(ratio) and ratio > 0):
        raise RankPolicyError(f"{what} ratio must be a finite number > 0, got {ratio!r}")


@dataclass(frozen=True)
class FixedRank:
    """The same rank everywhere; above a layer's maximum it is clamped (recorded) unless clamp=False."""

    rank: int
    clamp: bool = True


@dataclass(frozen=True)
class EnergyRank:
    """Per layer, the smallest rank keeping `fraction` of ||W||² (relative error² <= 1 - fraction)."""

    fraction: float

    def __post_init__(self):
        check_fraction(self.fraction)


@dataclass(frozen=True)
class MacRatioRank:
    """Per layer, the largest rank whose chain costs at most `ratio` × the dense MACs (at least 1)."""

    ratio: float

    def __post_init__(self):
        _check_ratio(self.ratio, "MAC")


@dataclass(frozen=True)
class ParamRatioRank:
    """Per layer, the largest rank whose chain has at most `ratio` × the dense parameters (at least 1)."""

    ratio: float

    def __post_init__(self):
        _check_ratio(self.ratio, "parameter")


@dataclass(frozen=True)
class PerLayerRank:
    """Ranks by layer name (never clamped); other layers follow `default`, or stay dense without one."""

    ranks: Mapping[str, int]
    default: "RankPolicy | None" = None

    def __post_init__(self):
        object.__setattr__(self, "ranks", MappingProxyType(dict(self.ranks)))


RankPolicy = Union[FixedRank, EnergyRank, MacRatioRank, ParamRatioRank, PerLayerRank]


@dataclass(frozen=True)
class RankChoice:
    """The rank taken for one layer and what it costs; MACs are for one image of size `in_hw`."""

    layer: str
    method: str
    weight_shape: tuple[int, int, int, int]
    rank: int
    requested: int
    clamped: bool
    max_rank: int
    in_hw: tuple[int, int]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int

    @property
    def mac_ratio(self) -> float:
        return self.macs_after / self.macs_before

    @property
    def param_ratio(self) -> float:
        return self.params_after / self.params_before


@dataclass(frozen=True)
class DecomposedConv:
    """A chain with the choice that made it; relative_error = ||W - chain.compose()|| / ||W||."""

    chain: ConvChain
    choice: RankChoice
    relative_error: float


def check_decomposable(weight_shape, groups: int = 1, layer: str = "conv", method: str | None = None) -> None:
    """Raise DecompositionError if no method (or not `method`) can replace this conv by a chain.

    Grouped convs (depthwise included) are not low-rank targets: each method factors one dense
    (N, C) coupling. cp, rank1 and tucker2 need a spatial kernel; on a 1×1 conv they only add stages
    to what SVD does, so they point to 'im2col'. Stride, padding and dilation never block: the chain
    consumer gives them to the stages owning each axis.
    """
    shape = tuple(weight_shape)
    if len(shape) != 4:
        raise DecompositionError(f"{layer}: expected a 4-D conv weight shape (N, C, kh, kw), got {shape}")
    if groups != 1:
        raise DecompositionError(
            f"{layer}: grouped conv (groups={groups}, weight shape {shape}) cannot be decomposed; leave it dense"
        )
    if method is not None and getattr(get_method(method), "needs_spatial_kernel", False) and shape[2:] == (1, 1):
        raise DecompositionError(
            f"{layer}: method {method!r} needs a kernel larger than 1×1, weight shape {shape}; "
            f"use 'im2col' (SVD) for 1×1 convs"
        )


def _largest_rank_within(decomposer, weight_shape, limit: int, cost: Callable, budget: float) -> int:
    """Binary search: chain cost grows with the rank, so find the last rank inside the budget (>= 1)."""
    low, high = 1, limit
    while low < high:
        middle = (low + high + 1) // 2
        if cost(decomposer.layout(weight_shape, middle)) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def _params(layout: tuple[StageShape, ...]) -> int:
    return sum(stage.params for stage in layout)


def _requested_and_taken(policy, decomposer, weight, layer, in_hw, geometry) -> tuple[int, int] | None:
    shape = weight.shape
    limit = decomposer.max_rank(shape)
    if isinstance(policy, PerLayerRank):
        if layer in policy.ranks:
            rank = check_rank(policy.ranks[layer], limit, layer, shape, decomposer.name)
            return rank, rank
        if policy.default is None:
            return None
        return _requested_and_taken(policy.default, decomposer, weight, layer, in_hw, geometry)
    if isinstance(policy, FixedRank):
        rank = policy.rank
        if policy.clamp and isinstance(rank, Integral) and not isinstance(rank, bool) and rank > limit:
            return int(rank), limit
        rank = check_rank(rank, limit, layer, shape, decomposer.name)
        return rank, rank
    if isinstance(policy, EnergyRank):
        rank = decomposer.rank_for_energy(weight, policy.fraction, layer=layer)
        return rank, rank
    if isinstance(policy, MacRatioRank):
        budget = policy.ratio * conv_macs(shape, in_hw, geometry)
        rank = _largest_rank_within(decomposer, shape, limit, lambda layout: chain_macs(layout, in_hw, geometry),
                                    budget)
        return rank, rank
    if isinstance(policy, ParamRatioRank):
        rank = _largest_rank_within(decomposer, shape, limit, _params, policy.ratio * int(np.prod(shape)))
        return rank, rank
    raise RankPolicyError(f"{layer}: unknown rank policy {policy!r}")


def select_rank(policy: RankPolicy, method: str, weight, layer: str = "conv", in_hw=None,
                geometry: ConvGeometry = ConvGeometry(), groups: int = 1) -> RankChoice | None:
    """The rank `policy` gives this layer under `method`, or None: leave the layer dense.

    `groups` is the conv's groups (its weight is (N, C/groups, kh, kw)); anything but 1 raises.
    """
    decomposer = get_method(method)
    weight = check_conv_weight(weight, layer)
    check_decomposable(weight.shape, groups, layer, method)
    in_hw = DEFAULT_IN_HW if in_hw is None else tuple(int(size) for size in in_hw)
    ranks = _requested_and_taken(policy, decomposer, weight, layer, in_hw, geometry)
    if ranks is None:
        return None
    requested, rank = ranks
    layout = decomposer.layout(weight.shape, rank)
    return RankChoice(
        layer=layer, method=method, weight_shape=tuple(weight.shape), rank=rank, requested=requested,
        clamped=rank != requested, max_rank=decomposer.max_rank(weight.shape), in_hw=in_hw,
        macs_before=conv_macs(weight.shape, in_hw, geometry), macs_after=chain_macs(layout, in_hw, geometry),
        params_before=int(np.prod(weight.shape)), params_after=_params(layout),
    )


def decompose_conv(weight, method: str, policy: RankPolicy, layer: str = "conv", in_hw=None,
                   geometry: ConvGeometry = ConvGeometry(), groups: int = 1, **options) -> DecomposedConv | None:
    """Select the rank and decompose; None when the policy leaves this layer dense.

    `options` go to the method's `decompose` (e.g. ``als_iters`` for cp, ``hooi_iters`` for tucker2).
    """
    choice = select_rank(policy, method, weight, layer, in_hw, geometry, groups)
    return None if choice is None else decompose_at(weight, choice, **options)


def decompose_at(weight, choice: RankChoice, **options) -> DecomposedConv:
    """Decompose at a rank already chosen (lets a caller inspect the choice's cost first)."""
    layer = choice.layer
    weight = check_conv_weight(weight, layer)
    chain = get_method(choice.method).decompose(weight, choice.rank, layer=layer, **options)
    norm = np.linalg.norm(weight)
    error = float(np.linalg.norm(weight - dense_weight(chain)) / norm) if norm > 0 else 0.0
    return DecomposedConv(chain, choice, error)


def parse_rank_policy(text: str) -> RankPolicy:
    """A policy from its CLI form: "16", "energy:0.95", "macs:0.25" or "params:0.3"."""
    kind, separator, value = str(text).strip().lower().partition(":")
    try:
        if not separator:
            rank = int(kind)
            if rank < 1:
                raise ValueError(rank)
            return FixedRank(rank)
        return {"energy": EnergyRank, "macs": MacRatioRank, "params": ParamRatioRank}[kind.strip()](float(value))
    except (KeyError, ValueError):
        raise RankPolicyError(f"rank policy {text!r} not understood; accepted forms: {_POLICY_FORMS}") from None


def load_rank_file(path) -> PerLayerRank:
    """Read {"layer name": rank, ..., optional "default": "<policy>"} into a PerLayerRank.

    Layers missing from the file follow "default" (any CLI policy form), or stay dense without it.
    """
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except OSError as error:
        raise RankPolicyError(f"cannot read rank file {path}: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RankPolicyError(f"rank file {path} is not valid JSON: {error}") from None
    if not isinstance(entries, dict):
        raise RankPolicyError(f"rank file {path} must hold a JSON object of layer name -> rank, "
                              f"got {type(entries).__name__}")
    default = entries.pop("default", None)
    bad = {name: rank for name, rank in entries.items()
           if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1}
    if bad:
        raise RankPolicyError(f"rank file {path}: ranks must be integers >= 1, got {bad}")
    try:
        default_policy = None if default is None else parse_rank_policy(str(default))
    except RankPolicyError as error:
        raise RankPolicyError(f"rank file {path}: bad \"default\": {error}") from None
    return PerLayerRank(entries, default_policy)
