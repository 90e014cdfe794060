"""Geometry of a convolution and of the 1-D chain that replaces it.

Every decomposition method returns a :class:`ConvChain`: an ordered list of convolution stages whose
composition equals (or approximates) one k×k convolution. The chain is pure data (numpy arrays and
ints) so that the PyTorch layers (`tvm_lowrank.nn`) and the Relax pass (`tvm_lowrank.passes`) build
the same thing from it without knowing which method made it.

A stage *owns* the spatial axes it convolves over ("h", "w", "hw" or none). The original conv's
stride, padding and dilation on an axis go to the one stage that owns that axis; every other stage
is stride 1, unpadded, undilated on it. Because each axis is owned by at most one stage, the chain
computes exactly the dense conv whose weight is :meth:`ConvChain.compose`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DecompositionError

AXES = ("", "h", "w", "hw")


@dataclass(frozen=True)
class ConvGeometry:
    """Stride, padding and dilation of a 2-D convolution (NCHW)."""

    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right (TVM's order)
    dilation: tuple[int, int] = (1, 1)

    @classmethod
    def from_torch(cls, stride, padding, dilation) -> "ConvGeometry":
        """From `nn.Conv2d`'s (sh, sw), (ph, pw), (dh, dw) attributes (symmetric padding)."""
        if isinstance(padding, str):
            raise DecompositionError(f"string padding {padding!r} is not supported; give explicit padding")
        ph, pw = padding
        return cls(tuple(stride), (ph, pw, ph, pw), tuple(dilation))

    def restricted_to(self, axes: str) -> "ConvGeometry":
        """The geometry a stage owning `axes` gets: this one on its axes, identity elsewhere."""
        own_h, own_w = "h" in axes, "w" in axes
        top, left, bottom, right = self.padding
        return ConvGeometry(
            stride=(self.stride[0] if own_h else 1, self.stride[1] if own_w else 1),
            padding=(top if own_h else 0, left if own_w else 0, bottom if own_h else 0, right if own_w else 0),
            dilation=(self.dilation[0] if own_h else 1, self.dilation[1] if own_w else 1),
        )

    def output_hw(self, in_hw: tuple[int, int], kernel_hw: tuple[int, int]) -> tuple[int, int]:
        """Output height and width of a conv with this geometry."""
        top, left, bottom, right = self.padding
        pads = (top + bottom, left + right)
        return tuple(
            (in_hw[a] + pads[a] - self.dilation[a] * (kernel_hw[a] - 1) - 1) // self.stride[a] + 1
            for a in range(2)
        )


@dataclass(frozen=True)
class StageShape:
    """Shape of one stage, without its weights: what cost accounting needs."""

    out_channels: int
    in_channels: int
    kernel: tuple[int, int]
    groups: int = 1
    axes: str = ""

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)

    @property
    def params(self) -> int:
        return int(np.prod(self.weight_shape))


@dataclass(frozen=True)
class ConvStage:
    """One convolution of a chain: weight (out, in/groups, kh, kw), its groups and owned axes."""

    weight: np.ndarray
    groups: int = 1
    axes: str = ""

    @property
    def shape(self) -> StageShape:
        out_channels, in_per_group, kh, kw = self.weight.shape
        return StageShape(out_channels, in_per_group * self.groups, (kh, kw), self.groups, self.axes)


def _check_layout(stages: tuple[StageShape, ...]) -> None:
    """Each spatial axis may be owned by one stage; non-owned axes must have kernel size 1."""
    if not stages:
        raise DecompositionError("a chain needs at least one stage")
    owners = {"h": 0, "w": 0}
    for index, stage in enumerate(stages):
        if stage.axes not in AXES:
            raise DecompositionError(f"stage {index}: axes must be one of {AXES}, got {stage.axes!r}")
        for axis, size in zip("hw", stage.kernel):
            if axis in stage.axes:
                owners[axis] += 1
            elif size != 1:
                raise DecompositionError(
                    f"stage {index}: kernel {stage.kernel} is not 1 on axis {axis!r}, which it does not own"
                )
        if stage.in_channels % stage.groups or stage.out_channels % stage.groups:
            raise DecompositionError(f"stage {index}: channels not divisible by groups={stage.groups}")
    for previous, stage in zip(stages, stages[1:]):
        if previous.out_channels != stage.in_channels:
            raise DecompositionError(
                f"stage channels do not chain: {previous.out_channels} out, then {stage.in_channels} in"
            )
    if any(count > 1 for count in owners.values()):
        raise DecompositionError(f"a spatial axis is owned by more than one stage: {owners}")


def chain_macs(layout: tuple[StageShape, ...], in_hw: tuple[int, int], geometry: ConvGeometry) -> int:
    """Multiply-accumulates of running the chain on one image of size `in_hw`."""
    macs, hw = 0, tuple(in_hw)
    for stage in layout:
        hw = geometry.restricted_to(stage.axes).output_hw(hw, stage.kernel)
        macs += stage.out_channels * (stage.in_channels // stage.groups) * stage.kernel[0] * stage.kernel[1] * hw[0] * hw[1]
    return int(macs)


def conv_macs(weight_shape, in_hw: tuple[int, int], geometry: ConvGeometry, groups: int = 1) -> int:
    """Multiply-accumulates of the dense conv with weight (N, C/groups, kh, kw)."""
    out_channels, in_per_group, kh, kw = weight_shape
    out_hw = geometry.output_hw(in_hw, (kh, kw))
    return int(out_channels * in_per_group * kh * kw * out_hw[0] * out_hw[1])


def _valid_grouped_conv(x: np.ndarray, weight: np.ndarray, groups: int) -> np.ndarray:
    """Cross-correlation, stride 1, no padding: x (B, C, H, W) * weight (O, C/g, kh, kw)."""
    batch, channels, height, width = x.shape
    out_channels, in_per_group, kh, kw = weight.shape
    out_h, out_w = height - kh + 1, width - kw + 1
    out_per_group = out_channels // groups
    out = np.zeros((batch, out_channels, out_h, out_w), dtype=np.result_type(x, weight))
    for g in range(groups):
        xg = x[:, g * in_per_group:(g + 1) * in_per_group]
        wg = weight[g * out_per_group:(g + 1) * out_per_group]
        for i in range(kh):
            for j in range(kw):
                out[:, g * out_per_group:(g + 1) * out_per_group] += np.einsum(
                    "bchw,oc->bohw", xg[:, :, i:i + out_h, j:j + out_w], wg[:, :, i, j]
                )
    return out


@dataclass(frozen=True)
class ConvChain:
    """A decomposed convolution: stages applied in order; bias (if any) belongs after the last."""

    method: str
    rank: int
    stages: tuple[ConvStage, ...]
    layout: tuple[StageShape, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        layout = tuple(stage.shape for stage in self.stages)
        _check_layout(layout)
        object.__setattr__(self, "layout", layout)

    @property
    def in_channels(self) -> int:
        return self.layout[0].in_channels

    @property
    def out_channels(self) -> int:
        return self.layout[-1].out_channels

    @property
    def kernel(self) -> tuple[int, int]:
        """The dense kernel size the chain spans: the owning stages' kernel sizes."""
        kh = next((s.kernel[0] for s in self.layout if "h" in s.axes), 1)
        kw = next((s.kernel[1] for s in self.layout if "w" in s.axes), 1)
        return kh, kw

    @property
    def params(self) -> int:
        return sum(stage.params for stage in self.layout)

    def macs(self, in_hw: tuple[int, int], geometry: ConvGeometry = ConvGeometry()) -> int:
        return chain_macs(self.layout, in_hw, geometry)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Run the chain on x (B, C, H, W) at stride 1 without padding (a numpy reference)."""
        for stage in self.stages:
            x = _valid_grouped_conv(x, stage.weight.astype(np.float64), stage.groups)
        return x

    def compose(self) -> np.ndarray:
        """The dense weight (N, C, kh, kw) this chain computes, found by probing it with impulses."""
        kh, kw = self.kernel
        channels = self.in_channels
        impulses = np.eye(channels * kh * kw).reshape(channels * kh * kw, channels, kh, kw)
        response = self.apply(impulses)  # (C*kh*kw, N, 1, 1)
        return response[:, :, 0, 0].T.reshape(self.out_channels, channels, kh, kw)
