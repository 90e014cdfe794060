"""Load a model (PyTorch or ONNX) into one form the compiler and its references share.

`load_model` gives a :class:`SourceModel`: the program as its framework runs it (the reference the
build is verified against) plus what the Relax import needs. For PyTorch sources BatchNorm is folded
into the preceding conv *in PyTorch*, before the Relax import, so that every Relax conv weight is
bit for bit a tensor of the PyTorch program: the compiler's records name chains by a fingerprint of
those bytes, and the low-rank reference (`tvm_lowrank.reference`) finds its convs by it.
"""

from __future__ import annotations

import hashlib
import importlib
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ModelLoadError, UnsupportedOpError

EXAMPLE_SEED = 0  # example inputs made up for ONNX files are reproducible


@dataclass
class SourceModel:
    """A loaded model: its reference runner and what `to_relax` imports.

    kind: "torch" or "onnx". origin: the file path, "module:function", or the module's class name.
    sha256: of the file, or of the state dict for in-memory modules. program: the eval-mode,
    BatchNorm-folded `torch.fx.GraphModule` (torch). exported: that program re-exported
    (`torch.export.ExportedProgram`, what the Relax frontend reads). onnx_model: the `ModelProto`.
    """

    kind: str
    origin: str
    sha256: str
    example_input: np.ndarray
    input_name: str
    program: Any = None
    exported: Any = None
    onnx_model: Any = None
    _session: Any = field(default=None, repr=False, compare=False)

    def run(self, x: np.ndarray) -> np.ndarray:
        """The framework's own output for `x` (PyTorch or onnxruntime): the reference of a build."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.kind == "torch":
            return run_torch_program(self.program, x)
        if self._session is None:
            self._session = onnx_session(self.onnx_model)
        return self._session.run(None, {self.input_name: x})[0]


def run_torch_program(program, x: np.ndarray) -> np.ndarray:
    """Run a single-input, single-output torch program on a numpy array."""
    with torch.no_grad():
        out = program(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    if isinstance(out, (tuple, list)):
        if len(out) != 1:
            raise ModelLoadError(f"the model returns {len(out)} outputs; only single-output models are supported")
        out = out[0]
    return out.detach().cpu().numpy()


def onnx_session(model):
    """An onnxruntime CPU session for an in-memory ModelProto."""
    import onnxruntime

    return onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state_sha256(state: dict) -> str:
    """A content hash of named tensors: names, dtypes, shapes and bytes, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _as_array(example) -> np.ndarray | None:
    if example is None:
        return None
    if hasattr(example, "detach"):
        example = example.detach().cpu().numpy()
    array = np.ascontiguousarray(example, dtype=np.float32)
    if array.ndim != 4:
        raise ModelLoadError(f"the example input must be NCHW (4-D), got shape {array.shape}")
    return array


def load_model(spec, example_input=None) -> SourceModel:
    """Load `spec`: an `.onnx` or `.pt2` path, a "module:function" string, or an `nn.Module`.

    "module:function" names a function returning `(nn.Module, example_input)`. An `nn.Module` needs
    `example_input`; an `.onnx` file without one gets a seeded random input of its static shape.
    A given `example_input` always overrides the one the source carries. Modules are switched to
    eval mode before export (BatchNorm folding needs their running statistics).
    """
    example = _as_array(example_input)
    if isinstance(spec, torch.nn.Module):
        if example is None:
            raise ModelLoadError(f"{type(spec).__name__}: an nn.Module needs an example_input")
        return _from_module(spec, example, type(spec).__name__)
    if isinstance(spec, torch.export.ExportedProgram):
        example = example if example is not None else _exported_example(spec, "ExportedProgram")
        return _from_exported(spec, example, "ExportedProgram", _state_sha256(spec.state_dict))
    if not isinstance(spec, (str, Path)):
        raise ModelLoadError(f"cannot load a model from a {type(spec).__name__}")
    text = str(spec)
    path = Path(text)
    if path.suffix.lower() == ".onnx":
        return _from_onnx_file(path, example)
    if path.suffix.lower() == ".pt2":
        return _from_pt2_file(path, example)
    if ":" in text and not path.exists():
        return _from_factory(text, example)
    if not path.exists():
        raise ModelLoadError(f"{text}: no such file (expected .onnx, .pt2, or module:function)")
    raise ModelLoadError(f"{text}: unknown model file type {path.suffix!r}; expected .onnx or .pt2")


def _from_factory(spec: str, example) -> SourceModel:
    module_name, _, function_name = spec.partition(":")
    try:
        module, factory_example = getattr(importlib.import_module(module_name), function_name)()
    except Exception as error:  # any failure here is the user's spec being wrong
        raise ModelLoadError(f"{spec}: cannot get (nn.Module, example_input) from it: {error}") from error
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"{spec}: returned a {type(module).__name__}, not an nn.Module")
    return _from_module(module, example if example is not None else _as_array(factory_example), spec)


def _from_module(module, example: np.ndarray, origin: str) -> SourceModel:
    module = module.eval()
    try:
        exported = torch.export.export(module, (torch.from_numpy(example),))
    except Exception as error:
        raise ModelLoadError(f"{origin}: torch.export failed: {error}") from error
    return _from_exported(exported, example, origin, _state_sha256(module.state_dict()))


def _from_pt2_file(path: Path, example) -> SourceModel:
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        exported = torch.export.load(str(path))
    except Exception as error:
        raise ModelLoadError(f"{path}: not a readable torch.export (.pt2) file: {error}") from error
    example = example if example is not None else _exported_example(exported, str(path))
    return _from_exported(exported, example, str(path), _file_sha256(path))


def _exported_example(exported, origin: str) -> np.ndarray:
    inputs = getattr(exported, "example_inputs", None)
    if not inputs or len(inputs[0]) != 1:
        raise ModelLoadError(f"{origin}: carries no single example input; pass example_input")
    return _as_array(inputs[0][0])


def _from_exported(exported, example: np.ndarray, origin: str, sha256: str) -> SourceModel:
    """Fold BatchNorm in the exported graph, then export the folded program again for Relax."""
    user_inputs = exported.graph_signature.user_inputs
    if len(user_inputs) != 1:
        raise ModelLoadError(f"{origin}: the model takes {len(user_inputs)} inputs; only one is supported")
    program = exported.module()
    fold_batchnorm(program)
    try:
        refolded = torch.export.export(program, (torch.from_numpy(example),))
    except Exception as error:
        raise ModelLoadError(f"{origin}: re-export after BatchNorm folding failed: {error}") from error
    return SourceModel("torch", origin, sha256, example, str(user_inputs[0]), program=program,
                       exported=refolded)


def _from_onnx_file(path: Path, example) -> SourceModel:
    import onnx

    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as error:
        raise ModelLoadError(f"{path}: not a valid ONNX model: {error}") from error
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ModelLoadError(f"{path}: {len(inputs)} inputs and {len(model.graph.output)} outputs; "
                             "only single-input, single-output models are supported")
    if example is None:
        dims = [dim.dim_value if dim.HasField("dim_value") else None
                for dim in inputs[0].type.tensor_type.shape.dim]
        if None in dims or len(dims) != 4:
            raise ModelLoadError(f"{path}: input {inputs[0].name!r} has no static NCHW shape; pass example_input")
        example = np.random.default_rng(EXAMPLE_SEED).standard_normal(dims).astype(np.float32)
    return SourceModel("onnx", str(path), _file_sha256(path), example, inputs[0].name, onnx_model=model)


# ---------------------------------------------------------------------------------------------
# BatchNorm folding on the exported aten graph

# The aten convs of exported programs (before and after decomposition); both take the bias as args[2].
TORCH_CONV_OPS = (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)


def _inference_batch_norm(node):
    """(input, weight, bias, mean, var, eps, output nodes to replace) of an inference BN, or None."""
    if node.op != "call_function":
        return None
    if node.target == torch.ops.aten.batch_norm.default and not node.args[5]:
        x, weight, bias, mean, var = node.args[:5]
        return x, weight, bias, mean, var, node.args[7], [node]
    if node.target == torch.ops.aten._native_batch_norm_legit_no_training.default:
        x, weight, bias, mean, var = node.args[:5]
        outputs = list(node.users)
        if not all(user.target is operator.getitem and user.args[1] == 0 for user in outputs):
            return None  # the saved statistics are used: not a plain inference BN
        return x, weight, bias, mean, var, node.args[6], outputs
    return None


def graph_tensor(module, node):
    """The tensor a get_attr node reads, or None (a computed value)."""
    if node is None or getattr(node, "op", None) != "get_attr":
        return None
    value = module
    for part in node.target.split("."):
        value = getattr(value, part)
    return value


def _fold_bias_add(module, add):
    """(conv node, extra per-channel bias) when `add` is conv + constant bias, else None."""
    if add.op != "call_function" or add.target != torch.ops.aten.add.Tensor or len(add.args) != 2 or add.kwargs:
        return None
    for conv, other in (add.args, add.args[::-1]):
        tensor = graph_tensor(module, other) if hasattr(other, "op") else None
        if getattr(conv, "target", None) in TORCH_CONV_OPS and len(conv.users) == 1 and tensor is not None:
            channels = graph_tensor(module, conv.args[1]).shape[0]
            if tuple(tensor.shape) in ((channels,), (channels, 1, 1), (1, channels, 1, 1)):
                return conv, tensor.reshape(-1)
    return None


def _folded_parameters(module, source, gamma, beta, mean, var, eps):
    """(conv node, folded weight, folded bias) for a BN reading `source`, or None if it cannot fold."""
    conv, extra_bias = source, None
    if getattr(source, "target", None) not in TORCH_CONV_OPS:
        found = _fold_bias_add(module, source) if hasattr(source, "op") else None
        if found is None:
            return None
        conv, extra_bias = found
    if len(source.users) != 1 or len(conv.users) != 1:
        return None
    weight = graph_tensor(module, conv.args[1])
    bias_node = conv.args[2] if len(conv.args) > 2 else None
    mean, var = graph_tensor(module, mean), graph_tensor(module, var)
    if weight is None or mean is None or var is None or (bias_node is not None and graph_tensor(module, bias_node) is None):
        return None
    channels = weight.shape[0]
    with torch.no_grad():
        gamma = graph_tensor(module, gamma) if gamma is not None else torch.ones(channels)
        beta = graph_tensor(module, beta) if beta is not None else torch.zeros(channels)
        scale = gamma / torch.sqrt(var + eps)
        bias = graph_tensor(module, bias_node) if bias_node is not None else torch.zeros(channels)
        if extra_bias is not None:
            bias = bias + extra_bias
        return conv, weight * scale.reshape(-1, 1, 1, 1), (bias - mean) * scale + beta


def fold_batchnorm(module) -> int:
    """Fold inference BatchNorms into the conv before them, in place; return how many were folded.

    A BN is folded when its input is a conv with constant weight (and bias) and no other user, or
    such a conv followed by a constant bias add. The folded weight and bias become new buffers of
    the module, so other users of the original tensors are unaffected.
    """
    graph, folded = module.graph, 0
    for node in list(graph.nodes):
        batch_norm = _inference_batch_norm(node)
        parts = batch_norm and _folded_parameters(module, *batch_norm[:6])
        if not parts:
            continue
        conv, weight, bias = parts
        nodes = []
        for kind, tensor in (("weight", weight), ("bias", bias)):
            name = f"_bn_folded_{folded}_{kind}"
            module.register_buffer(name, tensor.detach().contiguous().clone())
            with graph.inserting_before(conv):
                nodes.append(graph.get_attr(name))
        conv.args = (conv.args[0], *nodes, *conv.args[3:])
        for output in batch_norm[6]:
            output.replace_all_uses_with(conv)
            graph.erase_node(output)
        folded += 1
    if folded:
        graph.eliminate_dead_code()
        graph.lint()
        module.recompile()
    return folded


# ---------------------------------------------------------------------------------------------
# Relax import

_TORCH_UNSUPPORTED = re.compile(r"Unsupported function types \[(.*?)\]")
_ONNX_UNSUPPORTED = re.compile(r"not supported for frontend ONNX: (.*)|Operator (\S+) not implemented")


def _unsupported_ops(error: Exception) -> list[str] | None:
    """The op names in a Relax frontend's "cannot convert" error, or None if it is another error."""
    text = str(error)
    match = _TORCH_UNSUPPORTED.search(text)
    if match:
        return [name.strip().strip("'\"") for name in match.group(1).split(",") if name.strip()]
    match = _ONNX_UNSUPPORTED.search(text)
    if match:
        names = match.group(1) or match.group(2)
        return [name.strip().rstrip(".") for name in names.splitlines()[0].split(",") if name.strip()]
    return None


def to_relax(source: SourceModel):
    """The model as a Relax IRModule: weights bound as constants, BatchNorm folded, one tensor out."""
    from tvm import relax

    try:
        if source.kind == "torch":
            from tvm.relax.frontend.torch import from_exported_program

            mod = from_exported_program(source.exported, unwrap_unit_return_tuple=True)
        else:
            from tvm.relax.frontend.onnx import from_onnx

            mod = from_onnx(source.onnx_model, shape_dict={source.input_name: list(source.example_input.shape)})
    except Exception as error:
        ops = _unsupported_ops(error)
        if ops is None:
            raise ModelLoadError(f"{source.origin}: the Relax {source.kind} frontend failed: {error}") from error
        unsupported = UnsupportedOpError(
            f"{source.origin}: the Relax {source.kind} frontend cannot import op(s) {', '.join(ops)}")
        unsupported.ops = ops
        raise unsupported from error
    # The TVM fold catches BatchNorms the PyTorch fold left (e.g. after a shared conv); FoldConstant
    # then turns the folded weights, and reshaped biases, into the constants the rewrite pass needs.
    mod = relax.transform.FoldBatchnormToConv2D()(mod)
    mod = relax.transform.FoldConstant()(mod)
    output = mod["main"].ret_ty
    if not isinstance(output, relax.TensorType):
        raise ModelLoadError(f"{source.origin}: the model must return a single tensor, got {output}")
    return mod
