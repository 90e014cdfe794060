"""Pad a conv's input where it is produced, instead of in a padding pass of its own.

A conv with padding reads a zero-bordered copy of its input. On CPUs our kernels make that copy in
a pass before the convolution: on the 28x28 Fashion-MNIST VGG it was 30% of the conv time (the
copy, its parallel region, its workspace buffer; `scripts/bench_padding.py`). When the input is
the output of another kernel anyway (a conv with its bias and ReLU, a pooling), that kernel can
write its result straight into the interior of a zero-bordered buffer, and the copy disappears.

`PadConvInputsAtProducer` rewrites `conv2d(y, padding=p)` into `conv2d(border_pad(y), padding=0)`
where y is the single-use result of a conv, add, ReLU or max pool. `border_pad` is a PrimFunc of
ours: an interior block that copies y one to one (the CPU schedule inlines it into the producer's
output writer, `schedule.cpu_conv`) and border blocks that write zeros and declare no buffer
access: they touch nothing any other block reads or writes, and so the interior block stays the
only declared writer of the output, which the schedule needs to move it next to the register
tile. `FuseBorderPadsWithProducers` marks it elementwise just before FuseOps, which fuses a conv
only with elementwise ops after it (`nn.pad`, injective, would stay a kernel of its own).

Side by side (untuned Tai, x86-avx512, 2 threads, interleaved rounds in one process): VGG-FMNIST
28x28 0.142 -> 0.129 ms, 224x224 6.4 -> 5.6 ms, ResNet-18 32x32 4-6% and 224x224 2-5% faster.
Padding columns as well as rows (a 1x3 conv's input: its producer then writes each row at a
column offset, so its vectors cannot run across row ends) measured 5% more on VGG-FMNIST 224x224,
1-2% on ResNet-18 32x32, nothing on the other two.

Left alone: a conv that reads its input with a column stride and vectorizes along output rows (its
weight is still OIHW after `ChannelsLastNarrowConvWeights`, which runs first). Its own padding
pass stores the input as column phases (`schedule.cpu_conv._split_column_phases`), so each tap
reads one contiguous vector; from a producer-written border it would gather every vector with
strided loads (a dense load and a shuffle per vector). ResNet-18 224²'s 1x7 stride-2 stem half on
a Zen 3 (AVX2), untuned: 0.52 -> 0.27 ms with its padding pass, the model 8.4 -> 7.9 ms.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx
from tvm.script import tirx as T

from ._conv_graph import CONV2D, static_shape

PADDED_PRODUCERS = ("relax.nn.relu", "relax.add", "relax.nn.conv2d", "relax.nn.max_pool2d")
ELEMWISE_PATTERN = 0  # relax OpPatternKind kElemWise
BORDER_PAD_ATTR = "tvm_lowrank.border_pad"


def border_pad(shape: tuple[int, int, int, int], padding: tuple[int, int, int, int],
               dtype: str = "float32") -> tirx.PrimFunc:
    """PrimFunc (x, y): y = x NCHW inside a zero border of `padding` (top, left, bottom, right);
    see the module doc. Extents are int64, as in the PrimFuncs legalization makes, so that FuseTIR
    can merge their buffers."""

    def i64(*values: int) -> str:
        return ", ".join(f"T.int64({v})" for v in values)

    n, c, h, w = shape
    top, left, bottom, right = padding
    width = w + left + right
    zeros = [(name, rows, columns, row0, column0) for name, rows, columns, row0, column0 in (
        ("top", top, width, 0, 0), ("bottom", bottom, width, top + h, 0),
        ("left", h, left, top, 0), ("right", h, right, top, left + w)) if rows and columns]
    blocks = "".join(f"""
    for n, c, r, x_ in T.grid({i64(n, c, rows, columns)}):
        with T.sblock("border_pad_{name}"):
            vn, vc, vr, vx = T.axis.remap("SSSS", [n, c, r, x_])
            T.reads()
            T.writes()
            y[vn, vc, vr + T.int64({row0}), vx + T.int64({column0})] = T.{dtype}(0)"""
                     for name, rows, columns, row0, column0 in zeros)
    source = f"""
@T.prim_func(private=True, s_tir=True)
def border_pad(x: T.Buffer(({i64(n, c, h, w)}), "{dtype}"), y: T.Buffer(({i64(n, c, h + top + bottom, width)}), "{dtype}")):
    T.func_attr({{"{BORDER_PAD_ATTR}": True, "tirx.noalias": True}})
    for n, c, r, x_ in T.grid({i64(n, c, h, w)}):
        with T.sblock("border_pad_interior"):
            vn, vc, vr, vx = T.axis.remap("SSSS", [n, c, r, x_])
            y[vn, vc, vr + T.int64({top}), vx + T.int64({left})] = x[vn, vc, vr, vx]{blocks}
"""
    return tvm.script.from_source(source, extra_vars={"T": T})


def _single_use_results(func: relax.Function) -> set:
    """The op calls whose result is bound to a dataflow var used once, in its own block (the
    pattern matcher hands a rewriter these calls, not their vars)."""
    calls = set()
    for block in func.body.blocks:
        if not isinstance(block, relax.DataflowBlock):
            continue
        users = relax.analysis.udchain(block)
        for binding in block.bindings:
            value = binding.value
            if (isinstance(binding.var, relax.DataflowVar) and isinstance(value, relax.Call)
                    and isinstance(value.op, tvm.ir.Op) and value.op.name in PADDED_PRODUCERS
                    and len(users.get(binding.var, [])) == 1):
                calls.add(value)
    return calls


@tvm.transform.module_pass(opt_level=0, name="PadConvInputsAtProducer")
class PadConvInputsAtProducer:
    """Give each padded NCHW conv2d whose input is a single-use result of a conv, add, ReLU or max
    pool an input padded by `border_pad` instead (see the module doc)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        builder = relax.BlockBuilder(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function) and not int((func.attrs or {}).get("Primitive", 0)):
                rewritten, rewrites = func, 0
                # a conv whose own input was just re-padded is a new call, not in the single-use
                # set of the round before: repeat until a round rewrites nothing
                while True:
                    rewritten, count = self._rewrite(rewritten, builder)
                    if not count:
                        break
                    rewrites += count
                if rewrites:
                    builder.update_func(gvar, rewritten)
        return builder.get()

    @staticmethod
    def _rewrite(func: relax.Function, builder: relax.BlockBuilder) -> tuple[relax.Function, int]:
        """(`func` with the convs it can re-pad re-padded, how many)."""
        producers = _single_use_results(func)
        data = relax.dpl.wildcard()
        rewrites = []

        def rewriter(call, matches):
            if not isinstance(call, relax.Call):
                return call
            attrs, x = call.attrs, matches[data]
            shape = static_shape(x.ty.shape) if x in producers else None
            top, left, bottom, right = (int(p) for p in attrs.padding)
            if (shape is None or len(shape) != 4 or attrs.data_layout != "NCHW"
                    or not (top or bottom or left or right) or _reads_phases(call)):
                return call
            dtype = str(x.ty.dtype)
            pad = builder.add_func(border_pad(shape, (top, left, bottom, right), dtype), "border_pad")
            padded_shape = (shape[0], shape[1], shape[2] + top + bottom, shape[3] + left + right)
            padded = relax.call_tir(pad, [x], relax.TensorType(padded_shape, dtype))
            rewrites.append(call)
            return relax.op.nn.conv2d(padded, call.args[1], strides=attrs.strides, padding=(0, 0, 0, 0),
                                      dilation=attrs.dilation, groups=attrs.groups,
                                      data_layout=attrs.data_layout, kernel_layout=attrs.kernel_layout,
                                      out_layout=attrs.out_layout, out_dtype=attrs.out_dtype or None)

        rewritten = relax.dpl.rewrite_call(relax.dpl.is_op(CONV2D)(data, relax.dpl.wildcard()), rewriter, func)
        return rewritten, len(rewrites)


def _reads_phases(conv: relax.Call) -> bool:
    """Whether `conv`'s own padding pass would store column phases for a row-vectorized read (see
    the module doc): a column stride over 1 and an OIHW weight (the schedule's row tile)."""
    return int(conv.attrs.strides[1]) > 1 and conv.attrs.kernel_layout == "OIHW"


@tvm.transform.module_pass(opt_level=0, name="FuseBorderPadsWithProducers")
class FuseBorderPadsWithProducers:
    """Mark `border_pad` PrimFuncs elementwise; run after AnnotateTIROpPattern (which takes them for
    opaque) and before FuseOps, which then fuses each into its producer's kernel. Relax fuses a
    conv only with elementwise ops after it: its epilogue, and so our pad."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        marked = {gvar: func.with_attr("op_pattern", ELEMWISE_PATTERN) for gvar, func in mod.functions_items()
                  if isinstance(func, tirx.PrimFunc) and func.attrs is not None and BORDER_PAD_ATTR in func.attrs}
        if not marked:
            return mod
        functions = dict(mod.functions_items())
        functions.update(marked)
        return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)
