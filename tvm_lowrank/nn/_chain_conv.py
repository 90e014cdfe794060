"""`ChainConv2d`: any :class:`~tvm_lowrank.decompose.ConvChain` as a PyTorch module.

The method-specific layers (Tai, CP, Tucker-2, im2col) are thin subclasses of this one, and the
compiler builds its PyTorch low-rank reference from it, so PyTorch and TVM run the same chain.
`LowRankConvBase` holds what every decomposed conv layer (chain or not) shares: its cost, its
dense equivalent, and the checks on the dense conv it replaces.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn.modules.utils import _pair

from ..decompose import ConvChain, ConvGeometry, ConvStage, StageShape, chain_macs, dense_weight, get_method
from ..errors import DecompositionError


def copy_into(parameter: torch.Tensor, value) -> None:
    """Overwrite a parameter in place (its dtype and device kept) with an array or a tensor."""
    value = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    with torch.no_grad():
        parameter.copy_(value.to(parameter.dtype))


def as_float64(tensor: torch.Tensor) -> np.ndarray:
    """A tensor's values as a float64 numpy array: what the decomposition math takes."""
    return tensor.detach().cpu().double().numpy()


def conv_geometry(stride=1, padding=0, dilation=1) -> ConvGeometry:
    """`nn.Conv2d`-style int/tuple arguments as a ConvGeometry; string padding is rejected."""
    return ConvGeometry.from_torch(_pair(stride), padding if isinstance(padding, str) else _pair(padding),
                                   _pair(dilation))


def torch_padding(geometry: ConvGeometry) -> tuple[int, int]:
    """`nn.Conv2d`'s (ph, pw); asymmetric padding has no such form and is rejected."""
    top, left, bottom, right = geometry.padding
    if (top, left) != (bottom, right):
        raise DecompositionError(f"nn.Conv2d cannot express asymmetric padding {geometry.padding}")
    return top, left


def unsupported_reason(conv: nn.Conv2d) -> str | None:
    """Why no chain can replace this conv (whatever its kernel), or None."""
    if conv.groups != 1:
        return f"{'depthwise' if conv.groups == conv.in_channels else 'grouped'} conv (groups={conv.groups})"
    if isinstance(conv.padding, str):
        return f"string padding {conv.padding!r} is not supported; give explicit padding"
    if conv.padding_mode != "zeros":
        return f"padding_mode {conv.padding_mode!r} is not supported, only 'zeros'"
    return None


def dense_parts(conv: nn.Conv2d, layer: str) -> tuple[np.ndarray, ConvGeometry, np.ndarray | None]:
    """Weight, geometry and bias of a dense conv that a chain may replace, or a DecompositionError."""
    if not isinstance(conv, nn.Conv2d):
        raise DecompositionError(f"{layer}: expected an nn.Conv2d, got {type(conv).__name__}")
    reason = unsupported_reason(conv)
    if reason is not None:
        raise DecompositionError(f"{layer}: {reason}")
    geometry = ConvGeometry.from_torch(conv.stride, conv.padding, conv.dilation)
    return as_float64(conv.weight), geometry, None if conv.bias is None else as_float64(conv.bias)


def _empty_stage_conv(shape: StageShape, geometry: ConvGeometry, bias: bool) -> nn.Conv2d:
    """An `nn.Conv2d` of one stage's shape, PyTorch-initialised (what training from scratch wants)."""
    return nn.Conv2d(shape.in_channels, shape.out_channels, shape.kernel, stride=geometry.stride,
                     padding=torch_padding(geometry), dilation=geometry.dilation, groups=shape.groups,
                     bias=bias)


def stage_conv(weight, groups: int, geometry: ConvGeometry, bias=None) -> nn.Conv2d:
    """An `nn.Conv2d` holding one stage; asymmetric padding is not expressible and is rejected."""
    out_channels, in_per_group, kh, kw = weight.shape
    shape = StageShape(out_channels, in_per_group * groups, (kh, kw), groups)
    conv = _empty_stage_conv(shape, geometry, bias is not None)
    copy_into(conv.weight, weight)
    if bias is not None:
        copy_into(conv.bias, bias)
    return conv


class LowRankConvBase:
    """Mixin of the decomposed conv layers: cost, dense equivalent, construction from a dense conv.

    A subclass sets ``method`` (a registry name), holds ``geometry`` (the dense conv's stride,
    padding, dilation) and provides ``layout`` (its chain's stage shapes), ``to_chain()`` (its
    current weights as a ConvChain), ``output_bias()`` and the classmethod
    ``from_chain(chain, geometry, bias)``. Costs come from the layout, so they are the numbers the
    rank policies and the compiler use.
    """

    method: str

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank, layer: str = "conv", **options):
        """Initialise from a trained dense conv by the method's decomposition at `rank`.

        `layer` names the conv in errors (a RankError for a rank outside the shape's range).
        `options` go to the method's `decompose` (iterations, seeds, ...). The layer lands on the
        conv's device and dtype.
        """
        weight, geometry, bias = dense_parts(conv, layer)
        chain = get_method(cls.method).decompose(weight, rank, layer=layer, **options)
        return cls.from_chain(chain, geometry, bias).to(device=conv.weight.device, dtype=conv.weight.dtype)

    def flops(self, in_hw) -> int:
        """Multiply-accumulates of the deployed chain on one image of size `in_hw` (bias adds not counted)."""
        return chain_macs(self.layout, tuple(in_hw), self.geometry)

    @property
    def num_parameters(self) -> int:
        """Trainable parameters, biases (and a BatchNorm's affine) included."""
        return sum(parameter.numel() for parameter in self.parameters())

    def dense_weight(self) -> np.ndarray:
        """The (N, C, kh, kw) weight of the dense conv this layer computes, in float64."""
        return dense_weight(self.to_chain())

    def to_dense(self) -> nn.Conv2d:
        """The dense `nn.Conv2d` computing the same function (weights composed in float64)."""
        weight, bias = self.dense_weight(), self.output_bias()
        out_channels, in_channels, kh, kw = weight.shape
        conv = nn.Conv2d(in_channels, out_channels, (kh, kw), stride=self.geometry.stride,
                         padding=torch_padding(self.geometry), dilation=self.geometry.dilation,
                         bias=bias is not None)
        like = next(self.parameters())
        conv = conv.to(device=like.device, dtype=like.dtype)
        copy_into(conv.weight, weight)
        if bias is not None:
            copy_into(conv.bias, bias)
        return conv


class ChainConv2d(LowRankConvBase, nn.Sequential):
    """The stages of a chain as consecutive convs; the dense conv's bias goes on the last stage.

    This class takes any chain. Its subclasses fix the method, name the stages (``stage_names``)
    and add a constructor from shapes and rank, so that the layer can also be trained from scratch.
    """

    method: str | None = None
    stage_names: tuple[str, ...] | None = None

    def __init__(self, chain: ConvChain, geometry: ConvGeometry = ConvGeometry(), bias=None):
        if self.method is not None and chain.method != self.method:
            raise DecompositionError(f"{type(self).__name__} needs a {self.method} chain, got a {chain.method} chain")
        self._build(chain.method, chain.rank, chain.layout, geometry, bias is not None)
        self.load_chain(chain, bias)

    def _build(self, method: str, rank: int, layout, geometry: ConvGeometry, bias: bool, between=None,
               names=None) -> None:
        """Create the stage convs; `between` (a module) goes after the first stage, `names` name all."""
        convs = [_empty_stage_conv(shape, geometry.restricted_to(shape.axes), bias and index == len(layout) - 1)
                 for index, shape in enumerate(layout)]
        modules = convs[:1] + [between] + convs[1:] if between is not None else convs
        names = names or self.stage_names
        if names is None:
            nn.Sequential.__init__(self, *modules)
        else:
            nn.Sequential.__init__(self, OrderedDict(zip(names, modules, strict=True)))
        self.method, self.rank, self.geometry = method, rank, geometry
        self.stage_axes = tuple(shape.axes for shape in layout)

    @classmethod
    def from_chain(cls, chain: ConvChain, geometry: ConvGeometry = ConvGeometry(), bias=None):
        """The layer computing `chain` under the dense conv's `geometry`, with the dense `bias`."""
        module = cls.__new__(cls)
        ChainConv2d.__init__(module, chain, geometry, bias)
        return module

    def stage_convs(self) -> list[nn.Conv2d]:
        """The chain's convs in order (modules between stages, such as a BatchNorm, left out)."""
        return [module for module in self if isinstance(module, nn.Conv2d)]

    @property
    def layout(self) -> tuple[StageShape, ...]:
        return tuple(StageShape(conv.out_channels, conv.in_channels, conv.kernel_size, conv.groups, axes)
                     for conv, axes in zip(self.stage_convs(), self.stage_axes))

    def load_chain(self, chain: ConvChain, bias=None) -> None:
        """Copy a chain's weights (and the dense bias) into this module's stages of the same shapes."""
        convs = self.stage_convs()
        if self.layout != chain.layout:
            raise DecompositionError(f"chain layout {chain.layout} does not match the module's {self.layout}")
        if (bias is None) != (convs[-1].bias is None):
            raise DecompositionError("the dense bias and the module's last stage disagree on having a bias")
        for conv, stage in zip(convs, chain.stages):
            copy_into(conv.weight, stage.weight)
        if bias is not None:
            copy_into(convs[-1].bias, bias)

    def to_chain(self) -> ConvChain:
        stages = tuple(ConvStage(as_float64(conv.weight), conv.groups, axes)
                       for conv, axes in zip(self.stage_convs(), self.stage_axes))
        return ConvChain(self.method, self.rank, stages)

    def output_bias(self) -> torch.Tensor | None:
        return self.stage_convs()[-1].bias


class _MethodConv2d(ChainConv2d):
    """A chain layer of one method, built from the dense conv's shapes and a rank."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, rank: int, stride=1, padding=0,
                 dilation=1, bias: bool = True, *, _between=None, _names=None):
        layout = self._layout((out_channels, in_channels, *_pair(kernel_size)), rank)
        chain_rank = rank if isinstance(rank, int) else max(rank)  # a chain records one rank
        self._build(self.method, chain_rank, layout, conv_geometry(stride, padding, dilation), bias, _between, _names)

    def _layout(self, weight_shape, rank) -> tuple[StageShape, ...]:
        return get_method(self.method).layout(weight_shape, rank)


class LowRankConv2d(_MethodConv2d):
    """Tai et al.'s pair: a vertical kh×1 conv to `rank` channels, then a horizontal 1×kw conv.

    `bn_between=True` puts a BatchNorm2d between the two, as Tai et al. do when training the pair
    from scratch (it keeps the product of two convs well conditioned). `to_dense()` and
    `to_chain()` then fold the BatchNorm's running statistics (inference semantics); that is exact
    only while its shift is zero or the horizontal conv does not pad, because zero padding of the
    shifted activations cannot be moved past the conv.
    """

    method = "tai"
    stage_names = ("vertical", "horizontal")
    bn_between = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size, rank: int, stride=1, padding=0,
                 dilation=1, bias: bool = True, bn_between: bool = False):
        extras = {"_between": nn.BatchNorm2d(rank), "_names": ("vertical", "bn", "horizontal")} if bn_between else {}
        super().__init__(in_channels, out_channels, kernel_size, rank, stride, padding, dilation, bias, **extras)
        self.bn_between = bn_between

    def _bn_scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.bn
        scale = (bn.weight if bn.affine else 1.0) / torch.sqrt(bn.running_var + bn.eps)
        shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
        return scale.detach().double(), shift.detach().double()

    def to_chain(self) -> ConvChain:
        """The chain of current weights; a BatchNorm's scale is folded into the vertical filters."""
        chain = super().to_chain()
        if not self.bn_between:
            return chain
        scale = self._bn_scale_shift()[0].cpu().numpy()
        vertical, horizontal = chain.stages
        folded = ConvStage(vertical.weight * scale[:, None, None, None], vertical.groups, vertical.axes)
        return ConvChain(chain.method, chain.rank, (folded, horizontal))

    def output_bias(self) -> torch.Tensor | None:
        """The dense bias; a BatchNorm's shift reaches the output through the horizontal filters."""
        bias = super().output_bias()
        if not self.bn_between:
            return bias
        shift = self._bn_scale_shift()[1]
        if not torch.any(shift):
            return bias
        if self.horizontal.padding[1] != 0:
            raise DecompositionError(
                "LowRankConv2d: the BatchNorm between V and H has a non-zero shift and H pads its input, so "
                "no single zero-padded conv computes this layer; deploy it as V, BN, H instead"
            )
        through_h = torch.einsum("nkij,k->n", self.horizontal.weight.detach().cpu().double(), shift.cpu())
        return through_h if bias is None else bias.detach().cpu().double() + through_h


class CPConv2d(_MethodConv2d):
    """CP decomposition (Astrid & Lee): 1×1 to `rank`, kh×1 and 1×kw depthwise, 1×1 to the outputs."""

    method = "cp"
    stage_names = ("channel_in", "vertical", "horizontal", "channel_out")


class Tucker2Conv2d(_MethodConv2d):
    """Tucker-2: 1×1 to the input rank, a kh×kw core between the ranks, 1×1 to the outputs.

    `rank` is an int r, meaning (min(r, N), min(r, C)) as in the decomposition, or a pair
    (r_out, r_in); ``rank`` then records max(r_out, r_in) and ``ranks`` the pair.
    """

    method = "tucker2"
    stage_names = ("channel_in", "core", "channel_out")

    def _layout(self, weight_shape, rank) -> tuple[StageShape, ...]:
        if isinstance(rank, int):
            return super()._layout(weight_shape, rank)
        return get_method(self.method).layout(weight_shape, max(rank), ranks=tuple(rank))

    @property
    def ranks(self) -> tuple[int, int]:
        """(r_out, r_in): the core's output and input channels."""
        core = self.core
        return core.out_channels, core.in_channels


class Im2colConv2d(_MethodConv2d):
    """Lowered (im2col) SVD: `rank` dense kh×kw basis filters, then a 1×1 mix to the outputs.

    It is the 2-D approximation DeepTwist trains towards, and for a 1×1 conv it is plain SVD (the
    hybrid CP-SVD scheme uses it for 1×1 convs).
    """

    method = "im2col"
    stage_names = ("basis", "mix")
