"""Helpers of the OpenCL tests: the Mali target and build -> export -> load -> run on
tvm.opencl(0)."""

import numpy as np
import torch
import tvm
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program

# Mali kernels, x86 host code: what runs here on PoCL (a board would use an aarch64 host).
MALI = {"kind": "opencl", "device": "mali", "host": {"kind": "llvm"}}


def torch_to_relax(model: torch.nn.Module, x: torch.Tensor) -> tvm.IRModule:
    return from_exported_program(torch.export.export(model, (x,)), unwrap_unit_return_tuple=True)


def export_and_load(executable: tvm.runtime.Executable, path) -> tvm.runtime.Module:
    """The library as a board gets it: exported to a .so, then loaded back."""
    executable.export_library(str(path))
    return tvm.runtime.load_module(str(path))


def run_main(module, x: np.ndarray, device: tvm.runtime.Device) -> np.ndarray:
    vm = relax.VirtualMachine(module, device)
    return vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x), device)).numpy()


def opencl_modules(module: tvm.runtime.Module) -> list:
    """The "opencl" modules in `module`'s import tree (a VM library nests them one level deeper)."""
    found = [module] if module.kind == "opencl" else []
    for imported in module.imports:
        found += opencl_modules(imported)
    return found
