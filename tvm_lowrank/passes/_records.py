"""What the rewrite pass did to each conv, and the weight fingerprint that ties it to the source.

The Relax import loses framework layer names, so a record is tied back to the PyTorch or ONNX
program by a fingerprint of the conv's float32 weight bytes: `tvm_lowrank.reference` swaps exactly
the convs whose fingerprints the pass decomposed, and fails on any it cannot find.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ..decompose import ConvChain, ConvGeometry, RankChoice

DECOMPOSED, KEPT, PRE_DECOMPOSED = "decomposed", "kept", "pre-decomposed"


def weight_fingerprint(weight) -> str:
    """A short sha256 of a weight's float32 bytes and shape (equal weights, equal fingerprints)."""
    array = np.ascontiguousarray(np.asarray(weight), dtype=np.float32)
    digest = hashlib.sha256(str(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class LayerRecord:
    """One conv of the module (or one chain already in it), in graph order.

    name: "conv{i}", i counting every `relax.nn.conv2d` of the function in graph order (kept ones
    and chain stages included), so names do not depend on the method or policy: rank files use
    them. A pre-decomposed chain takes the name of its first stage. weight_shape: the conv's
    (N, C/groups, kh, kw); for a pre-decomposed chain, the dense (N, C, kh, kw) it spans.
    action: "decomposed" | "kept" | "pre-decomposed"; reason says why a conv was kept.
    chain: the stages now in the module (decomposed or pre-decomposed). has_bias: a constant bias
    add follows the conv (or the chain's last stage). weight_fingerprint: of the original weight
    (of the first stage for a pre-decomposed chain).
    """

    name: str
    weight_shape: tuple[int, int, int, int]
    geometry: ConvGeometry
    in_hw: tuple[int, int] | None
    action: str
    reason: str
    choice: RankChoice | None
    relative_error: float | None
    chain: ConvChain | None = field(repr=False)  # its weights would flood every printed record
    has_bias: bool
    weight_fingerprint: str | None
    groups: int = 1
    method: str | None = None
    rank: int | None = None
