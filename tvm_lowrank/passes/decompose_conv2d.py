"""`DecomposeConv2D`: replace dense k×k `relax.nn.conv2d` calls by their low-rank 1-D chains.

It runs on the imported module before legalization, so the chains are plain conv2d calls that every
later pass (fusion, MetaSchedule, any target) treats like the model's own convs. Each eligible conv
(groups 1, NCHW/OIHW, float32, constant weight, kh > 1 and kw > 1) is decomposed by the method and
rank policy through `tvm_lowrank.decompose`; everything else is kept and says why in `records`.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from ..decompose import (ConvChain, ConvGeometry, RankChoice, decompose_at, get_method, parse_rank_policy,
                         select_rank)
from ..errors import DecompositionError
from ._conv_graph import ConvSite, FoundChain, conv_sites, find_chains
from ._records import DECOMPOSED, KEPT, PRE_DECOMPOSED, LayerRecord, weight_fingerprint

DEFAULT_POLICY = "energy:0.95"


def layer_name(function: str, index: int) -> str:
    """The record/rank-file name of the `index`-th conv2d of `function` ("conv3" in main)."""
    return f"conv{index}" if function == "main" else f"{function}.conv{index}"


def why_kept(site: ConvSite) -> str | None:
    """Why this conv is not a decomposition target, or None when it is one."""
    kh, kw = site.kernel
    if site.weight is None:
        return "weight is not a constant (bind the parameters before this pass)"
    if site.dtype != "float32":
        return f"weight dtype {site.dtype} (only float32 is decomposed)"
    if not site.standard_layout:
        return "layout is not NCHW/OIHW"
    if site.groups != 1:
        in_channels = site.weight_shape[1] * site.groups
        kind = "depthwise" if site.groups == in_channels == site.weight_shape[0] else "grouped"
        return f"{kind} conv (groups={site.groups}): no dense channel coupling to factor"
    if kh == 1 and kw == 1:
        return "1×1 conv: no spatial kernel to split"
    if kh == 1 or kw == 1:
        return f"already 1-D ({kh}×{kw})"
    if site.in_hw is None or site.out_hw is None:
        return "spatial size is not static"
    return None


def chain_expr(data: relax.Expr, chain: ConvChain, geometry: ConvGeometry, out_dtype) -> relax.Expr:
    """The chain as nested conv2d calls on `data`, each stage with its share of the geometry."""
    out = data
    for stage in chain.stages:
        part = geometry.restricted_to(stage.axes)
        out = relax.op.nn.conv2d(
            out, relax.const(np.ascontiguousarray(stage.weight, dtype=np.float32)), strides=part.stride,
            padding=part.padding, dilation=part.dilation, groups=stage.groups, data_layout="NCHW",
            kernel_layout="OIHW", out_layout="NCHW", out_dtype=out_dtype,
        )
    return out


def _chain_out_hw(chain: ConvChain, geometry: ConvGeometry, in_hw) -> tuple[int, int]:
    hw = tuple(in_hw)
    for stage in chain.layout:
        hw = geometry.restricted_to(stage.axes).output_hw(hw, stage.kernel)
    return hw


def _kept(name: str, site: ConvSite, reason: str) -> LayerRecord:
    fingerprint = None if site.weight is None else weight_fingerprint(site.weight)
    return LayerRecord(name, site.weight_shape, site.geometry, site.in_hw, KEPT, reason, None, None, None,
                       site.has_bias, fingerprint, groups=site.groups)


def _pre_decomposed(name: str, found: FoundChain) -> LayerRecord:
    """A chain already in the model; its choice reports its real cost (before = after)."""
    chain, first, last = found.chain, found.sites[0], found.sites[-1]
    dense_shape = (chain.out_channels, chain.in_channels, *chain.kernel)
    macs = chain.macs(first.in_hw, found.geometry)
    choice = RankChoice(name, chain.method, dense_shape, chain.rank, chain.rank, False,
                        get_method(chain.method).max_rank(dense_shape), first.in_hw, macs, macs,
                        chain.params, chain.params)
    stages = ", ".join(f"conv{site.index}" for site in found.sites)
    return LayerRecord(name, dense_shape, found.geometry, first.in_hw, PRE_DECOMPOSED,
                       f"{chain.method} chain already in the model ({stages}), rank {chain.rank}", choice, None,
                       chain, last.has_bias, weight_fingerprint(first.weight), method=chain.method, rank=chain.rank)


@relax.transform.function_pass(opt_level=0, name="DecomposeConv2D")
class DecomposeConv2D:
    """Rewrite each eligible conv2d into the chain of `method` at the rank `policy` gives it.

    policy: a RankPolicy, or its CLI text ("16", "energy:0.95", "macs:0.25", "params:0.3");
    None means the default, energy:0.95. A PerLayerRank (rank file) names layers as `layer_name`
    does: "conv{i}", the i-th conv2d of main in graph order, whatever its fate. method_options go to
    the method's decompose (e.g. als_iters for cp). only_if_cheaper keeps a conv dense when its chain
    at the chosen rank would not need fewer MACs (the point of decomposing is speed); turn it off to
    decompose regardless (e.g. to check exactness at full rank).
    After running, `records` lists a LayerRecord per conv (per existing chain) in graph order.
    Chains already in the module are recognised and left as they are ("pre-decomposed").
    """

    def __init__(self, method: str = "tai", policy=DEFAULT_POLICY, method_options=None,
                 only_if_cheaper: bool = True):
        self.method = get_method(method).name
        self.only_if_cheaper = only_if_cheaper
        policy = DEFAULT_POLICY if policy is None else policy
        self.policy = parse_rank_policy(str(policy)) if isinstance(policy, (str, int)) else policy
        self.method_options = dict(method_options or {})
        self._records: dict[str, list[LayerRecord]] = {}
        self.data = wildcard()
        self.pattern = is_op("relax.nn.conv2d")(self.data, is_const())

    @property
    def records(self) -> list[LayerRecord]:
        """Records of the last module transformed, function by function, each in graph order."""
        return [record for records in self._records.values() for record in records]

    def _plan(self, function: str, func: relax.Function) -> tuple[list[LayerRecord], dict]:
        """Records for every conv, and the chain (by the call's handle) of each one to rewrite."""
        sites, uses = conv_sites(func)
        chains = {found.sites[0].index: found for found in find_chains(sites, uses)}
        in_chain = {site.index for found in chains.values() for site in found.sites[1:]}
        records, plan = [], {}
        for site in sites:
            name = layer_name(function, site.index)
            if site.index in chains:
                records.append(_pre_decomposed(name, chains[site.index]))
                continue
            if site.index in in_chain:
                continue
            reason = why_kept(site)
            choice = None if reason else select_rank(self.policy, self.method, site.weight, layer=name,
                                                     in_hw=site.in_hw, geometry=site.geometry)
            if choice is None:
                records.append(_kept(name, site, reason or "the rank policy leaves this layer dense"))
                continue
            if self.only_if_cheaper and choice.macs_after >= choice.macs_before:
                records.append(_kept(name, site, f"rank {choice.rank} chain needs {choice.macs_after / 1e6:.3g} "
                                                 f"MMACs, not fewer than dense {choice.macs_before / 1e6:.3g}"))
                continue
            result = decompose_at(site.weight, choice, **self.method_options)
            if _chain_out_hw(result.chain, site.geometry, site.in_hw) != tuple(site.out_hw):
                raise DecompositionError(f"{name}: the {self.method} chain would change the output size")
            records.append(LayerRecord(
                name, site.weight_shape, site.geometry, site.in_hw, DECOMPOSED, "", result.choice,
                result.relative_error, result.chain, site.has_bias, weight_fingerprint(site.weight),
                method=result.choice.method, rank=result.choice.rank))
            plan[hash(site.call)] = (site, result.chain)
        return records, plan

    def transform_function(self, func: relax.Function, mod, ctx) -> relax.Function:
        if func.attrs is not None and int(func.attrs.get("Primitive", 0)):
            return func
        function = str(func.attrs["global_symbol"]) if func.attrs and "global_symbol" in func.attrs else "main"
        records, plan = self._plan(function, func)
        self._records[function] = records
        if not plan:
            return func

        def rewriter(call, matches):
            planned = plan.get(hash(call))
            if planned is None or not planned[0].call.same_as(call):
                return call  # a kept conv, or a stage this rewrite just emitted
            site, chain = planned
            return chain_expr(matches[self.data], chain, site.geometry, call.attrs.out_dtype)

        return rewrite_call(self.pattern, rewriter, func)
