"""DeepTwist-style distortion (Lee et al. 2019): train the dense structure, and every `period` steps
replace each conv weight by its low-rank approximation, so training settles in a flat minimum
where the final decomposition costs almost nothing.

The ranks come from the same rank policy the compiler uses (`select_rank` on the layer's shape and
input size), so compiling the trained model with that policy decomposes it at exactly these ranks,
and the decomposition is exact: the last distortion left every weight low-rank, and BatchNorm
folding only scales output channels, which keeps the rank.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..decompose import (ConvGeometry, PerLayerRank, im2col_lowrank_approx, parse_rank_policy, select_rank,
                         tai_lowrank_approx)
from ..nn import convert
from ._loop import recalibrate_batchnorm  # noqa: F401  (its home before _loop; still importable here)
from ._loop import BatchStream, Dataset, TrainedModel, TrainSettings, finish, train_steps

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


def train_deeptwist(trained: nn.Module, data: Dataset, settings: TrainSettings, method: str = "tai",
                    policy="macs:0.25", period: int = 50) -> TrainedModel:
    """Fine-tune a trained dense model with distortion every `period` steps, end on a distortion
    (with BatchNorm statistics re-estimated for it), then decompose: the final decomposition is
    exact, so its accuracy is the distorted dense model's."""
    torch.manual_seed(settings.seed)
    model = copy.deepcopy(trained)
    twist = DeepTwist(model, data.example, method, policy, period=period)
    twist.distort()  # start from the projection of the trained weights
    stream = BatchStream(data.train_images, data.train_labels, settings.batch_size, settings.seed)
    loss = train_steps(model, stream, settings.total_steps(stream), settings.lr, settings.seed, on_step=twist.on_step)
    twist.distort()
    distorted = finish("deeptwist", model, data, calibrate=True).accuracy
    decomposed, report = convert(model, method, PerLayerRank(twist.ranks), data.example)
    return finish("deeptwist", decomposed, data, calibrate=False, history={
        "policy": str(policy), "ranks": dict(twist.ranks), "period": period, "final_loss": loss,
        "accuracy_dense_distorted": distorted,
        "max_decomposition_error": max((layer.relative_error or 0.0) for layer in report.replaced)})
