"""The PyTorch / onnxruntime low-rank reference equals the TVM build of the rewritten module: the
compiler adds no error of its own, whatever the rank costs."""

import pytest

import compiler_models
from compiler_helpers import build_and_run, relative_error
from tvm_lowrank.decompose import FixedRank, PerLayerRank
from tvm_lowrank.errors import VerificationError
from tvm_lowrank.passes import DecomposeConv2D
from tvm_lowrank.reference import lowrank_reference

X = compiler_models.example_input().numpy()


@pytest.mark.parametrize("name, kind, method, rank", [
    ("vgg", "torch", "tai", 2), ("vgg", "onnx", "cp", 3), ("resnet", "onnx", "tai", 2),
    ("lowrank", "torch", "rank1", 1), ("mobilenet", "onnx", "tucker2", 2),
])
def test_lowrank_reference_equals_the_build(name, kind, method, rank, sources, relax_modules):
    source = sources(name, kind)
    rewrite = DecomposeConv2D(method, FixedRank(rank))
    built = build_and_run(rewrite(relax_modules(name, kind)), X)
    reference = lowrank_reference(source, rewrite.records)(X)
    assert relative_error(built, reference) < 1e-4
    assert relative_error(reference, source.run(X)) > 1e-3, "the rank should cost something"


def test_layers_left_dense_are_not_looked_up(sources, relax_modules):
    rewrite = DecomposeConv2D("tai", PerLayerRank({"conv2": 4}))
    built = build_and_run(rewrite(relax_modules("resnet")), X)
    assert relative_error(built, lowrank_reference(sources("resnet"), rewrite.records)(X)) < 1e-4


@pytest.mark.parametrize("kind", ["torch", "onnx"])
def test_records_of_another_model_raise(kind, sources, relax_modules):
    """Both tiny models start with the same seed, so VGG's conv0 *is* ResNet's stem and its conv1
    has the weight of ResNet's stride-2 conv: only the geometry tells those apart."""
    rewrite = DecomposeConv2D("tai", FixedRank(2))
    rewrite(relax_modules("vgg", kind))
    with pytest.raises(VerificationError, match="conv1 .*conv2 .*conv3 ") as error:
        lowrank_reference(sources("resnet", kind), rewrite.records)
    assert "conv0 " not in str(error.value)
