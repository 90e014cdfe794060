"""Dense weight of a chain by contracting its stages directly.

`ConvChain.compose` probes the chain with C·kh·kw impulse images, which is simple but costs memory
and time on wide layers; relative errors of whole models are measured with this instead.
"""

from __future__ import annotations

import numpy as np

from ._chain import ConvChain


def dense_weight(chain: ConvChain) -> np.ndarray:
    """(N, C, kh, kw) equal to ``chain.compose()``.

    Since every spatial axis is owned by at most one stage, composing a stage onto the kernel so far
    never overlaps kernel taps: the composed tap index on an axis is the one of whichever side spans it.
    """
    kernel = np.eye(chain.in_channels)[:, :, None, None]  # (M, C, x, y): the chain so far
    for stage in chain.stages:
        groups = stage.groups
        out_channels, in_per_group, kh, kw = stage.weight.shape
        grouped_stage = stage.weight.reshape(groups, out_channels // groups, in_per_group, kh, kw)
        grouped_kernel = kernel.reshape(groups, in_per_group, *kernel.shape[1:])
        combined = np.einsum("gomab,gmcxy->gocaxby", grouped_stage, grouped_kernel, optimize=True)
        _, _, channels, _, x, _, y = combined.shape
        kernel = combined.reshape(out_channels, channels, kh * x, kw * y)
    return kernel
