"""Session fixtures of the compiler tests: each tiny model loaded and imported once."""

import pytest

import compiler_models
from compiler_helpers import MODELS, export_onnx
from tvm_lowrank.frontend import load_model, to_relax


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
