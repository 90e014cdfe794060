"""DeepTwist-style distortion (Lee et al. 2019): train the dense structure, and every `period` steps
replace each conv weight by its low-rank approximation, so training settles in a flat minimum
where the final decomposition costs almost nothing.

The ranks come from the same rank policy the compiler uses (`select_rank` on the layer's shape and
input size), so compiling the trained model with that policy decomposes it at exactly these ranks,
and the decomposition is exact: the last distortion left every weight low-rank, and BatchNorm
folding only scales output channels, which keeps the rank.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..decompose import ConvGeometry, im2col_lowrank_approx, parse_rank_policy, select_rank, tai_lowrank_approx

APPROXIMATIONS = {"tai": tai_lowrank_approx, "im2col": im2col_lowrank_approx}


def _eligible(conv: nn.Conv2d) -> bool:
    return conv.groups == 1 and conv.kernel_size[0] > 1 and conv.kernel_size[1] > 1


def _input_sizes(model: nn.Module, example_input: torch.Tensor) -> dict[str, tuple[int, int]]:
    """Each conv's input height and width on `example_input`, by module name."""
    sizes, hooks = {}, []

    def record(name):
        def hook(module, args):
            sizes.setdefault(name, tuple(args[0].shape[-2:]))
        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_pre_hook(record(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return sizes


class DeepTwist:
    """The distortion step: `distort()` projects every eligible conv onto its low-rank set.

    `ranks` maps module names to the rank each conv is kept at; convs the policy would not make
    cheaper (the compiler keeps those dense) are left out, exactly as the compiler decides.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, method: str = "tai",
                 policy="macs:0.25", period: int = 100):
        if method not in APPROXIMATIONS:
            raise ValueError(f"DeepTwist distortion supports {sorted(APPROXIMATIONS)}, not {method!r}")
        self.model, self.method, self.period = model, method, period
        policy = parse_rank_policy(policy) if isinstance(policy, (str, int)) else policy
        sizes = _input_sizes(model, example_input)
        self.ranks: dict[str, int] = {}
        for name, conv in model.named_modules():
            if not isinstance(conv, nn.Conv2d) or not _eligible(conv) or name not in sizes:
                continue
            geometry = ConvGeometry.from_torch(conv.stride, conv.padding, conv.dilation)
            choice = select_rank(policy, method, conv.weight.detach().numpy(), layer=name,
                                 in_hw=sizes[name], geometry=geometry)
            if choice is not None and choice.macs_after < choice.macs_before:
                self.ranks[name] = choice.rank

    @torch.no_grad()
    def distort(self) -> None:
        approximate = APPROXIMATIONS[self.method]
        modules = dict(self.model.named_modules())
        for name, rank in self.ranks.items():
            weight = modules[name].weight
            low_rank = approximate(weight.detach().cpu().numpy().astype(np.float64), rank, layer=name)
            weight.copy_(torch.as_tensor(low_rank, dtype=weight.dtype))

    def on_step(self, step: int) -> None:
        """A training-loop callback: distort after every `period`-th optimiser step."""
        if (step + 1) % self.period == 0:
            self.distort()


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                          batches: int = 40) -> None:
    """Re-estimate BatchNorm running statistics for the current (distorted) weights."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    model.train()
    for start in range(0, min(len(images), batch_size * batches), batch_size):
        model(images[start:start + batch_size])
    model.eval()
