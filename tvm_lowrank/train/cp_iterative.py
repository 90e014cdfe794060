"""Astrid & Lee (2018): hybrid CP-SVD compression with iterative one-shot fine-tuning.

Layer by layer, in model order: decompose one layer (a k×k conv by CP, rank-1 terms peeled by the
tensor power method with deflation; a 1×1 conv or a linear layer by SVD), then fine-tune the whole
net briefly so the later layers adapt before they are decomposed in turn. Ranks are fixed up front
from the policy on the dense model, so the result has exactly the structure the policy names.
"""

from __future__ import annotations

import torch
from torch import nn

from ..decompose import PerLayerRank
from ..errors import TrainingError
from ..models.training import evaluate_accuracy
from ..nn import convert
from ._loop import (CALIBRATION_IMAGES, BatchStream, Dataset, TrainedModel, TrainSettings, finish,
                    recalibrate_batchnorm, train_steps)
from .tai import policy_ranks

PROBE_IMAGES = 2000  # test images for the accuracy after each decomposition (the final one uses all)


def layer_ranks(trained: nn.Module, example: torch.Tensor, policy, svd_policy=None) -> dict[str, int]:
    """{layer: rank} in model order: k×k convs (CP) by `policy`; with an `svd_policy`, 1×1 convs and
    linear layers (SVD) by it. They get their own policy because a MAC budget that suits the convs
    would squeeze a small classifier (10 classes) through a rank-2 or -3 bottleneck."""
    ranks = policy_ranks(trained, "cp", policy, example)
    if svd_policy is not None:
        modules = dict(trained.named_modules())
        for name, rank in policy_ranks(trained, "cp", svd_policy, example, hybrid=True).items():
            if isinstance(modules[name], nn.Linear) or modules[name].kernel_size == (1, 1):
                ranks[name] = rank
    order = list(dict(trained.named_modules()))
    return dict(sorted(ranks.items(), key=lambda item: order.index(item[0])))


def train_cp_iterative(trained: nn.Module, data: Dataset, settings: TrainSettings, policy="macs:0.25",
                       steps_per_layer: int | None = None, svd_policy="energy:0.95", **cp_options) -> TrainedModel:
    """Decompose `trained` one layer at a time with a fine-tune after each.

    The fine-tuning budget is `settings.epochs` in total, split evenly over the layers unless
    `steps_per_layer` is given; `svd_policy` ranks the SVD layers (None: leave them dense);
    `cp_options` go to the CP decomposition (e.g. ``als_iters``).
    """
    torch.manual_seed(settings.seed)
    ranks = layer_ranks(trained, data.example, policy, svd_policy)
    hybrid = svd_policy is not None
    if not ranks:
        raise TrainingError(f"policy {policy!r} decomposes no layer of {type(trained).__name__}")
    stream = BatchStream(data.train_images, data.train_labels, settings.batch_size, settings.seed)
    if steps_per_layer is None:
        steps_per_layer = max(1, settings.total_steps(stream) // len(ranks))
    model, steps = trained, []
    for index, (name, rank) in enumerate(ranks.items()):
        model, _ = convert(model, "cp", PerLayerRank({name: rank}), data.example, hybrid=hybrid, **cp_options)
        recalibrate_batchnorm(model, torch.from_numpy(data.train_images[:CALIBRATION_IMAGES].copy()))
        accuracy = evaluate_accuracy(model, data.test_images[:PROBE_IMAGES], data.test_labels[:PROBE_IMAGES])
        train_steps(model, stream, steps_per_layer, settings.lr, settings.seed + index)
        steps.append({"layer": name, "rank": rank, "accuracy_after_decomposition": accuracy})
    return finish("cp-iterative", model, data, {"policy": str(policy), "svd_policy": str(svd_policy), "ranks": ranks,
                                                "steps": steps},
                  calibrate=True)
