"""The benchmark grid: one cell per (model, method, rank policy, target), and what a model spec means.

`--models` takes what `compile` takes (an ONNX file, a `.pt2`, `module:function`) and, in addition,
the names of the bundled models; a bundled model also knows its test set, so its cells report
accuracy on real data. The dense method has no rank, so it gets one cell per (model, target)
however many rank policies are asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

DENSE = "dense"  # the same name as tvm_lowrank.api.DENSE (not imported: the grid needs no TVM)
NO_RANK = "-"
FASHION_MNIST = "fashion-mnist"


@dataclass(frozen=True)
class Cell:
    """One benchmark measurement: `model` is the spec as the user gave it."""

    model: str
    method: str
    rank: str
    target: str

    @property
    def label(self) -> str:
        return f"{self.model} {self.method} {self.rank} {self.target}"


def expand_grid(models, methods, ranks, targets) -> list[Cell]:
    """Every cell, targets outermost (a board is connected to once per run of its cells)."""
    cells = []
    for target in targets:
        for model in models:
            for method in methods:
                for rank in ([NO_RANK] if method == DENSE else ranks):
                    cells.append(Cell(model, method, rank, target))
    return list(dict.fromkeys(cells))  # a method or rank named twice is measured once


def split_list(text: str) -> list[str]:
    """"a,b, c" -> ["a", "b", "c"] (the CLI's comma-separated options)."""
    return [item.strip() for item in str(text).split(",") if item.strip()]


@dataclass(frozen=True)
class ModelSpec:
    """How to load a `--models` entry: `compile_spec` is what compile_model gets (a path or
    "module:function", or None for a bundled name, loaded from the registry), `dataset` the test
    set its accuracy is measured on (None: none known)."""

    spec: str
    bundled: str | None
    dataset: str | None

    def load(self):
        """(model for compile_model, example input or None)."""
        if self.bundled is None:
            return self.spec, None
        import torch

        from ..models import create_model, model_example, model_input_shape
        from ..models._registry import has_weights

        if has_weights(self.bundled):
            return model_example(self.bundled)
        # an architecture for speed only (e.g. resnet18): seeded weights and input
        torch.manual_seed(0)
        return create_model(self.bundled, pretrained=False), torch.randn(model_input_shape(self.bundled))


def resolve_model(spec: str, dataset: str = "auto") -> ModelSpec:
    """A bundled model name, or any MODEL form of `compile`. `dataset`: "auto" (Fashion-MNIST for
    the bundled Fashion-MNIST models, none for others), "fashion-mnist", or "none"."""
    from ..models import list_models, model_input_shape

    bundled = spec if spec in list_models() else None
    if dataset == "auto":
        from ..models._registry import has_weights

        fmnist = bundled is not None and "fmnist" in bundled and has_weights(bundled)
        dataset = FASHION_MNIST if fmnist and model_input_shape(bundled) == (1, 1, 28, 28) else None
    elif dataset == "none":
        dataset = None
    elif dataset != FASHION_MNIST:
        raise ValueError(f"unknown dataset {dataset!r}; known: auto, {FASHION_MNIST}, none")
    return ModelSpec(spec, bundled, dataset)


