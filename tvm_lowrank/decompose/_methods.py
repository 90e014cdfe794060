"""Registry of conv decomposition methods, so callers dispatch by name.

A method is an object with:

- ``name``: the registry key (``"tai"``, ``"cp"``, ...);
- ``max_rank(weight_shape) -> int``: the largest rank the shape allows (exact at that rank);
- ``layout(weight_shape, rank) -> tuple[StageShape, ...]``: the chain's stage shapes, no weights,
  for cost accounting and rank search without decomposing;
- ``decompose(weight, rank, layer="conv", **options) -> ConvChain``;
- ``rank_for_energy(weight, fraction) -> int``: smallest rank keeping `fraction` of ||W||².

Adding a method is writing such an object and decorating its class with ``@register_method``;
nothing else changes (the nn layers, the Relax pass and the CLI look methods up here).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import DecompositionError
from ._chain import ConvChain, StageShape

_METHODS: dict[str, "DecompositionMethod"] = {}


class DecompositionMethod(Protocol):
    name: str

    def max_rank(self, weight_shape: tuple[int, int, int, int]) -> int: ...

    def layout(self, weight_shape: tuple[int, int, int, int], rank: int) -> tuple[StageShape, ...]: ...

    def decompose(self, weight: np.ndarray, rank: int, layer: str = "conv", **options) -> ConvChain: ...

    def rank_for_energy(self, weight: np.ndarray, fraction: float) -> int: ...


def register_method(cls):
    """Class decorator: instantiate the method and register it under its ``name``."""
    method = cls()
    _METHODS[method.name] = method
    return cls


def get_method(name: str) -> DecompositionMethod:
    try:
        return _METHODS[name]
    except KeyError:
        known = ", ".join(sorted(_METHODS))
        raise DecompositionError(f"unknown decomposition method {name!r}; known: {known}") from None


def list_methods() -> list[str]:
    return sorted(_METHODS)
