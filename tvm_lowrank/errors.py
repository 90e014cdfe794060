"""Exception types of tvm-lowrank.

Every error names what it is about (layer, shape, target, file) so that a user can act on it; the
CLI turns each into a one-line message and a non-zero exit code.
"""


class LowRankError(Exception):
    """Base of every error raised on purpose by tvm-lowrank."""


class DecompositionError(LowRankError, ValueError):
    """A weight cannot be decomposed as asked (bad shape, NaN/Inf, unsupported stride/groups)."""


class RankError(DecompositionError):
    """A requested rank is below 1 or above what the layer's shape allows."""


class RankPolicyError(LowRankError, ValueError):
    """A rank policy (CLI string, rank file, policy parameter) is malformed; names the text or file."""


class ModelLoadError(LowRankError):
    """A model file is missing, corrupt, or of a kind we do not read."""


class UnsupportedOpError(LowRankError):
    """The model uses an operator that the Relax frontend cannot import."""


class TargetError(LowRankError):
    """An unknown target name or a malformed target file."""


class VerificationError(LowRankError):
    """A build does not match its PyTorch reference within tolerance."""


class DeviceError(LowRankError):
    """A remote board cannot be reached, no board has the key, or the board died mid-run."""


class OpenCLRuntimeError(LowRankError):
    """The OpenCL runtime cannot be built or loaded (compiler, headers or library missing)."""


class TuningDatabaseError(LowRankError):
    """A tuning database (schedules/<target>/) is corrupt, truncated or holds another target's records;
    names the file (and line). The database is left as it is."""


class TrainingError(LowRankError, ValueError):
    """A training method cannot run as asked: unknown method or dataset, a model without the layers
    the method needs, a malformed schedule or output path; names the method, model or value."""


class OutdatedDatabaseWarning(UserWarning):
    """A tuning database holds records for a build's kernels but none of today's default schedules:
    it was tuned before they changed, and the record it applies may be the slower one."""
