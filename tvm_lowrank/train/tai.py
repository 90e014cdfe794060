"""Tai et al. (2016): low-rank CNNs in the vertical/horizontal (V/H) form, two ways.

- From scratch: each k×k conv of an architecture becomes a freshly initialised `LowRankConv2d` (V,
  BatchNorm, H) at the rank the policy gives that layer's shape, and the whole net is trained.
- Closed form + fine-tune: a trained dense model's convs are replaced by their globally optimal
  V/H split (Theorem 1, the SVD of the reshaped weight) at the same ranks, then fine-tuned.

The ranks come from `tvm_lowrank.nn.convert` on the dense model, i.e. from the policy the compiler
uses, so both variants (and DeepTwist at that policy) are compared at exactly the same structure.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..decompose import PerLayerRank
from ..nn import LowRankConv2d, convert
from ._loop import BatchStream, Dataset, TrainedModel, TrainSettings, finish, train_steps


def policy_ranks(model: nn.Module, method: str, policy, example: torch.Tensor, hybrid: bool = False) -> dict:
    """{layer name: rank} that `policy` gives each layer of `model` it would decompose by `method`."""
    _, report = convert(model, method, policy, example, hybrid=hybrid)
    return {layer.name: layer.rank for layer in report.replaced}


def tai_scratch_model(dense: nn.Module, policy, example: torch.Tensor) -> nn.Module:
    """A copy of `dense`'s architecture whose decomposable convs are fresh V-BN-H pairs at the
    policy's ranks (other layers keep `dense`'s initialisation)."""
    model = copy.deepcopy(dense)
    for name, rank in policy_ranks(dense, "tai", policy, example).items():
        conv = model.get_submodule(name)
        pair = LowRankConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, rank, stride=conv.stride,
                             padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
                             bn_between=True)
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attribute, pair)
    return model


def train_tai_scratch(dense: nn.Module, data: Dataset, settings: TrainSettings, policy="macs:0.5") -> TrainedModel:
    """Train the V-BN-H counterpart of `dense`'s architecture from scratch (`dense`'s weights unused)."""
    torch.manual_seed(settings.seed)
    model = tai_scratch_model(dense, policy, data.example)
    stream = BatchStream(data.train_images, data.train_labels, settings.batch_size, settings.seed)
    loss = train_steps(model, stream, settings.total_steps(stream), settings.lr, settings.seed)
    return finish("tai-scratch", model, data, {"policy": str(policy), "final_loss": loss}, calibrate=True)


def decompose_then_finetune(trained: nn.Module, data: Dataset, settings: TrainSettings, method: str = "tai",
                            policy="macs:0.25", name: str = "tai-finetune") -> TrainedModel:
    """Closed-form decomposition of a trained dense model at the policy's ranks, then fine-tuning."""
    torch.manual_seed(settings.seed)
    ranks = policy_ranks(trained, method, policy, data.example)
    model, _ = convert(trained, method, PerLayerRank(ranks), data.example)
    before = finish(name, model, data, calibrate=True).accuracy
    stream = BatchStream(data.train_images, data.train_labels, settings.batch_size, settings.seed)
    loss = train_steps(model, stream, settings.total_steps(stream), settings.lr, settings.seed)
    return finish(name, model, data, {"policy": str(policy), "ranks": ranks, "accuracy_before_finetune": before,
                                      "final_loss": loss}, calibrate=True)
