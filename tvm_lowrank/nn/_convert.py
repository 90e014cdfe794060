"""`convert`: replace a model's dense layers by decomposed ones, and report each decision.

Which layers: every ``nn.Conv2d`` with groups 1 and a k×k kernel (k > 1 on both axes) goes to the
chosen method. With ``hybrid=True`` (Astrid & Lee's hybrid CP-SVD scheme, for any method) the 1×1
convs and the ``nn.Linear`` layers are also factored, by truncated SVD: a 1×1 conv becomes an
`Im2colConv2d`, a linear layer a `LowRankLinear`. A linear layer is ranked as the 1×1 conv it is
(weight (out, in, 1, 1), applied at one position per sample, or as many as the example input
shows), so one rank policy covers all layers. Everything else stays dense, listed with the reason.

Ranks and costs come from `tvm_lowrank.decompose.decompose_conv` (`select_rank`), so they are the
numbers every other consumer of the same policy gets. MACs are per image; without an
`example_input` each conv is counted at ``DEFAULT_IN_HW``, which is only a relative measure.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..decompose import DEFAULT_IN_HW, ConvGeometry, PerLayerRank, decompose_conv, get_method, parse_rank_policy
from ..errors import RankPolicyError
from ._chain_conv import (CPConv2d, Im2colConv2d, LowRankConv2d, LowRankConvBase, Tucker2Conv2d, as_float64,
                          dense_parts, unsupported_reason)
from ._linear import LowRankLinear
from ._rank1 import Rank1Conv2d

LAYER_CLASSES = {
    "tai": LowRankConv2d, "cp": CPConv2d, "rank1": Rank1Conv2d, "tucker2": Tucker2Conv2d, "im2col": Im2colConv2d,
}
HYBRID_METHOD = "im2col"  # SVD of 1×1 convs and linear layers in the hybrid scheme


def layer_class(method: str) -> type:
    """The nn layer that runs a method's chain."""
    get_method(method)  # an unknown name raises DecompositionError listing the known ones
    return LAYER_CLASSES[method]


@dataclass(frozen=True)
class LayerReport:
    """One conv or linear layer: what was done to it and what it costs before and after.

    MACs are for one image (`in_hw` is the input size they are counted at; (positions, 1) for a
    linear layer). Parameters are the weights of the stages as the decomposition's layout counts
    them (rank-1's constant term-sum included); biases are kept as they are and not counted.
    """

    name: str
    kind: str  # "conv" or "linear"
    weight_shape: tuple[int, ...]
    in_hw: tuple[int, int]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    method: str | None = None
    rank: int | None = None
    requested: int | None = None
    clamped: bool = False
    max_rank: int | None = None
    relative_error: float | None = None  # ||W - composed chain|| / ||W||
    skipped: str | None = None  # the reason, for a layer left dense

    @property
    def replaced(self) -> bool:
        return self.skipped is None


@dataclass(frozen=True)
class ConversionReport:
    """All layers `convert` looked at, in model order, with totals over them."""

    method: str
    hybrid: bool
    policy: str
    measured: bool  # input sizes recorded from an example input (else DEFAULT_IN_HW per conv)
    layers: tuple[LayerReport, ...]

    @property
    def replaced(self) -> tuple[LayerReport, ...]:
        return tuple(layer for layer in self.layers if layer.replaced)

    @property
    def skipped(self) -> tuple[LayerReport, ...]:
        return tuple(layer for layer in self.layers if not layer.replaced)

    def _total(self, field: str) -> int:
        return sum(getattr(layer, field) for layer in self.layers)

    @property
    def totals(self) -> dict:
        macs_before, macs_after = self._total("macs_before"), self._total("macs_after")
        params_before, params_after = self._total("params_before"), self._total("params_after")
        return {
            "macs_before": macs_before, "macs_after": macs_after,
            "mac_ratio": macs_after / macs_before if macs_before else 1.0,
            "params_before": params_before, "params_after": params_after,
            "param_ratio": params_after / params_before if params_before else 1.0,
            "replaced": len(self.replaced), "skipped": len(self.skipped),
        }

    def to_dict(self) -> dict:
        """JSON-ready: the settings, one dict per layer, and the totals."""
        return {"method": self.method, "hybrid": self.hybrid, "policy": self.policy, "measured": self.measured,
                "layers": [asdict(layer) for layer in self.layers], "totals": self.totals}

    def as_table(self) -> str:
        header = ("layer", "kind", "weight shape", "method", "rank", "MACs before", "MACs after", "params before",
                  "params after", "rel. error", "note")
        rows = [header]
        for layer in self.layers:
            rank = "" if layer.rank is None else f"{layer.rank}" + (f" (asked {layer.requested})" if layer.clamped else "")
            error = "" if layer.relative_error is None else f"{layer.relative_error:.3g}"
            note = f"skipped: {layer.skipped}" if layer.skipped else ""
            rows.append((layer.name, layer.kind, "x".join(map(str, layer.weight_shape)), layer.method or "", rank,
                         f"{layer.macs_before:,}", f"{layer.macs_after:,}", f"{layer.params_before:,}",
                         f"{layer.params_after:,}", error, note))
        totals = self.totals
        rows.append(("total", "", "", "", "", f"{totals['macs_before']:,}", f"{totals['macs_after']:,}",
                     f"{totals['params_before']:,}", f"{totals['params_after']:,}", "",
                     f"MACs x{totals['mac_ratio']:.3f}, params x{totals['param_ratio']:.3f}"))
        widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        sizes = "input sizes from the example input" if self.measured else f"convs counted at {DEFAULT_IN_HW} (no example input)"
        return "\n".join([f"method {self.method}{' (hybrid)' if self.hybrid else ''}, policy {self.policy}; {sizes}",
                          *lines])


def _record_sizes(model: nn.Module, layers: dict[str, nn.Module], example_input) -> dict[str, tuple]:
    """(in_hw, out_hw) of each layer's first call on `example_input`; (positions, 1) for linear layers."""
    sizes = {}

    def record(name):
        def hook(module, inputs, output):
            if isinstance(module, nn.Linear):
                positions = inputs[0][0].numel() // module.in_features  # one sample's rows
                sizes.setdefault(name, ((positions, 1), (positions, 1)))
            else:
                sizes.setdefault(name, (tuple(inputs[0].shape[-2:]), tuple(output.shape[-2:])))
        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in layers.items()]
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()  # a probe must not move BatchNorm statistics
        with torch.no_grad():
            model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return sizes


def _skip_reason(layer: nn.Module, hybrid: bool) -> str | None:
    """Why `convert` leaves this layer dense whatever the rank policy says, or None."""
    if isinstance(layer, nn.Linear):
        return None if hybrid else "linear layer (hybrid=True factors it by SVD)"
    reason = unsupported_reason(layer)
    kh, kw = layer.kernel_size
    if reason is not None:
        return reason
    if (kh, kw) == (1, 1):
        return None if hybrid else "1x1 conv (hybrid=True factors it by SVD)"
    return f"already a 1-D kernel ({kh}x{kw})" if 1 in (kh, kw) else None


def _dense_macs(layer: nn.Module, in_hw, out_hw) -> int:
    """A dense layer's MACs: each weight once per output position."""
    if out_hw is None:  # no example input: derive the output size
        if isinstance(layer, nn.Linear) or layer.padding == "same":
            out_hw = in_hw
        else:
            padding = (0, 0) if layer.padding == "valid" else layer.padding
            out_hw = ConvGeometry.from_torch(layer.stride, padding, layer.dilation).output_hw(in_hw, layer.kernel_size)
    return layer.weight.numel() * out_hw[0] * out_hw[1]


def _decompose(name: str, layer: nn.Module, method: str, policy, in_hw, options):
    """(DecomposedConv, replacement module), or None where the policy leaves the layer dense.

    1×1 convs and linear layers (the latter as (out, in, 1, 1) convs) go to SVD; `options` belong
    to `method` and reach only the k×k convs.
    """
    if isinstance(layer, nn.Linear):
        weight, geometry = as_float64(layer.weight)[:, :, None, None], ConvGeometry()
        bias = None if layer.bias is None else as_float64(layer.bias)
    else:
        weight, geometry, bias = dense_parts(layer, name)
    layer_method = HYBRID_METHOD if weight.shape[2:] == (1, 1) else method
    result = decompose_conv(weight, layer_method, policy, layer=name, in_hw=in_hw, geometry=geometry,
                            **(options if layer_method == method else {}))
    if result is None:
        return None
    if isinstance(layer, nn.Linear):
        replacement = LowRankLinear.from_chain(result.chain, bias)
    else:
        replacement = layer_class(layer_method).from_chain(result.chain, geometry, bias)
    return result, replacement.to(device=layer.weight.device, dtype=layer.weight.dtype).train(layer.training)


def _convert_layer(name: str, layer: nn.Module, method: str, policy, hybrid: bool, size, options):
    """(LayerReport, replacement module or None) for one conv or linear layer."""
    if size is None:  # not measured: a linear layer at one position, a conv at the default size
        size = ((1, 1) if isinstance(layer, nn.Linear) else DEFAULT_IN_HW, None)
    in_hw, out_hw = size
    params = layer.weight.numel()
    common = dict(name=name, kind="linear" if isinstance(layer, nn.Linear) else "conv",
                  weight_shape=tuple(layer.weight.shape), in_hw=tuple(in_hw), params_before=params)
    reason = _skip_reason(layer, hybrid)
    decomposed = None if reason else _decompose(name, layer, method, policy, in_hw, options)
    if decomposed is None:
        macs = _dense_macs(layer, in_hw, out_hw)
        return LayerReport(**common, params_after=params, macs_before=macs, macs_after=macs,
                           skipped=reason or "the rank policy leaves it dense"), None
    result, replacement = decomposed
    choice = result.choice
    report = LayerReport(
        **common, params_after=choice.params_after, macs_before=choice.macs_before, macs_after=choice.macs_after,
        method=choice.method, rank=choice.rank, requested=choice.requested, clamped=choice.clamped,
        max_rank=choice.max_rank, relative_error=result.relative_error,
    )
    return report, replacement


def convert(model: nn.Module, method: str, rank_policy, example_input=None, *, hybrid: bool = False,
            **options) -> tuple[nn.Module, ConversionReport]:
    """A decomposed copy of `model` (the original is untouched) and the report of every decision.

    `method`: a registered method name ("tai", "cp", "rank1", "tucker2", "im2col") for the k×k convs.
    `rank_policy`: a policy object of `tvm_lowrank.decompose`, or its CLI text ("16", "energy:0.95",
    "macs:0.25", "params:0.3"). A `PerLayerRank` names layers as ``model.named_modules()`` does.
    `example_input`: a tensor (or tuple of positional inputs) run once in eval mode to record each
    layer's input size, for exact MAC accounting and MAC-ratio policies.
    `hybrid`: also factor 1×1 convs and linear layers by SVD (Astrid & Lee's hybrid CP-SVD).
    `options` go to the method's `decompose` for the k×k convs (e.g. ``als_iters`` for cp).
    """
    layer_class(method)
    policy = parse_rank_policy(str(rank_policy)) if isinstance(rank_policy, (str, int)) else rank_policy
    new_model = copy.deepcopy(model)
    decomposed = [name for name, module in new_model.named_modules()
                  if isinstance(module, (LowRankConvBase, LowRankLinear))]
    layers = {name: module for name, module in new_model.named_modules()
              if isinstance(module, (nn.Conv2d, nn.Linear))
              and not any(name.startswith(f"{prefix}.") or prefix == "" for prefix in decomposed)}
    if isinstance(policy, PerLayerRank) and set(policy.ranks) - set(layers):
        raise RankPolicyError(f"the rank policy names layers the model has no conv or linear layer for: "
                              f"{sorted(set(policy.ranks) - set(layers))}")
    sizes = {} if example_input is None else _record_sizes(new_model, layers, example_input)

    reports = []
    for name, layer in layers.items():
        report, replacement = _convert_layer(name, layer, method, policy, hybrid, sizes.get(name), options)
        reports.append(report)
        if replacement is None:
            continue
        parent, _, attribute = name.rpartition(".")
        if name == "":
            new_model = replacement
        else:
            setattr(new_model.get_submodule(parent), attribute, replacement)
    return new_model, ConversionReport(method, hybrid, repr(policy), example_input is not None, tuple(reports))
