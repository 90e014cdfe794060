"""Loading models: BatchNorm folding that keeps weights bit-exact, both import paths, and the errors."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

import compiler_models
from compiler_helpers import MODELS, build_and_run, conv_calls, relative_error
from tvm_lowrank.errors import ModelLoadError, UnsupportedOpError
from tvm_lowrank.frontend import load_model, to_relax
from tvm_lowrank.passes import weight_fingerprint

X = compiler_models.example_input().numpy()


def _torch_conv_fingerprints(program) -> set:
    return {weight_fingerprint(getattr(program, node.args[1].target).numpy())
            for node in program.graph.nodes if node.op == "call_function" and "conv" in str(node.target)}


def test_torch_batchnorm_folded_in_pytorch_with_bit_exact_weights(sources, relax_modules):
    source = sources("resnet")
    model = compiler_models.make(compiler_models.TinyResNet)
    assert not any("batch_norm" in str(node.target) for node in source.program.graph.nodes)
    assert relative_error(source.run(X), model(torch.from_numpy(X)).detach().numpy()) < 1e-5
    mod = relax_modules("resnet")
    assert "batch_norm" not in mod.script()
    relax_fingerprints = {weight_fingerprint(call.args[1].value.numpy()) for call in conv_calls(mod)}
    assert relax_fingerprints == _torch_conv_fingerprints(source.program)
    assert source.kind == "torch" and source.input_name == "x" and len(source.sha256) == 64


def test_conv_bias_add_batchnorm_is_folded():
    class ConvAddBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)
            self.shift = nn.Parameter(torch.randn(1, 4, 1, 1))

        def forward(self, x):
            return self.bn(self.conv(x) + self.shift)

    model = compiler_models._randomise_batchnorms(ConvAddBN())
    source = load_model(model, X)
    assert not any("batch_norm" in str(node.target) for node in source.program.graph.nodes)
    expected = model(torch.from_numpy(X)).detach().numpy()
    assert relative_error(source.run(X), expected) < 1e-5
    assert relative_error(build_and_run(to_relax(source), X), expected) < 1e-5


@pytest.mark.parametrize("name", ["vgg", "mobilenet"])
def test_onnx_and_torch_imports_match_pytorch(name, sources, relax_modules):
    expected = compiler_models.make(MODELS[name])(torch.from_numpy(X)).detach().numpy()
    for kind in ("torch", "onnx"):
        assert relative_error(sources(name, kind).run(X), expected) < 1e-5
        assert relative_error(build_and_run(relax_modules(name, kind), X), expected) < 1e-4
    assert sources(name, "onnx").kind == "onnx"


def test_pt2_file_and_module_function_spec(tmp_path):
    model, example = compiler_models.vgg_factory()
    path = tmp_path / "vgg.pt2"
    torch.export.save(torch.export.export(model, (example,)), str(path))
    from_file = load_model(path)
    from_spec = load_model("compiler_models:vgg_factory")
    expected = model(example).detach().numpy()
    for source in (from_file, from_spec):
        assert source.example_input.shape == compiler_models.INPUT_SHAPE
        assert relative_error(source.run(example.numpy()), expected) < 1e-5
    assert from_file.origin == str(path) and from_spec.origin == "compiler_models:vgg_factory"


def _write(path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("case", ["missing onnx", "missing pt2", "corrupt onnx", "corrupt pt2", "unknown extension",
                                  "no such module", "not a model", "module without example"])
def test_bad_model_specs_raise_model_load_error(case, tmp_path):
    spec, named = {
        "missing onnx": (str(tmp_path / "absent.onnx"), "absent.onnx"),
        "missing pt2": (str(tmp_path / "absent.pt2"), "absent.pt2"),
        "corrupt onnx": (_write(tmp_path / "bad.onnx", b"\x08\x07garbage" * 10), "bad.onnx"),
        "corrupt pt2": (_write(tmp_path / "bad.pt2", b"PK\x03\x04 not a zip"), "bad.pt2"),
        "unknown extension": (_write(tmp_path / "model.txt", b"hello"), "model.txt"),
        "no such module": ("no_such_module_xyz:build", "no_such_module_xyz:build"),
        "not a model": ("compiler_models:broken_factory", "compiler_models:broken_factory"),
        "module without example": (compiler_models.TinyVGG(), "TinyVGG"),
    }[case]
    with pytest.raises(ModelLoadError, match=named.replace(".", r"\.")):
        load_model(spec)


def test_unsupported_torch_op_names_the_op():
    class Erfcx(nn.Module):
        def forward(self, x):
            return torch.special.erfcx(x)

    with pytest.raises(UnsupportedOpError, match="special_erfcx") as error:
        to_relax(load_model(Erfcx(), X))
    assert error.value.ops == ["special_erfcx.default"]


def test_unsupported_onnx_op_names_the_op(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Det", ["input"], ["output"])], "det",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3])],
    )
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    source = load_model(path)
    assert source.run(np.eye(4, dtype=np.float32)[None, None].repeat(3, axis=1)).shape == (1, 3)
    with pytest.raises(UnsupportedOpError, match="Det"):
        to_relax(source)
