"""Cross-target benchmarks (`tvm-lowrank bench`): models × methods × rank policies × targets.

One module per job: `grid` (cells, model specs), `cache` (keys, finished cells on disk),
`measure` (one cell: compile, check, accuracy, latency), `baselines` (PyTorch eager and ONNX
Runtime in a child process), `kernels` (per-kernel times for the roofline), `stats`, `tables`
(CSV/JSON/Markdown), `plots` (PNG), `run` (the loop, progress and failures).
"""

from .grid import Cell, expand_grid, resolve_model
from .measure import BenchSettings
from .run import BenchResult, run_bench

__all__ = ["BenchResult", "BenchSettings", "Cell", "expand_grid", "resolve_model", "run_bench"]
