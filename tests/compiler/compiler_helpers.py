"""Helpers of the compiler tests: the tiny models by name, building and running, IR inspection.

A module of its own (not conftest) so test files import it by a name no other test folder uses."""

import numpy as np
import torch
import tvm
from tvm import relax

import compiler_models

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
