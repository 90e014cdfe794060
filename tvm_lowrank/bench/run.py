"""`run_bench`: measure every cell of the grid, keep going past failures, write the outputs.

Cells already in the cache (same key: see `cache`) are not measured again. A cell that fails (a
compile error, a board lost, a verification that does not hold) is recorded with its reason and
the run goes on; the caller gets the failed cells to report (the CLI exits non-zero).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .cache import CellCache, cell_key, database_fingerprint, model_fingerprint
from .grid import Cell, expand_grid, resolve_model
from .measure import BenchSettings, database_dir, measure_cell
from .tables import add_speedups, machine_note, write_csv, write_json, write_markdown, KERNEL_COLUMNS

ARTIFACTS_DIR = "artifacts"


@dataclass
class BenchResult:
    rows: list[dict]
    kernels: list[dict]
    outputs: list[Path]
    measured: int = 0  # cells measured in this run (the rest came from the cache)
    failed: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        ok = len(self.rows) - len(self.failed)
        text = (f"{len(self.rows)} cells: {ok} ok ({self.measured} measured now, "
                f"{ok - self.measured} from the cache), {len(self.failed)} failed")
        for row in self.failed:
            text += f"\n  FAILED {row['model']} {row['method']} {row['rank']} {row['target']}: {row['error']}"
        return text


def _target_hash(name: str) -> str:
    from ..targets import load_target
    from .cache import _sha256_file

    return _sha256_file(load_target(name).source)


def _progress(stream, index: int, total: int, cell: Cell, status: str, seconds: float) -> None:
    print(f"[{index}/{total}] {cell.label}: {status} ({seconds:.1f} s)", file=stream, flush=True)


def _failure(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


def run_bench(models, methods, ranks, targets, out_dir, settings: BenchSettings | None = None,
              plot_emulated: bool = False, progress=sys.stderr) -> BenchResult:
    """Measure the grid models × methods × ranks × targets into `out_dir` (see module doc)."""
    settings = settings or BenchSettings()
    os.environ.setdefault("TVM_NUM_THREADS", str(settings.threads))  # read when TVM's pool starts
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = CellCache(out_dir)
    specs = {model: resolve_model(model, settings.dataset) for model in models}
    cells = expand_grid(models, methods, ranks, targets)
    fingerprints: dict[str, str] = {}
    rows, kernels, failed, measured, peaks = [], [], [], 0, {}
    for index, cell in enumerate(cells, start=1):
        start = time.perf_counter()
        row = {"model": cell.model, "method": cell.method, "rank": cell.rank, "target": cell.target}
        print(f"[{index}/{len(cells)}] {cell.label}: ...", file=progress, flush=True)
        try:
            from ..targets import load_target

            if cell.model not in fingerprints:
                fingerprints[cell.model] = model_fingerprint(specs[cell.model])
            target_db = database_dir(settings, load_target(cell.target))
            key = cell_key(cell, fingerprints[cell.model], _target_hash(cell.target),
                           database_fingerprint(target_db), settings.key_fields())
            row["key"] = key
            stored = cache.get(key)
            if stored is not None:
                row, cell_kernels = stored["row"], stored["kernels"]
                row["cached"] = True
            else:
                values, cell_kernels = measure_cell(cell, specs[cell.model], settings,
                                                    out_dir / ARTIFACTS_DIR / key, peaks)
                cell_kernels = [{**{k: row[k] for k in ("model", "method", "rank", "target")}, **kernel}
                                for kernel in cell_kernels]
                row.update(values, status="ok", error=None, cached=False,
                           cell_seconds=time.perf_counter() - start)
                cache.put(key, {"row": row, "kernels": cell_kernels})
                measured += 1
            status = "cached" if row["cached"] else "ok"
        except Exception as exc:  # noqa: BLE001 - one cell's failure must not end the run
            row.update(status="failed", error=_failure(exc), cached=False,
                       cell_seconds=time.perf_counter() - start)
            if os.environ.get("TVM_LOWRANK_BENCH_TRACEBACK"):
                traceback.print_exc(file=progress)
            cell_kernels, status = [], f"FAILED {row['error']}"
            failed.append(row)
        rows.append(row)
        kernels.extend(cell_kernels)
        _progress(progress, index, len(cells), cell, status, time.perf_counter() - start)
    add_speedups(rows)
    outputs = write_outputs(out_dir, rows, kernels, settings, plot_emulated)
    return BenchResult(rows, kernels, outputs, measured, failed)


def write_outputs(out_dir: Path, rows, kernels, settings: BenchSettings, plot_emulated: bool) -> list[Path]:
    from .plots import write_plots

    meta = {"machine": machine_note(), "threads": settings.threads, "repeat": settings.repeat,
            "accuracy_images": settings.accuracy_images, "database": settings.database,
            "emulated_in_speed_plots": plot_emulated}
    paths = [out_dir / "results.csv", out_dir / "results.json", out_dir / "results.md",
             out_dir / "kernels.csv"]
    write_csv(paths[0], rows)
    write_json(paths[1], rows, kernels, meta)
    write_markdown(paths[2], rows, meta)
    write_csv(paths[3], kernels, KERNEL_COLUMNS)
    note = f"{meta['machine']}; {settings.threads} threads" + ("" if plot_emulated else
                                                               "; emulated devices left out of speed plots")
    return paths + write_plots(out_dir, rows, kernels, note, plot_emulated)
