"""Fixtures of the decomposition tests: seeded small weights and the error measure they assert on."""

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def relative_error():
    """||W - chain.compose()|| / ||W||, through the chain's own numpy reference (impulse probing)."""

    def measure(weight, chain):
        return float(np.linalg.norm(weight - chain.compose()) / np.linalg.norm(weight))

    return measure
