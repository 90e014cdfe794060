"""Check a build against its PyTorch references; a build that does not match fails loudly.

Two comparisons, on the same inputs:

(a) against the *original* model: the approximation the user chose (rank policy) costs this much;
    judged by top-1 agreement against the user's threshold;
(b) against the *PyTorch low-rank model at the same ranks*: must agree to float32 rounding, which
    proves the compiler (import, rewrite, lowering, codegen) added no error of its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import VerificationError

# float32 rounding through a few dozen layers stays far below this; a real bug lands far above it.
COMPILER_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Agreement:
    """How close outputs are to a reference over a batch of inputs."""

    max_abs_error: float
    max_rel_error: float  # max |y - ref| / max |ref|, over the whole batch
    top1_agreement: float  # fraction of inputs whose arg-max class matches

    @classmethod
    def measure(cls, outputs: np.ndarray, reference: np.ndarray) -> "Agreement":
        outputs = np.asarray(outputs, dtype=np.float64)
        reference = np.asarray(reference, dtype=np.float64)
        if outputs.shape != reference.shape:
            raise VerificationError(f"output shape {outputs.shape} differs from reference {reference.shape}")
        if not np.all(np.isfinite(outputs)):
            raise VerificationError("the build produced NaN or Inf")
        error = np.abs(outputs - reference)
        scale = max(float(np.abs(reference).max()), np.finfo(np.float32).tiny)
        flat_out = outputs.reshape(len(outputs), -1)
        flat_ref = reference.reshape(len(reference), -1)
        top1 = float(np.mean(flat_out.argmax(axis=1) == flat_ref.argmax(axis=1)))
        return cls(float(error.max()), float(error.max() / scale), top1)


@dataclass(frozen=True)
class VerificationResult:
    """Outcome of both checks, as stored in the artifact manifest."""

    num_inputs: int
    vs_original: Agreement
    vs_lowrank_reference: Agreement
    min_top1_agreement: float
    compiler_tolerance: float = COMPILER_TOLERANCE
    device: str = "local"
    accuracy: float | None = None  # on the real labelled inputs, when there are any

    @property
    def compiler_exact(self) -> bool:
        return self.vs_lowrank_reference.max_rel_error <= self.compiler_tolerance

    @property
    def approximation_ok(self) -> bool:
        return self.vs_original.top1_agreement >= self.min_top1_agreement

    @property
    def passed(self) -> bool:
        return self.compiler_exact and self.approximation_ok

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed, "compiler_exact": self.compiler_exact,
                "approximation_ok": self.approximation_ok}

    def summary(self) -> str:
        original, lowrank = self.vs_original, self.vs_lowrank_reference
        lines = [
            f"verified on {self.num_inputs} inputs ({self.device})",
            f"  vs PyTorch low-rank reference: max rel err {lowrank.max_rel_error:.2e} "
            f"(limit {self.compiler_tolerance:.0e}) {'OK' if self.compiler_exact else 'FAIL'}",
            f"  vs original model: top-1 agreement {original.top1_agreement:.4f} "
            f"(min {self.min_top1_agreement}), max abs err {original.max_abs_error:.3e} "
            f"{'OK' if self.approximation_ok else 'FAIL'}",
        ]
        if self.accuracy is not None:
            lines.append(f"  accuracy on real labelled inputs: {self.accuracy:.4f}")
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if not self.compiler_exact:
            raise VerificationError(
                f"the build differs from the PyTorch low-rank reference by "
                f"{self.vs_lowrank_reference.max_rel_error:.3e} relative (limit {self.compiler_tolerance:.0e}): "
                "the compiler changed the numerics\n" + self.summary()
            )
        if not self.approximation_ok:
            raise VerificationError(
                f"top-1 agreement with the original model is {self.vs_original.top1_agreement:.4f}, "
                f"below the required {self.min_top1_agreement} (raise the rank or lower "
                "--min-top1-agreement)\n" + self.summary()
            )


def compare(outputs, original_outputs, lowrank_outputs, min_top1_agreement: float,
            device: str = "local", labels=None) -> VerificationResult:
    """Compare a build's outputs with both references; `labels` (for real inputs) adds accuracy."""
    accuracy = None
    if labels is not None and len(labels):
        labelled = np.asarray(outputs)[-len(labels):].reshape(len(labels), -1)
        accuracy = float(np.mean(labelled.argmax(axis=1) == np.asarray(labels)))
    return VerificationResult(
        num_inputs=len(outputs),
        vs_original=Agreement.measure(outputs, original_outputs),
        vs_lowrank_reference=Agreement.measure(outputs, lowrank_outputs),
        min_top1_agreement=min_top1_agreement,
        device=device,
        accuracy=accuracy,
    )
