"""Bundled Fashion-MNIST models by name (``create_model("vgg-fmnist")``) with trained weights."""

from __future__ import annotations

import torch
from torch import nn

from . import _fmnist, _imagenet  # noqa: F401  (register the models)
from ._registry import (CHECKPOINT_DIR, checkpoint_path, create_model, has_weights, list_models,
                        model_input_shape, register_model)
from .training import evaluate_accuracy, predict, train_classifier


def model_example(name: str, pretrained: bool = True) -> tuple[nn.Module, torch.Tensor]:
    """A bundled model and a real Fashion-MNIST test image (the split's first) as its input.

    A real image, not noise, makes top-1 agreement between PyTorch and a build meaningful.
    """
    from ..data import load_fashion_mnist

    images, _ = load_fashion_mnist("test", limit=1)
    if tuple(images.shape) != model_input_shape(name):
        raise ValueError(f"model {name!r} takes {model_input_shape(name)}, not Fashion-MNIST images")
    return create_model(name, pretrained=pretrained), torch.from_numpy(images)


# `module:function` entries for the CLI (e.g. ``tvm_lowrank.models:vgg_fmnist_example``).
def vgg_fmnist_example() -> tuple[nn.Module, torch.Tensor]:
    return model_example("vgg-fmnist")


def resnet_fmnist_example() -> tuple[nn.Module, torch.Tensor]:
    return model_example("resnet-fmnist")


def mobilenet_fmnist_example() -> tuple[nn.Module, torch.Tensor]:
    return model_example("mobilenet-fmnist")


def vgg_fmnist_deeptwist_example() -> tuple[nn.Module, torch.Tensor]:
    return model_example("vgg-fmnist-deeptwist")


__all__ = ["CHECKPOINT_DIR", "checkpoint_path", "create_model", "evaluate_accuracy", "has_weights", "list_models",
           "mobilenet_fmnist_example", "model_example", "model_input_shape", "predict",
           "register_model", "resnet_fmnist_example", "train_classifier", "vgg_fmnist_deeptwist_example",
           "vgg_fmnist_example"]
