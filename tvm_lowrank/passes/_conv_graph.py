"""The convs of a Relax function as data: geometry, weight, bias, and the chains already there.

The rewrite pass decides per conv, but some decisions need the neighbours: a bias add after a conv,
and chains that an exported low-rank model already contains (a Tai pair, a CP chain). Those must be
recognised as a unit, or their 1-D stages would be reported as unrelated kept convs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from ..decompose import ConvChain, ConvGeometry, ConvStage, get_method, list_methods
from ..errors import LowRankError

CONV2D, ADD = "relax.nn.conv2d", "relax.add"


@dataclass(frozen=True)
class ConvSite:
    """One `relax.nn.conv2d` binding. weight is None when it is not a constant."""

    index: int
    var: relax.Var
    call: relax.Call
    weight: np.ndarray | None
    weight_shape: tuple[int, int, int, int]
    geometry: ConvGeometry
    groups: int
    in_hw: tuple[int, int] | None
    out_hw: tuple[int, int] | None
    dtype: str
    standard_layout: bool  # NCHW data and output, OIHW kernel
    has_bias: bool

    @property
    def kernel(self) -> tuple[int, int]:
        return self.weight_shape[2], self.weight_shape[3]


@dataclass(frozen=True)
class FoundChain:
    """Consecutive convs that together compute one decomposed kh×kw conv of a known method."""

    sites: tuple[ConvSite, ...]
    chain: ConvChain
    geometry: ConvGeometry


def static_shape(shape) -> tuple[int, ...] | None:
    try:
        return tuple(int(size) for size in shape)
    except (TypeError, ValueError):
        return None


def _is_call(expr, op_name: str) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == op_name


class _Uses:
    """Who reads each variable: the bindings using it, and whether the function returns it."""

    def __init__(self, func: relax.Function):
        self.bindings = [binding for block in func.body.blocks for binding in block.bindings
                         if isinstance(binding, relax.VarBinding)]
        self.readers: dict = {}
        for binding in self.bindings:
            for var in relax.analysis.free_vars(binding.value):
                self.readers.setdefault(var, []).append(binding)
        self.returned = set(relax.analysis.free_vars(func.body.body))

    def only_reader(self, var) -> relax.VarBinding | None:
        readers = self.readers.get(var, [])
        return readers[0] if len(readers) == 1 and var not in self.returned else None


def _bias_add(uses: _Uses, var, channels: int) -> relax.VarBinding | None:
    """The binding adding a constant per-channel bias to `var`, when that is its only reader."""
    reader = uses.only_reader(var)
    if reader is None or not _is_call(reader.value, ADD):
        return None
    left, right = reader.value.args
    bias = right if left.same_as(var) else left
    if isinstance(bias, tvm.ir.Constant) and int(np.prod(bias.value.shape)) == channels:
        return reader
    return None


def conv_sites(func: relax.Function) -> tuple[list[ConvSite], _Uses]:
    """Every conv2d binding of `func` in graph order, and the use map they were read with."""
    uses = _Uses(func)
    sites = []
    for binding in uses.bindings:
        call = binding.value
        if not _is_call(call, CONV2D):
            continue
        data, weight_expr = call.args
        attrs = call.attrs
        weight = weight_expr.value.numpy() if isinstance(weight_expr, tvm.ir.Constant) else None
        weight_shape = static_shape(weight_expr.ty.shape)
        in_shape, out_shape = static_shape(data.ty.shape), static_shape(binding.var.ty.shape)
        sites.append(ConvSite(
            index=len(sites), var=binding.var, call=call, weight=weight, weight_shape=weight_shape,
            geometry=ConvGeometry(tuple(int(v) for v in attrs.strides), tuple(int(v) for v in attrs.padding),
                                  tuple(int(v) for v in attrs.dilation)),
            groups=int(attrs.groups), in_hw=in_shape[2:] if in_shape else None,
            out_hw=out_shape[2:] if out_shape else None, dtype=str(weight_expr.ty.dtype),
            standard_layout=(attrs.data_layout, attrs.kernel_layout, attrs.out_layout) == ("NCHW", "OIHW", "NCHW"),
            has_bias=weight_shape is not None and _bias_add(uses, binding.var, weight_shape[0]) is not None,
        ))
    return sites, uses


def _owned_axes(kernel: tuple[int, int]) -> str:
    return ("h" if kernel[0] > 1 else "") + ("w" if kernel[1] > 1 else "")


def _linkable(site: ConvSite) -> bool:
    """Could be a stage of an existing chain: a constant float32 1×1 or 1-D conv."""
    return (site.weight is not None and site.standard_layout and site.dtype == "float32"
            and min(site.kernel) == 1)


def _next_site(site: ConvSite, uses: _Uses, by_var: dict) -> ConvSite | None:
    """The conv reading this one's output as its only reader (past an optional bias add)."""
    var = site.var
    bias = _bias_add(uses, var, site.weight_shape[0])
    if bias is not None:
        var = bias.var
    reader = uses.only_reader(var)
    if reader is None or not _is_call(reader.value, CONV2D) or not reader.value.args[0].same_as(var):
        return None
    return by_var.get(reader.var)


def _merged_geometry(stages: tuple[ConvStage, ...], sites) -> ConvGeometry:
    """The dense conv's geometry: each axis's stride, padding and dilation from the stage owning it."""
    owner = {axis: next((s.geometry for stage, s in zip(stages, sites) if axis in stage.axes), ConvGeometry())
             for axis in "hw"}
    h, w = owner["h"], owner["w"]
    return ConvGeometry((h.stride[0], w.stride[1]), (h.padding[0], w.padding[1], h.padding[2], w.padding[3]),
                        (h.dilation[0], w.dilation[1]))


def _recognise(sites: tuple[ConvSite, ...]) -> FoundChain | None:
    """A FoundChain if these convs form a registered method's chain for some rank, else None."""
    stages = tuple(ConvStage(site.weight, site.groups, _owned_axes(site.kernel)) for site in sites)
    try:
        probe = ConvChain("unknown", 0, stages)
    except LowRankError:
        return None
    kh, kw = probe.kernel
    geometry = _merged_geometry(stages, sites)
    if kh == 1 or kw == 1 or any(site.geometry != geometry.restricted_to(stage.axes)
                                 for site, stage in zip(sites, stages)):
        return None
    dense_shape = (probe.out_channels, probe.in_channels, kh, kw)
    inner = {shape.out_channels for shape in probe.layout[:-1]}
    ranks = sorted(inner | {width // dense_shape[0] for width in inner if width % dense_shape[0] == 0})
    for name in list_methods():
        method = get_method(name)
        for rank in ranks:
            try:
                matches = tuple(method.layout(dense_shape, rank)) == probe.layout
            except (LowRankError, ValueError, TypeError):
                matches = False
            if matches:
                return FoundChain(sites, ConvChain(name, rank, stages), geometry)
    return None


def find_chains(sites: list[ConvSite], uses: _Uses) -> list[FoundChain]:
    """Existing chains: runs of linked 1×1/1-D convs, longest recognisable window first."""
    by_var = {site.var: site for site in sites}
    successor = {}
    for site in sites:
        following = _next_site(site, uses, by_var) if _linkable(site) else None
        if following is not None and _linkable(following):
            successor[site.index] = following.index
    found, has_predecessor = [], set(successor.values())
    for site in sites:
        if site.index in has_predecessor or site.index not in successor:
            continue
        path = [site.index]
        while path[-1] in successor:
            path.append(successor[path[-1]])
        start = 0
        while start < len(path) - 1:
            for end in range(len(path), start + 1, -1):
                chain = _recognise(tuple(sites[i] for i in path[start:end]))
                if chain is not None:
                    found.append(chain)
                    start = end
                    break
            else:
                start += 1
    return found


def rewrite_nchw_convs(func: relax.Function, rewrite) -> relax.Function:
    """`func` with each NCHW/OIHW conv2d of a constant weight replaced by `rewrite(call, data, weight)`
    (weight as numpy; return `call` to keep it). Primitive functions are left alone."""
    if func.attrs is not None and int(func.attrs.get("Primitive", 0)):
        return func
    data, weight = wildcard(), is_const()

    def rewriter(call, matches):
        if not isinstance(call, relax.Call):  # a variable re-bound to a conv's result (`out = lv`)
            return call
        attrs = call.attrs
        if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" or attrs.out_layout != "NCHW":
            return call
        return rewrite(call, matches[data], matches[weight].value.numpy())

    return rewrite_call(is_op(CONV2D)(data, weight), rewriter, func)
