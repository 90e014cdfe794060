"""Training methods that produce low-rank models for the compiler (the seed papers' methods).

One module per method (`atcd`, `tai`, `cp_iterative`, `deeptwist`), sharing the data and phase
handling of `_loop` (which trains through `tvm_lowrank.models.train_classifier`); `runner` maps
method names to them for the CLI and the reproduction script.
"""

from ._loop import BatchStream, Cost, Dataset, TrainedModel, TrainSettings, load_dataset, model_cost
from .atcd import (AlternationSchedule, rank1_layers, rank1_mobilenet, rank1_resnet, rank1_vgg, switch_form,
                   to_rank1, train_atcd)
from .cp_iterative import train_cp_iterative
from .deeptwist import DeepTwist, recalibrate_batchnorm, train_deeptwist
from .runner import (FROM_SCRATCH, FROM_TRAINED, METHODS, MethodOptions, TrainRun, compile_trained, export_trained,
                     run_method, train_dense, train_model)
from .tai import decompose_then_finetune, policy_ranks, tai_scratch_model, train_tai_scratch

__all__ = [
    "AlternationSchedule", "BatchStream", "Cost", "Dataset", "DeepTwist", "FROM_SCRATCH", "FROM_TRAINED", "METHODS",
    "MethodOptions", "TrainRun", "TrainSettings", "TrainedModel", "compile_trained", "decompose_then_finetune",
    "export_trained", "load_dataset", "model_cost", "policy_ranks", "rank1_layers", "rank1_mobilenet",
    "rank1_resnet", "rank1_vgg", "recalibrate_batchnorm", "run_method", "switch_form", "tai_scratch_model",
    "to_rank1", "train_atcd", "train_cp_iterative", "train_deeptwist", "train_dense", "train_model",
    "train_tai_scratch",
]
