"""ATCD (alternating tensor compose-decompose): train rank-1 CNNs by switching each `Rank1Conv2d`
between its composed 3-D form and its decomposed 1-D chain, on a schedule.

The composed phases train over-parametrised 3-D filters (better gradient flow); each switch back
projects them onto the rank-1 set (the best rank-T fit), and the decomposed phases train the
deployed chain itself, so training always ends in the form that is deployed. The fixed-structure
baseline trains the same chain, on the same phases and data, without ever composing.

Builders make the rank-1 counterparts of the project's three architectures: every k×k conv
becomes a `Rank1Conv2d`, and a MobileNet depthwise-separable block (k×k depthwise + 1×1 pointwise)
becomes one `Rank1Conv2d` (its chain is 1×1, k×1 depthwise, 1×k depthwise: the same budget).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import TrainingError
from ..models._fmnist import MobileNetFashion, ResNetFashion, VGGFashion
from ..nn import Rank1Conv2d
from ._loop import BatchStream, Dataset, TrainedModel, TrainSettings, finish, train_phases

COMPOSED, DECOMPOSED = "composed", "decomposed"


@dataclass(frozen=True)
class AlternationSchedule:
    """Switch form every `every` steps (or epochs); the last phase is always decomposed, so phases
    are assigned from the end: ..., composed, decomposed."""

    every: float = 1.0
    unit: str = "epochs"  # "steps" or "epochs"

    def __post_init__(self):
        if self.unit not in ("steps", "epochs"):
            raise TrainingError(f"alternation unit must be 'steps' or 'epochs', got {self.unit!r}")
        if not self.every > 0:
            raise TrainingError(f"alternation period must be > 0, got {self.every}")

    @classmethod
    def parse(cls, text: str) -> "AlternationSchedule":
        """'50' or '50steps' (steps), '1epoch' / '0.5epochs' (epochs)."""
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(steps?|epochs?)?\s*", str(text))
        if match is None:
            raise TrainingError(f"cannot read alternation schedule {text!r}; expected e.g. '50steps' or '1epoch'")
        unit = "epochs" if (match.group(2) or "steps").startswith("epoch") else "steps"
        return cls(float(match.group(1)), unit)

    def phases(self, total_steps: int, steps_per_epoch: int) -> list[tuple[str, int]]:
        """(form, steps) per phase, covering `total_steps`."""
        period = max(1, round(self.every * (steps_per_epoch if self.unit == "epochs" else 1)))
        lengths = [period] * (total_steps // period)
        if total_steps % period:
            lengths.append(total_steps % period)
        forms = [DECOMPOSED if (len(lengths) - 1 - i) % 2 == 0 else COMPOSED for i in range(len(lengths))]
        return list(zip(forms, lengths))


def rank1_layers(model: nn.Module) -> dict[str, Rank1Conv2d]:
    return {name: module for name, module in model.named_modules() if isinstance(module, Rank1Conv2d)}


def _rank1_from_conv(conv: nn.Conv2d, in_channels: int, out_channels: int, rank: int) -> Rank1Conv2d:
    return Rank1Conv2d(in_channels, out_channels, conv.kernel_size, rank, stride=conv.stride, padding=conv.padding,
                       dilation=conv.dilation, bias=conv.bias is not None)


def _separable_pair(block: nn.Module):
    """(depthwise conv, pointwise conv, pointwise BN) of a depthwise-separable block, or None."""
    children = list(block.children()) if isinstance(block, nn.Sequential) else []
    if len(children) != 2 or not all(isinstance(c, nn.Sequential) and len(c) == 3 for c in children):
        return None
    (depthwise, _, _), (pointwise, norm, _) = children
    if (isinstance(depthwise, nn.Conv2d) and isinstance(pointwise, nn.Conv2d) and depthwise.groups > 1
            and depthwise.groups == depthwise.in_channels and pointwise.kernel_size == (1, 1)
            and pointwise.groups == 1):
        return depthwise, pointwise, norm
    return None


def to_rank1(model: nn.Module, rank: int = 1) -> nn.Module:
    """Replace, in place, each k×k conv (groups 1) and each depthwise-separable block by a freshly
    initialised `Rank1Conv2d` of `rank` terms per filter (decomposed form); returns `model`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            pair = _separable_pair(child)
            if pair is not None:
                depthwise, pointwise, norm = pair
                layer = _rank1_from_conv(depthwise, pointwise.in_channels, pointwise.out_channels, rank)
                setattr(parent, name, nn.Sequential(layer, norm, nn.ReLU(inplace=True)))
            elif (isinstance(child, nn.Conv2d) and child.groups == 1 and min(child.kernel_size) > 1):
                setattr(parent, name, _rank1_from_conv(child, child.in_channels, child.out_channels, rank))
    return model


def rank1_vgg(widths=(32, 64, 128), rank: int = 1) -> nn.Module:
    """VGG-style rank-1 CNN: `VGGFashion` with every 3×3 conv a rank-1 conv."""
    return to_rank1(VGGFashion(tuple(widths)), rank)


def rank1_resnet(widths=(16, 32, 64), rank: int = 1) -> nn.Module:
    """ResNet-style rank-1 CNN: basic blocks of rank-1 3×3 convs (1×1 shortcuts stay dense)."""
    return to_rank1(ResNetFashion(tuple(widths)), rank)


def rank1_mobilenet(rank: int = 1) -> nn.Module:
    """MobileNet-style rank-1 CNN: each depthwise-separable block (and the stem) one rank-1 conv."""
    return to_rank1(MobileNetFashion(), rank)


@torch.no_grad()
def _probe(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    output = model(images)
    model.train(was_training)
    return output


def switch_form(model: nn.Module, form: str, probe: torch.Tensor | None = None) -> float | None:
    """Put every rank-1 layer into `form`; with a `probe` batch, return the largest change of the
    model's (eval-mode) output the switch caused, relative to the output's scale."""
    before = None if probe is None else _probe(model, probe)
    for name, layer in rank1_layers(model).items():
        layer.compose() if form == COMPOSED else layer.decompose(layer=name)
    if probe is None:
        return None
    after = _probe(model, probe)
    return float((after - before).abs().max() / before.abs().max().clamp_min(1e-12))


def train_atcd(model: nn.Module, data: Dataset, settings: TrainSettings,
               schedule: AlternationSchedule = AlternationSchedule(), fixed: bool = False) -> TrainedModel:
    """Train a rank-1 net by ATCD (or, `fixed`, only in the decomposed form on the same phases).

    ``history["switches"]`` lists each switch: (phase, form, relative output change on a probe
    batch); a switch to the composed form conserves the function exactly, one back to the
    decomposed form changes it by the rank-1 projection of what the composed phase learnt.
    """
    if not rank1_layers(model):
        raise TrainingError(f"{type(model).__name__} has no Rank1Conv2d layer; build it with to_rank1()")
    torch.manual_seed(settings.seed)
    stream = BatchStream(data.train_images, data.train_labels, settings.batch_size, settings.seed)
    phases = schedule.phases(settings.total_steps(stream), stream.steps_per_epoch)
    if fixed:
        phases = [(DECOMPOSED, steps) for _, steps in phases]
    probe = torch.from_numpy(data.train_images[:64].copy())
    switches = []

    def before_phase(index: int) -> None:
        form = phases[index][0]
        current = next(iter(rank1_layers(model).values())).mode
        if form != current:
            switches.append((index, form, switch_form(model, form, probe)))

    losses = train_phases(model, stream, [steps for _, steps in phases], settings.lr, settings.seed, before_phase)
    switch_form(model, DECOMPOSED)  # a no-op: the schedule ends decomposed
    return finish("atcd-fixed" if fixed else "atcd", model, data,
                  {"phases": phases, "switches": switches, "phase_losses": losses}, calibrate=True)
