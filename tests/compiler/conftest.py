"""Shared pieces of the compiler tests: loading the tiny models both ways, building and running."""

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import compiler_models
from tvm_lowrank.frontend import load_model, to_relax

TARGET = tvm.target.Target({"kind": "llvm"})
MODELS = {"vgg": compiler_models.TinyVGG, "resnet": compiler_models.TinyResNet,
          "mobilenet": compiler_models.TinyMobileNet, "lowrank": compiler_models.AlreadyLowRank}


def build_and_run(mod, x: np.ndarray) -> np.ndarray:
    """Compile with the default CPU pipeline and run once on the VM."""
    executable = tvm.compile(mod, target=TARGET, relax_pipeline=relax.get_default_pipeline(TARGET))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def relative_error(actual, expected) -> float:
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.abs(np.asarray(actual, dtype=np.float64) - expected).max() / np.abs(expected).max())


def conv_calls(mod) -> list:
    """The conv2d calls of main, in binding order."""
    return [binding.value for block in mod["main"].body.blocks for binding in block.bindings
            if isinstance(binding.value, relax.Call) and getattr(binding.value.op, "name", "") == "relax.nn.conv2d"]


def kernel_shape(call) -> tuple:
    """A conv call's weight shape as ints."""
    return tuple(int(size) for size in call.args[1].ty.shape)


def export_onnx(model, path) -> str:
    torch.onnx.export(model, (compiler_models.example_input(),), str(path), input_names=["input"], dynamo=True,
                      verbose=False)
    return str(path)


@pytest.fixture(scope="session")
def sources(tmp_path_factory):
    """load_model results by (model name, "torch" | "onnx"), loaded once per session."""
    cache = {}

    def get(name: str, kind: str = "torch"):
        if (name, kind) not in cache:
            model, example = compiler_models.make(MODELS[name]), compiler_models.example_input()
            if kind == "torch":
                cache[name, kind] = load_model(model, example)
            else:
                cache[name, kind] = load_model(export_onnx(model, tmp_path_factory.mktemp(name) / f"{name}.onnx"))
        return cache[name, kind]

    return get


@pytest.fixture(scope="session")
def relax_modules(sources):
    """to_relax results by (model name, kind), imported once per session."""
    cache = {}

    def get(name: str, kind: str = "torch"):
        if (name, kind) not in cache:
            cache[name, kind] = to_relax(sources(name, kind))
        return cache[name, kind]

    return get
