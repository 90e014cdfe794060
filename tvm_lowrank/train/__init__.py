"""Training methods that produce low-rank models for the compiler (the seed papers' methods)."""

from .deeptwist import DeepTwist, recalibrate_batchnorm
