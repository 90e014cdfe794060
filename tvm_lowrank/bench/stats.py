"""Latency statistics: a median and a spread, because one number hides how noisy a device is."""

from __future__ import annotations

import numpy as np


def latency_stats(seconds, prefix: str) -> dict:
    """`<prefix>_ms_median`, `_p10`, `_p90`, `_iqr` (milliseconds) and `_samples` of `seconds`."""
    if seconds is None or len(seconds) == 0:
        return {f"{prefix}_ms_median": None, f"{prefix}_ms_p10": None, f"{prefix}_ms_p90": None,
                f"{prefix}_ms_iqr": None, f"{prefix}_samples": 0}
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p10, p25, p50, p75, p90 = np.percentile(ms, [10, 25, 50, 75, 90])
    return {f"{prefix}_ms_median": float(p50), f"{prefix}_ms_p10": float(p10),
            f"{prefix}_ms_p90": float(p90), f"{prefix}_ms_iqr": float(p75 - p25),
            f"{prefix}_samples": int(len(ms))}


def runs_per_sample(seconds_per_run: float, sample_seconds: float, most: int = 1000) -> int:
    """How many runs one timing sample averages so that it lasts about `sample_seconds`."""
    return max(1, min(most, int(sample_seconds / max(seconds_per_run, 1e-7))))
