"""The low-rank reference: the source program itself, with the decomposed convs swapped for chains.

It runs in the source's own framework (PyTorch, or onnxruntime for ONNX) at exactly the ranks and
weights the Relax pass used, so comparing a build with it isolates what the compiler adds: a build
that matches the dense model poorly but this reference closely lost accuracy to the rank, not to TVM.
Convs are found by the fingerprint of their weight (see `tvm_lowrank.passes.weight_fingerprint`)
and their geometry;
a decomposed record with no conv in the source is an error, never a silent skip.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

from .decompose import ConvGeometry
from .errors import VerificationError
from .frontend import TORCH_CONV_OPS, SourceModel, graph_tensor, onnx_session, run_torch_program
from .passes import DECOMPOSED, LayerRecord, weight_fingerprint


def _decomposed_by_key(records: list[LayerRecord]) -> dict[tuple, LayerRecord]:
    """Decomposed records by (weight fingerprint, geometry): a conv is found by both, so a weight
    reused with another stride is not swapped for a chain made for a different conv."""
    wanted: dict[tuple, LayerRecord] = {}
    for record in records:
        if record.action != DECOMPOSED:
            continue
        other = wanted.setdefault((record.weight_fingerprint, record.geometry), record)
        if (other.chain.method, other.chain.rank) != (record.chain.method, record.chain.rank):
            raise VerificationError(f"{other.name} and {record.name} are the same conv but were decomposed "
                                    "differently; the reference cannot tell them apart")
    return wanted


def _check_all_found(wanted: dict[tuple, LayerRecord], found: set[tuple], origin: str) -> None:
    missing = [f"{record.name} ({key[0]})" for key, record in wanted.items() if key not in found]
    if missing:
        raise VerificationError(f"{origin}: no conv with the weight of decomposed layer(s) {', '.join(missing)}; "
                                "the records do not belong to this model")


def _pair(values) -> tuple[int, int]:
    values = [int(v) for v in values]
    return (values[0], values[0]) if len(values) == 1 else tuple(values)


def _torch_geometry(node) -> ConvGeometry:
    """Stride, padding, dilation of an aten conv2d/convolution node (both put them at args[3:6])."""
    stride, padding, dilation = (list(node.args[3:6]) + [None] * 3)[:3]
    ph, pw = _pair(padding or [0])
    return ConvGeometry(_pair(stride or [1]), (ph, pw, ph, pw), _pair(dilation or [1]))


def _onnx_geometry(node) -> ConvGeometry | None:
    """A Conv node's geometry, or None when auto_pad leaves the padding to the input size."""
    from onnx import helper

    attrs = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    return ConvGeometry(tuple(attrs.get("strides", (1, 1))), tuple(attrs.get("pads", (0, 0, 0, 0))),
                        tuple(attrs.get("dilations", (1, 1))))


def _find(wanted: dict[tuple, LayerRecord], fingerprint: str, geometry: ConvGeometry | None):
    """The key of the record for this conv; geometry None matches any record of the fingerprint."""
    if geometry is not None:
        return (fingerprint, geometry) if (fingerprint, geometry) in wanted else None
    return next((key for key in wanted if key[0] == fingerprint), None)


def _torch_lowrank(source: SourceModel, wanted: dict[tuple, LayerRecord]):
    """A copy of the folded GraphModule with each matched conv replaced by a ChainConv2d."""
    from .nn import ChainConv2d

    program = copy.deepcopy(source.program)
    graph, found = program.graph, set()
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in TORCH_CONV_OPS:
            continue
        weight = graph_tensor(program, node.args[1])
        key = None if weight is None else _find(wanted, weight_fingerprint(weight.detach().cpu().numpy()),
                                                 _torch_geometry(node))
        if key is None:
            continue
        record = wanted[key]
        bias = graph_tensor(program, node.args[2]) if len(node.args) > 2 else None
        name = f"lowrank_{record.name}_{node.name}".replace(".", "_")
        program.add_submodule(name, ChainConv2d(record.chain, record.geometry, bias))
        with graph.inserting_before(node):
            chain_node = graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(chain_node)
        graph.erase_node(node)
        found.add(key)
    _check_all_found(wanted, found, source.origin)
    graph.eliminate_dead_code()
    program.recompile()
    return program


def _onnx_chain_nodes(node, record: LayerRecord, initializers: list):
    """The Conv nodes of one chain, reading the dense Conv's input and writing its output."""
    from onnx import helper, numpy_helper

    stages, nodes = record.chain.stages, []
    value = node.input[0]
    prefix = f"{node.name or node.output[0]}_lowrank"
    for index, stage in enumerate(stages):
        part = record.geometry.restricted_to(stage.axes)
        weight_name = f"{prefix}_w{index}"
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(stage.weight, dtype=np.float32), weight_name))
        last = index == len(stages) - 1
        inputs = [value, weight_name] + ([node.input[2]] if last and len(node.input) > 2 and node.input[2] else [])
        value = node.output[0] if last else f"{prefix}_y{index}"
        nodes.append(helper.make_node(
            "Conv", inputs, [value], name=f"{prefix}_{index}", kernel_shape=list(stage.weight.shape[2:]),
            strides=list(part.stride), pads=list(part.padding), dilations=list(part.dilation), group=stage.groups,
        ))  # ONNX pads are [top, left, bottom, right], the order ConvGeometry keeps
    return nodes


def _onnx_lowrank(source: SourceModel, wanted: dict[tuple, LayerRecord]):
    """A copy of the ONNX model with each matched Conv replaced by its chain of Conv nodes."""
    from onnx import numpy_helper

    model = copy.deepcopy(source.onnx_model)
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    nodes, initializers, found = [], [], set()
    for node in graph.node:
        key = None
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights:
            key = _find(wanted, weight_fingerprint(numpy_helper.to_array(weights[node.input[1]])),
                        _onnx_geometry(node))
        if key is not None:
            nodes.extend(_onnx_chain_nodes(node, wanted[key], initializers))
            found.add(key)
        else:
            nodes.append(node)
    _check_all_found(wanted, found, source.origin)
    used = {name for node in nodes for name in node.input} | {value.name for value in graph.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]  # drop the replaced dense weights
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(kept + initializers)
    return model


def lowrank_reference(source: SourceModel, records: list[LayerRecord]) -> Callable[[np.ndarray], np.ndarray]:
    """A function running `source` with every "decomposed" record's conv replaced by its chain."""
    wanted = _decomposed_by_key(records)
    if source.kind == "torch":
        program = _torch_lowrank(source, wanted)
        return lambda x: run_torch_program(program, x)
    session = onnx_session(_onnx_lowrank(source, wanted))
    return lambda x: session.run(None, {source.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def lowrank_program(source: SourceModel, records: list[LayerRecord]):
    """The low-rank program itself, for running it elsewhere (benchmarks): the PyTorch GraphModule
    for torch sources, the ONNX ModelProto for ONNX ones."""
    wanted = _decomposed_by_key(records)
    return _torch_lowrank(source, wanted) if source.kind == "torch" else _onnx_lowrank(source, wanted)
