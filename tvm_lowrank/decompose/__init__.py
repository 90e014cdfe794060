"""Pure decompositions of conv and linear weights (numpy only: no TVM, no PyTorch, no training).

Methods register themselves by name on import ("tai", "im2col", "cp", "rank1", "tucker2"); callers
use :func:`get_method`, or :func:`decompose_conv` to pick the rank by a policy as well.
"""

from ._chain import ConvChain, ConvGeometry, ConvStage, StageShape, chain_macs, conv_macs
from ._compose import dense_weight
from ._methods import get_method, list_methods, register_method
from ._svd import (im2col_lowrank_approx, im2col_matrix, matrix_rank_for_energy, tai_lowrank_approx, tai_matrix,
                   truncated_svd)
from ._tai import tai_singular_values
from . import _cp  # noqa: F401  (registers "cp")
from ._rank1 import compose_rank1, rank1_chain, rank1_factors
from ._tucker import tucker2_factors
from ._policy import (DEFAULT_IN_HW, DecomposedConv, EnergyRank, FixedRank, MacRatioRank, ParamRatioRank,
                      PerLayerRank, RankChoice, RankPolicy, check_decomposable, decompose_at, decompose_conv,
                      load_rank_file,
                      parse_rank_policy, select_rank)
