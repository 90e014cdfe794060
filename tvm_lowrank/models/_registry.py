"""Bundled models by name, as in timm: one place maps a CLI name to its code and its weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import ModelLoadError

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
TRAIN_SCRIPT = "scripts/train_models.py"


@dataclass(frozen=True)
class _Entry:
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    trained: bool  # False: an architecture for speed measurements only, no bundled weights


_MODELS: dict[str, _Entry] = {}


def register_model(name: str, input_shape: tuple[int, ...], trained: bool = True):
    """Decorator: register a no-argument factory under `name`, with its batch-1 NCHW input shape.

    `trained=False` registers an architecture without weights (speed benchmarks only).
    """
    def decorate(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = _Entry(factory, tuple(input_shape), trained)
        return factory
    return decorate


def list_models() -> list[str]:
    return sorted(_MODELS)


def _entry(name: str) -> _Entry:
    try:
        return _MODELS[name]
    except KeyError:
        raise ModelLoadError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def model_input_shape(name: str) -> tuple[int, ...]:
    """Batch-1 input shape (N, C, H, W) the model was trained on."""
    return _entry(name).input_shape


def has_weights(name: str) -> bool:
    """Whether the model ships trained weights (else only `pretrained=False` builds it)."""
    return _entry(name).trained


def checkpoint_path(name: str) -> Path:
    return CHECKPOINT_DIR / f"{name}.pt"


def create_model(name: str, pretrained: bool = True) -> nn.Module:
    """Build the model `name` in eval mode, with its bundled trained weights when `pretrained`."""
    entry = _entry(name)
    if pretrained and not entry.trained:
        raise ModelLoadError(f"model {name!r} has no trained weights (an architecture for speed "
                             f"benchmarks); build it with pretrained=False")
    model = entry.factory()
    if pretrained:
        path = checkpoint_path(name)
        if not path.is_file():
            raise ModelLoadError(
                f"no checkpoint for model {name!r} at {path}; train it with "
                f"`python {TRAIN_SCRIPT} --model {name}`")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:  # corrupt file or a state_dict of an older architecture
            raise ModelLoadError(f"cannot load checkpoint {path} into model {name!r}: {exc}") from exc
    return model.eval()
